"""The drawing side of a result: heatmap transparency and legend, outline-only marking, the review box."""

from __future__ import annotations

import numpy as np

from prediction import HEAT_FLOOR, HEAT_FULL, REVIEW_COLOR, heat_alpha, heatmap_legend, render_overlay, result_from_prob


def _scene():
    pixels = np.full((120, 160), 100, np.uint8)
    prob = np.zeros((120, 160), np.float32)
    prob[40:80, 60:100] = 0.9  # one finding
    return pixels, result_from_prob(prob, 120, 160, 0.5)


def test_heat_alpha_ramp():
    a = heat_alpha(np.array([0.0, HEAT_FLOOR, (HEAT_FLOOR + HEAT_FULL) / 2, HEAT_FULL, 1.0], np.float32), 0.6)
    np.testing.assert_allclose(a, [0.0, 0.0, 0.3, 0.6, 0.6], atol=1e-6)


def test_heatmap_leaves_low_scores_untouched():
    pixels, result = _scene()
    out = render_overlay(pixels, result, opacity=0.8, show_heatmap=True, outline_only=True)
    assert np.all(out[:30, :30] == 100)  # score 0: the X-ray as it is, not washed out
    inside = out[50:70, 70:90].astype(int)
    assert np.abs(inside - 100).max() > 40  # a high score is coloured


def test_outline_only_keeps_the_inside_visible():
    pixels, result = _scene()
    filled = render_overlay(pixels, result, opacity=0.5)
    outline = render_overlay(pixels, result, opacity=0.5, outline_only=True)
    core = (slice(50, 70), slice(70, 90))  # inside the region, away from outline, box and label
    assert np.all(outline[core] == 100) and not np.all(filled[core] == 100)
    assert (outline != 100).any()  # the outline and box are still drawn


def test_review_box_is_dashed_amber_and_only_when_asked():
    pixels = np.full((120, 160), 100, np.uint8)
    result = result_from_prob(np.zeros((120, 160), np.float32), 120, 160, 0.5)
    plain = render_overlay(pixels, result)
    marked = render_overlay(pixels, result, review_box=(60, 40, 100, 80))
    amber = np.all(marked == REVIEW_COLOR, axis=-1)
    assert not np.all(plain == REVIEW_COLOR, axis=-1).any() and amber.any()
    top = amber[amber.any(axis=1).nonzero()[0][0]]  # the top edge: dashes, so not one solid run
    assert 0 < top.sum() < top.nonzero()[0][-1] - top.nonzero()[0][0] + 1


def test_legend_shape_and_colours():
    legend = heatmap_legend(600, 54)
    assert legend.shape == (54, 600, 3) and legend.dtype == np.uint8
    bar = legend[10]
    assert np.all(bar[20] == bar[30])  # below the floor: plain grey
    assert not np.array_equal(bar[300], bar[500])  # colours change along the scale
