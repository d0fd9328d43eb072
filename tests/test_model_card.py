"""model_card: the named metrics table, the verdict and the reliability check, from hand-made numbers."""

from __future__ import annotations

import pytest

from model_card import ECE_LABEL, named_metrics_rows, reliability_check, verdict

METRICS = {
    "split": "test",
    "segmentation": {"dice_mean": 0.138222, "iou_mean": 0.0896, "n_images": 61},
    "localization": {"ap50": 0.001357, "ap25": 0.05562, "n_annotated_boxes": 67},
    "image_level": {"roc_auc": 0.696979, "sensitivity": 0.590164, "specificity": 0.691824,
                    "false_findings_per_negative_image": 0.349057, "n_fractured": 61, "n_negative": 318},
    "per_image": [
        {"fractured": True, "fracture_score": 0.9}, {"fractured": True, "fracture_score": 0.9},
        {"fractured": False, "fracture_score": 0.9}, {"fractured": False, "fracture_score": 0.1},
    ],
}


def test_named_metrics_rows_with_n():
    rows = named_metrics_rows({"U-Net": METRICS, "Other": None})
    by = {r["metric"]: r for r in rows}
    assert by["Dice (mean per fractured image)"] == {"metric": "Dice (mean per fractured image)", "U-Net": "0.138",
                                                     "Other": "–", "n": "61 fractured images"}
    assert by["ROC-AUC (fracture or not)"]["n"] == "379 images"  # 61 + 318
    assert by["Box AP@50"]["U-Net"] == "0.001" and by["Box AP@50"]["n"] == "67 annotated fractures"
    assert by[ECE_LABEL]["U-Net"] == "not calibrated"
    assert len(rows) == 9


def test_verdict_is_written_from_the_numbers():
    text = verdict(METRICS)
    assert "weak (ROC-AUC 0.70 on 379 test images)" in text
    assert "6 in 10 fractured images" in text and "3 in 10 fracture-free" in text  # 0.59, 1 - 0.69
    assert "rarely overlap" in text and "mean Dice 0.14" in text and "rarely match" in text
    assert "hint to look again" in text
    good = {**METRICS, "segmentation": {"dice_mean": 0.45, "n_images": 61},
            "localization": {"ap50": 0.5, "n_annotated_boxes": 67},
            "image_level": {**METRICS["image_level"], "roc_auc": 0.91}}
    assert "strong (ROC-AUC 0.91" in verdict(good) and "mostly overlap" in verdict(good)
    assert "useful second look" in verdict(good)
    assert verdict(None).startswith("Not evaluated yet")


def test_reliability_check_calibrated_raw_and_stored():
    # Raw: bin 9 holds 3 images at 0.9 with 2 fractured (|0.9 - 2/3| x 3/4), bin 1 one at 0.1, none fractured
    # (0.1 x 1/4): ECE = 0.175 + 0.025 = 0.2.
    raw = reliability_check(METRICS, {})
    assert raw["calibrated"] is False and raw["ece"] == pytest.approx(0.2) and raw["n"] == 4
    # A calibration mapping 0.9 → 2/3 and 0.1 → 0 makes it perfect on these images.
    cal = {"x": [0.1, 0.9], "y": [0.0, 2 / 3]}
    fitted = reliability_check(METRICS, {"calibration": cal})
    assert fitted["calibrated"] is True and fitted["ece"] == pytest.approx(0.0, abs=1e-6)
    assert fitted["ece_uncalibrated"] == pytest.approx(0.2) and fitted["source"] == "test split, evaluated now"
    # Without per-image scores of the named image score, the check stored with the calibration is used.
    stored = {**cal, "reliability": {"split": "valid", "in_sample": True, "n": 400, "ece": 0.03, "bins": []}}
    check = reliability_check(METRICS, {"calibration": stored, "image_score": "topk_mean"})
    assert check["ece"] == 0.03 and "in-sample" in check["source"]
    assert reliability_check(None, {}) is None
