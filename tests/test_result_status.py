"""The three result states and the borderline spot, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from important_variables import CONFIG
from result_status import BORDERLINE, CLEAN, FINDING, borderline_margin, borderline_spot, result_status


@pytest.mark.parametrize(("findings", "top", "threshold", "margin", "expected"), [
    ([object()], 0.95, 0.8, 0.15, FINDING),
    (2, 0.81, 0.8, 0.0, FINDING),
    ([], 0.796, 0.8, 0.15, BORDERLINE),  # the near miss of issue 10: not an all-clear
    (0, 0.65, 0.8, 0.15, BORDERLINE),  # exactly threshold - margin counts as borderline
    (0, 0.649, 0.8, 0.15, CLEAN),
    (0, 0.79, 0.8, 0.0, CLEAN),  # margin 0: no borderline state
    (0, 0.2, 0.5, -1.0, CLEAN),  # a negative margin is treated as 0
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
