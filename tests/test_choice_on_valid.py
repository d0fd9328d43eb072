"""What --choose-threshold picks besides the threshold: borderline margin, image score, calibration."""

from types import SimpleNamespace

import numpy as np
import pytest

from evaluation.cases import Case
from evaluation.thresholds import (
    MARGINS,
    choice_record,
    choose_image_score,
    choose_margin,
    fit_score_calibration,
    operating_points,
)
from inference.results import PredictionResult

pytestmark = pytest.mark.slow  # runs evaluations on valid


def _case(fractured: bool, peak: float) -> Case:
    prob = np.zeros((32, 32), np.float32)
    prob[10:16, 10:16] = peak
    rec = SimpleNamespace(fractured=fractured, image_id="x", instances=(), body_part="hand")
    return Case(rec, PredictionResult.from_prob(prob, 32, 32, 0.8))


def test_margin_is_the_widest_band_within_the_negative_budget():
    # 10 negatives: one scores 0.78 (inside every band), one 0.62 (inside from margin 0.20), the rest 0.1.
    cases = [_case(False, 0.78), _case(False, 0.62)] + [_case(False, 0.1) for _ in range(8)] + [_case(True, 0.7)]
    got = choose_margin(cases, 0.8, max_negative_share=0.10)
    assert got["chosen"] == pytest.approx(0.15)  # 0.20 would flag 2 of 10 negatives
    row = {r["margin"]: r for r in got["sweep"]}
    assert row[0.15]["negatives_borderline"] == pytest.approx(0.1) and row[0.2]["negatives_borderline"] == pytest.approx(0.2)
    assert row[0.15]["missed_fractures_flagged"] == pytest.approx(1.0) and row[0.05]["missed_fractures_flagged"] == 0.0
    assert [r["margin"] for r in got["sweep"]] == list(MARGINS)
    # No margin fits: no borderline state at all.
    assert choose_margin([_case(False, 0.79), _case(True, 0.5)], 0.8, max_negative_share=0.10)["chosen"] == 0.0


def test_image_score_and_calibration():
    cases = [_case(True, p) for p in (0.9, 0.85, 0.7)] + [_case(False, p) for p in (0.3, 0.75, 0.2)]
    pick = choose_image_score(cases, 0.8)
    assert set(pick["roc_auc"]) == {"max_prob", "topk_mean", "best_finding"}
    assert pick["roc_auc"]["max_prob"] == pytest.approx(8 / 9)
    # best_finding is taken at the given threshold: at 0.8 only the 0.9 and 0.85 images have a finding.
    assert pick["roc_auc"]["best_finding"] == pytest.approx((3 + 3 + 1.5) / 9)
    cal = fit_score_calibration(cases, "max_prob", 0.8)
    assert cal["method"] == "isotonic" and cal["n"] == 6 and cal["fitted_on"] == "valid"
    assert fit_score_calibration([_case(True, 0.9)], "max_prob", 0.8) is None


def test_choice_record_carries_the_new_fields():
    report = {"threshold_source": "chosen", "split": "valid", "model_sha256": "ab", "date": "d",
              "counts": {"fractured_images": 1, "negative_images": 1},
              "threshold_choice": {"chosen": 0.6, "value": 0.3, "margin": {"chosen": 0.1, "definition": "x", "max_negative_share": 0.1},
                                   "image_score": {"chosen": "topk_mean"}, "calibration": {"method": "isotonic", "x": [0, 1], "y": [0, 1]}}}
    rec = choice_record(report)
    assert rec["threshold"] == 0.6 and rec["borderline_margin"] == 0.1 and rec["image_score"] == "topk_mean"
    assert rec["calibration"]["method"] == "isotonic"


def test_operating_points_are_the_sweep_in_readable_form():
    # Two thresholds, by hand: at 0.5, 3 TP, 5 FP, 1 FN; at 0.9, 1 TP, 1 FP, 3 FN.
    sweep = [
        {"threshold": 0.9, "tp": 1, "fp": 1, "fn": 3, "f1": 2 / 6, "sensitivity": 0.25, "false_findings_per_negative_image": 0.1},
        {"threshold": 0.5, "tp": 3, "fp": 5, "fn": 1, "f1": 6 / 12, "sensitivity": 0.75, "false_findings_per_negative_image": 0.4},
    ]
    report = {"split": "valid", "counts": {"fractured_images": 4, "negative_images": 10}, "threshold_choice": {"sweep": sweep}}
    got = operating_points(report)
    assert got["split"] == "valid" and got["fractured_images"] == 4 and got["negative_images"] == 10
    low, high = got["rows"]  # ascending
    assert low["threshold"] == 0.5 and high["threshold"] == 0.9
    assert low["box_recall25"] == pytest.approx(3 / 4) and low["box_precision25"] == pytest.approx(3 / 8)
    assert high["box_recall25"] == pytest.approx(1 / 4) and high["box_precision25"] == pytest.approx(1 / 2)
    assert low["false_findings_per_negative"] == 0.4 and high["sensitivity"] == 0.25 and low["f1"] == pytest.approx(0.5)
    # Written into the manifest record; absent without a sweep.
    rec = choice_record({**report, "threshold_source": "chosen", "model_sha256": "ab", "date": "d",
                         "threshold_choice": {"sweep": sweep, "chosen": 0.9, "value": 2 / 6}})
    assert [r["threshold"] for r in rec["operating_points"]["rows"]] == [0.5, 0.9]
    assert operating_points({"threshold_choice": None}) is None
    # No finding and no annotated box at a threshold: undefined, written as null.
    empty = [{"threshold": 0.99, "tp": 0, "fp": 0, "fn": 0, "f1": float("nan"), "sensitivity": 0.0,
              "false_findings_per_negative_image": 0.0}]
    rec = choice_record({**report, "threshold_source": "chosen", "model_sha256": "ab", "date": "d",
                         "threshold_choice": {"sweep": empty, "chosen": 0.99, "value": 0.1}})
    assert rec["operating_points"]["rows"][0]["box_recall25"] is None
