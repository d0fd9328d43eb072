"""The three result states (finding, borderline, no finding: never "clean") and the borderline spot, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from important_variables import CONFIG
from inference.reading import BORDERLINE, FINDING, NO_FINDING, STATUSES, borderline_margin, borderline_spot, result_status


@pytest.mark.parametrize(("findings", "top", "threshold", "margin", "expected"), [
    ([object()], 0.95, 0.8, 0.15, FINDING),
    (2, 0.81, 0.8, 0.0, FINDING),
    ([], 0.796, 0.8, 0.15, BORDERLINE),  # a near miss: not an all-clear
    (0, 0.65, 0.8, 0.15, BORDERLINE),  # exactly threshold - margin counts as borderline
    (0, 0.649, 0.8, 0.15, NO_FINDING),
    (0, 0.79, 0.8, 0.0, NO_FINDING),  # margin 0: no borderline state
    (0, 0.2, 0.5, -1.0, NO_FINDING),  # a negative margin is treated as 0
])
def test_result_status(findings, top, threshold, margin, expected):
    assert result_status(findings, top, threshold, margin) == expected


def test_margin_from_manifest_entry_or_default():
    assert borderline_margin({"borderline_margin": 0.1}) == 0.1
    assert borderline_margin({"borderline_margin": 0}) == 0.0
    for entry in (None, {}, {"borderline_margin": "x"}, {"borderline_margin": 1.5}, {"borderline_margin": -0.1}):
        assert borderline_margin(entry) == CONFIG.default_borderline_margin


def test_borderline_spot_is_the_region_of_the_maximum():
    prob = np.zeros((20, 30), np.float32)
    prob[2:5, 3:8] = 0.7  # the highest region
    prob[3, 4] = 0.76
    prob[10:15, 20:25] = 0.66  # another near region, lower
    assert borderline_spot(prob, 0.8, 0.15) == (3, 2, 8, 5)
    assert borderline_spot(prob, 0.8, 0.01) is None  # 0.76 < 0.79
    assert borderline_spot(np.zeros((0, 0), np.float32), 0.5, 0.1) is None


def _cal():
    # Hand-made curve: score 0.5 → 10 %, 0.9 → 60 %, 1.0 → 80 %.
    return {"method": "isotonic", "x": [0.5, 0.9, 1.0], "y": [0.1, 0.6, 0.8], "n": 10, "fitted_on": "valid"}


def test_likelihood_uses_the_named_image_score_and_the_calibration():
    from inference.reading import likelihood

    prob = np.zeros((10, 10), np.float32)
    prob[0, 0] = 0.9
    prob[5, 5] = 0.7
    assert likelihood(prob, [0.9], {"calibration": _cal()}) == pytest.approx(0.6)  # max_prob by default
    # best_finding: 0.7 → 0.1 + (0.2 / 0.4) x 0.5 = 0.35
    assert likelihood(prob, [0.7], {"calibration": _cal(), "image_score": "best_finding"}) == pytest.approx(0.35)
    # topk_mean over the 2 highest pixels: (0.9 + 0.7) / 2 = 0.8 → 0.1 + 0.75 x 0.5 = 0.475
    entry = {"calibration": _cal(), "image_score": "topk_mean", "findings": {"topk_px": 2}}
    assert likelihood(prob, [], entry) == pytest.approx(0.475)
    assert likelihood(prob, [0.9], {}) is None  # not calibrated
    assert likelihood(prob, [0.9], {"calibration": {"x": [1, 0], "y": [0, 1]}}) is None  # malformed
    assert likelihood(prob, [0.9], {"calibration": _cal(), "image_score": "mystery"}) is None


def test_status_fields_for_json():
    from inference.reading import status_fields
    from prediction import result_from_prob

    prob = np.zeros((30, 30), np.float32)
    prob[10:14, 10:14] = 0.72
    near = result_from_prob(prob, 30, 30, 0.8)
    assert status_fields(near, None) == {"status": BORDERLINE, "borderline_margin": CONFIG.default_borderline_margin,
                                         "review_box": [10, 10, 14, 14], "fracture_likelihood": None}
    far = status_fields(near, {"borderline_margin": 0.05})
    assert far["status"] == NO_FINDING and far["review_box"] is None
    found = near.with_threshold(0.7)
    fields = status_fields(found, {"calibration": _cal(), "borderline_margin": 0.1})
    assert fields["status"] == FINDING and fields["fracture_likelihood"] == pytest.approx(0.1 + 0.22 / 0.4 * 0.5, abs=1e-4)


def test_no_state_is_called_clean():
    assert NO_FINDING == "no_finding" and "clean" not in STATUSES
