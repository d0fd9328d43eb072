"""model_card: the named metrics table, the verdict and the reliability check, from hand-made numbers."""

from __future__ import annotations

import pytest

from inference.model_card import (
    ECE_LABEL,
    miss_note,
    miss_notes_by_source,
    named_metrics_rows,
    operating_point_at,
    operating_points_table,
    public_text,
    reliability_by_source,
    reliability_check,
    threshold_tradeoff,
    training_facts,
    verdict,
)

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
    with_iv = {**METRICS, "intervals": {"metrics": {"dice_mean": {"value": 0.138222, "low": 0.09, "high": 0.19},
                                                    "roc_auc": {"value": 0.697, "low": None, "high": None}}}}
    by = {r["metric"]: r for r in named_metrics_rows({"U-Net": with_iv})}
    assert by["Dice (mean per fractured image)"]["U-Net"] == "0.138 (0.090–0.190)"
    assert by["ROC-AUC (fracture or not)"]["U-Net"] == "0.697"  # no bounds: the value alone
    assert by["Box AP@50"]["U-Net"] == "0.001"  # AP has no interval


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
    assert fitted["ece_uncalibrated"] == pytest.approx(0.2) and fitted["source"] == "test split"
    # Without per-image scores of the named image score, the check stored with the calibration is used.
    stored = {**cal, "reliability": {"split": "valid", "in_sample": True, "n": 400, "ece": 0.03, "bins": []}}
    check = reliability_check(METRICS, {"calibration": stored, "image_score": "topk_mean"})
    assert check["ece"] == 0.03 and "in-sample" in check["source"]
    assert reliability_check(None, {}) is None


ENTRY = {"threshold": 0.9, "operating_points": {"split": "valid", "fractured_images": 82, "negative_images": 318, "rows": [
    {"threshold": 0.9, "sensitivity": 0.549, "false_findings_per_negative": 0.123, "box_recall25": 0.374, "f1": 0.366},
    {"threshold": 0.8, "sensitivity": 0.744, "false_findings_per_negative": 0.305, "box_recall25": None, "f1": 0.289},
    {"threshold": 0.7, "sensitivity": None, "false_findings_per_negative": 0.5},  # incomplete: left out
]}}


def test_threshold_tradeoff_reads_the_nearest_recorded_row():
    assert operating_point_at(ENTRY, 0.81)["threshold"] == 0.8
    assert operating_point_at(ENTRY, 0.85)["threshold"] == 0.9  # tie: the higher threshold
    assert operating_point_at(ENTRY, 0.70)["threshold"] == 0.8  # the incomplete 0.70 row is not used
    text = threshold_tradeoff(ENTRY, 0.9)
    assert text == ("On the 400 validation X-rays at 0.90: 55% of those with a fracture got a finding, "
                    "0.12 false findings per X-ray without one; 37% of the annotated fractures were boxed.")
    text = threshold_tradeoff(ENTRY, 0.83)
    assert "at 0.80 (the nearest tested threshold)" in text and "74%" in text and "boxed" not in text
    for entry in ({}, None, {"operating_points": {"rows": "x"}}, {"operating_points": None}):
        assert threshold_tradeoff(entry, 0.5) is None and operating_points_table(entry) == []


def test_operating_points_table_marks_the_default():
    rows = operating_points_table(ENTRY, ENTRY["threshold"])
    assert [r["threshold"] for r in rows] == ["0.80", "0.90 (default)"]
    assert rows[0]["annotated fractures boxed (IoU ≥ 0.25)"] == "–" and rows[1]["findings F1"] == "0.366"


def test_miss_note_says_how_often_the_threshold_stays_silent_on_a_fracture():
    assert miss_note(ENTRY, 0.9) == ("At 0.90 this model left 45% of the fractured validation X-rays without any "
                                     "finding: no mark does not rule a fracture out.")
    assert "At 0.80" in miss_note(ENTRY, 0.78) and "26%" in miss_note(ENTRY, 0.78)
    assert miss_note({}, 0.9) is None and miss_note(None, 0.9) is None


def test_reliability_by_source_only_with_several_sources():
    cal = {"x": [0.0, 1.0], "y": [0.0, 1.0]}
    assert reliability_by_source(METRICS, {"calibration": cal}) == []  # one source (none named): nothing per source
    per_image = METRICS["per_image"] + [
        {"fractured": True, "fracture_score": 0.1, "source": "Other"}, {"fractured": True, "fracture_score": 0.2, "source": "Other"},
        {"fractured": False, "fracture_score": 0.1, "source": "Other"}, {"fractured": True, "fracture_score": 0.3, "source": "Only"}]
    rows = {r["source"]: r for r in reliability_by_source({"per_image": per_image}, {"calibration": cal})}
    assert set(rows) == {"FracAtlas", "Other", "Only"}
    assert rows["FracAtlas"]["ece"] == pytest.approx(0.2) and rows["FracAtlas"]["holds"] is False  # the raw ECE above
    # Other: bin 1 holds 0.1 (fractured) and 0.1 (not) → |0.1 - 0.5| x 2/3; bin 2 holds 0.2 → |0.2 - 1| x 1/3.
    assert rows["Other"]["ece"] == pytest.approx(0.4 * 2 / 3 + 0.8 / 3, abs=1e-3) and rows["Other"]["n_fractured"] == 2
    assert rows["Only"]["ece"] is None and rows["Only"]["holds"] is False  # one class only: not checkable
    assert reliability_by_source({"per_image": per_image}, {}) == []  # not calibrated
    assert reliability_by_source(None, {"calibration": cal}) == []


def test_miss_notes_by_source_from_the_operating_points():
    entry = {"operating_points": {**ENTRY["operating_points"], "by_source": {"Other": {"rows": [
        {"threshold": 0.9, "sensitivity": 0.25, "false_findings_per_negative": 0.3}]}, "Broken": "x"}}}
    assert miss_notes_by_source(entry, 0.88) == ["Other: 75% of the fractured X-rays left without a finding at 0.90"]
    assert miss_notes_by_source(ENTRY, 0.9) == [] and miss_notes_by_source(None, 0.9) == []


def test_public_text_drops_machine_paths_and_keeps_the_repositorys():
    text = ("python train.py --init-from .scratch/unet.weights.h5 --data /home/someone/data/FracAtlas "
            "--checkpoint-dir checkpoints/gpu/phase1 (7 min, checkpoints/gpu/phase1/half_unet)")
    assert public_text(text) == ("python train.py --init-from unet.weights.h5 --data FracAtlas "
                                 "--checkpoint-dir checkpoints/gpu/phase1 (7 min, checkpoints/gpu/phase1/half_unet)")


def test_training_facts_in_words_without_internal_keys_or_paths():
    entry = {"params": 1941122, "epochs": 4, "samples_seen": 76800, "training_minutes": 3.4, "threshold": 0.9,
             "threshold_source": "chosen on valid by evaluate.py --choose-threshold (findings_f1_iou25)",
             "borderline_margin": 0.0, "image_score": "topk_mean",
             "training_command": "python train.py --model unet --init-from /abs/dir/.scratch/unet.weights.h5 --epochs 500"}
    facts = dict(training_facts(entry))
    assert facts["Parameters"] == "1,941,122" and facts["Minutes of the last run"] == "3.4"
    assert facts["Epochs of the last run (up to the shipped snapshot)"] == "4"
    assert facts["Started from"] == "earlier weights of the same model (unet.weights.h5)"  # not "from scratch"
    assert facts["Borderline band below the threshold"] == "none (no borderline state)"
    text = " ".join(facts.values())
    for internal in ("topk_mean", "findings_f1_iou25", "params", "/abs", ".scratch", "evaluated now"):
        assert internal not in text
    assert dict(training_facts({}))["Started from"] == "–"
    sha = "ab" * 32
    bf16 = {"model_sha256": sha, "allowed": True, "max_delta": 0.002, "native_bf16": ["avx512_bf16"]}
    assert "float32" in dict(training_facts({"sha256": sha}))["bfloat16 inference"]
    assert "used on CPUs" in dict(training_facts({"sha256": sha, "bf16_inference": bf16}))["bfloat16 inference"]
    assert "not allowed" in dict(training_facts({"sha256": sha, "bf16_inference": {**bf16, "allowed": False}}))["bfloat16 inference"]
    # The card applies prediction's own rule and names its reason: "allowed" over the tolerance is not used either.
    assert "changed the valid metrics by 0.02" in dict(training_facts({"sha256": sha, "bf16_inference": {**bf16, "max_delta": 0.02}}))["bfloat16 inference"]
    assert "not checked" in dict(training_facts({"sha256": "cd" * 32, "bf16_inference": bf16}))["bfloat16 inference"]
    # A check run with emulated bf16 says nothing about the native kernels: not used, and the card says so.
    words = dict(training_facts({"sha256": sha, "bf16_inference": {**bf16, "native_bf16": []}}))["bfloat16 inference"]
    assert words.startswith("not used, runs in float32") and "emulated" in words
    assert dict(training_facts({"training_command": "python train.py --model unet"}))["Started from"] == "random weights"
    ensemble = dict(training_facts({"members": {"encoder_decoder": {"weight": 0.25, "sha256": sha},
                                                "lite0_unet": {"weight": 0.75, "sha256": sha}}}))
    assert ensemble["Members (fracture maps averaged)"] == "Lite0-UNet (ImageNet encoder) x 0.75 + Simple encoder-decoder x 0.25"
    assert ensemble["Started from"] == "its members' shipped weights (no training of its own)"
    assert dict(training_facts(entry))["Members (fracture maps averaged)"] == "–"
