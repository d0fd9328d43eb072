"""reading: the words of a result (no all-clear, the likelihood floor, what it is calibrated on,
the "unlike the training images" warning) and the one JSON record of app and CLI, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from inference.ood import OodReading
from inference.reading import (
    BORDERLINE,
    FINDING,
    NO_FINDING,
    headline,
    likelihood_sentence,
    likelihood_value,
    miss_sentence,
    ood_sentence,
    reading_parts,
    reading_text,
    result_record,
    status_fields,
)
from prediction import result_from_prob

CAL = {"method": "isotonic", "x": [0.0, 0.5, 1.0], "y": [0.0, 0.3, 1.0], "n": 400, "n_positive": 82, "fitted_on": "valid"}
POINTS = {"split": "valid", "fractured_images": 82, "negative_images": 318, "rows": [
    {"threshold": 0.9, "sensitivity": 0.55, "false_findings_per_negative": 0.12}]}


@pytest.mark.parametrize(("lk", "text"), [
    (0.0, "< 5 %"), (0.0499, "< 5 %"), (0.05, "≈ 5 %"), (0.3, "≈ 30 %"), (0.95, "≈ 95 %"), (0.951, "> 95 %"), (1.0, "> 95 %"),
])
def test_likelihood_is_never_shown_as_0_or_100(lk, text):
    assert likelihood_value(lk) == text


def test_likelihood_says_what_it_is_calibrated_on_and_where_it_does_not_hold():
    text = likelihood_sentence(0.0, {"calibration": CAL})
    assert text.startswith("Fracture likelihood < 5 % (calibrated on FracAtlas validation X-rays, 20% of which hold a fracture")
    assert "not checked on X-rays from other sources" in text and "0 %" not in text
    failing = [{"source": "FracAtlas", "ece": 0.04, "holds": True}, {"source": "OtherHospital", "ece": 0.21, "holds": False}]
    text = likelihood_sentence(0.3, {"calibration": CAL}, failing)
    assert "does not hold on X-rays from OtherHospital (calibration error 0.21)" in text and "FracAtlas (" not in text
    held = likelihood_sentence(0.3, {"calibration": CAL}, failing[:1] + [{"source": "B", "ece": 0.05, "holds": True}])
    assert "does not hold" not in held and "not checked" not in held
    assert "not calibrated" in likelihood_sentence(None, {})


def test_no_finding_is_never_an_all_clear():
    text = headline(NO_FINDING, 0, 0.9, 0.412, 0.05)
    assert text == "No finding at threshold 0.90 (highest score anywhere 0.412)."
    miss = miss_sentence({"operating_points": POINTS}, 0.9)
    assert "left 45% of the fractured validation X-rays without any finding" in miss
    assert "not recorded" in miss_sentence({}, 0.9) and "does not rule a fracture out" in miss_sentence({}, 0.9)
    by_source = {**POINTS, "by_source": {"OtherHospital": {"rows": [
        {"threshold": 0.9, "sensitivity": 0.38, "false_findings_per_negative": 0.2}]}}}
    assert "OtherHospital: 62% of the fractured X-rays left without a finding at 0.90" in miss_sentence(
        {"operating_points": by_source}, 0.9)
    for status in (FINDING, BORDERLINE, NO_FINDING):
        words = headline(status, 1, 0.9, 0.88, 0.05).lower()
        assert "no fracture" not in words and "clean" not in words


def test_ood_sentence_only_when_flagged():
    entry = {"ood": {"false_alarm_target": 0.05}}
    assert ood_sentence(None, entry) is None and ood_sentence(OodReading(1.1, 2.0), entry) is None
    text = ood_sentence(OodReading(3.456, 2.0), entry)
    assert text.startswith("Unlike the training images:") and "distance 3.46" in text and "above 2.00" in text
    assert "5% of the FracAtlas validation X-rays exceed" in text and "Any marks are shown as found" in text
    # A check fitted and set on two sources (as tools/fit_ood.py records them) names both.
    two = {"ood": {"false_alarm_target": 0.05, "sources": ["FracAtlas", "BoneFractureYolo8"],
                   "fitted_on": "FracAtlas train split: 196 images at random; BoneFractureYolo8 train part: 150 originals",
                   "threshold_on": "FracAtlas valid split: 400 images; BoneFractureYolo8 valid part: 83 images"}}
    text = ood_sentence(OodReading(3.456, 2.0), two)
    assert "those of the FracAtlas and BoneFractureYolo8 training X-rays" in text
    assert "5% of the FracAtlas and BoneFractureYolo8 validation X-rays exceed" in text


def _result(peak: float, threshold: float = 0.9, ood=None):
    prob = np.full((40, 40), 0.01, np.float32)
    prob[10:20, 10:20] = peak
    r = result_from_prob(prob, 40, 40, threshold)
    r.ood = ood
    return r


def test_record_keys_are_the_same_for_every_state_and_for_an_error():
    entry = {"calibration": CAL, "borderline_margin": 0.1, "operating_points": POINTS}
    records = [result_record(_result(p), "x.png", "unet", entry) for p in (0.95, 0.85, 0.3)]
    records.append(result_record(None, "bad.png", "unet", entry, error="bad.png: truncated"))
    assert len({tuple(r) for r in records}) == 1
    assert [r["status"] for r in records] == [FINDING, BORDERLINE, NO_FINDING, None]
    found, near, none, bad = records
    assert found["findings"][0]["peak"] == pytest.approx(0.95) and found["review_box"] is None
    assert near["review_box"] == [10, 10, 20, 20]
    assert none["reading"].startswith("No finding at threshold 0.90") and "without any finding" in none["reading"]
    assert "No fracture" not in " ".join(r["reading"] or "" for r in records)
    assert bad["reading"] is None and bad["error"] == "bad.png: truncated"
    assert found["image_score_name"] == "max_prob" and found["image_score"] == pytest.approx(0.95)


def test_record_carries_the_ood_flag_and_never_drops_a_finding():
    flagged = _result(0.95, ood=OodReading(4.0, 2.0))
    rec = result_record(flagged, "photo.png", "unet", {"ood": {"false_alarm_target": 0.05}})
    assert rec["unlike_training_images"] is True and rec["ood_distance"] == 4.0 and rec["ood_threshold"] == 2.0
    assert rec["status"] == FINDING and len(rec["findings"]) == 1
    assert rec["reading"].startswith("Unlike the training images")
    plain = result_record(_result(0.95), "x.png", "unet", {})
    assert plain["unlike_training_images"] is None and plain["ood_distance"] is None


def test_reading_parts_follow_the_threshold_given():
    r = _result(0.85)
    entry = {"borderline_margin": 0.1}
    parts = reading_parts(r, status_fields(r, entry, 0.99), entry, 0.99)
    assert parts["headline"].startswith("No finding at threshold 0.99") and parts["miss"]
    assert reading_text(parts).index("No finding") < reading_text(parts).index("Fracture likelihood")
