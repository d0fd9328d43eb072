"""Pinned facts of findings.py (hysteresis, caps, image scores) and the COCO reference AP."""

import numpy as np
import pytest

from evaluation.coco import CocoImage, coco_ap
from inference.findings import FindingRule, image_scores, regions, topk_mean


def _two_fragments():
    prob = np.zeros((40, 40), np.float32)
    prob[10:14, 5:12] = 0.9   # seed 1
    prob[10:14, 12:20] = 0.5  # weak bridge
    prob[10:14, 20:27] = 0.85  # seed 2
    prob[30:32, 30:32] = 0.95  # a 4-px speck
    return prob


def test_plain_threshold_keeps_fragments_apart():
    found, labels = regions(_two_fragments(), 0.8, FindingRule(low_ratio=1.0, min_area_px=5))
    assert [f[1] for f in found] == [(5, 10, 12, 14), (20, 10, 27, 14)]
    assert labels.max() == 2 and (labels > 0).sum() == 4 * 7 + 4 * 7


def test_hysteresis_joins_fragments_through_weak_pixels():
    found, labels = regions(_two_fragments(), 0.8, FindingRule(low_ratio=0.6, min_area_px=5))
    assert len(found) == 1
    score, box, area = found[0]
    assert box == (5, 10, 27, 14) and area == 4 * 22 and score == pytest.approx(0.9)
    assert (labels == 1).sum() == area


def test_grown_region_without_seed_is_not_a_finding():
    prob = np.full((10, 10), 0.6, np.float32)
    assert regions(prob, 0.8, FindingRule(low_ratio=0.5))[0] == []


def test_speck_dropped_and_cap_keeps_best():
    prob = _two_fragments()
    assert len(regions(prob, 0.8, FindingRule(min_area_px=4))[0]) == 3
    assert len(regions(prob, 0.8, FindingRule(min_area_px=5))[0]) == 2
    capped, labels = regions(prob, 0.8, FindingRule(min_area_px=4, max_findings=1))
    assert [f[0] for f in capped] == [pytest.approx(0.95)] and labels.max() == 1


def test_mean_score_ranks_a_solid_region_above_a_rim_around_one_hot_pixel():
    prob = np.zeros((20, 30), np.float32)
    prob[2:6, 2:7] = 0.81
    prob[3, 3] = 0.99  # A: peaks at 0.99, mean (19 * 0.81 + 0.99) / 20 = 0.819
    prob[10:14, 15:20] = 0.95  # B: flat 0.95
    by_max, _ = regions(prob, 0.8, FindingRule())
    by_mean, labels = regions(prob, 0.8, FindingRule(score="mean"))
    assert [(round(s, 3), b) for s, b, _ in by_max] == [(0.99, (2, 2, 7, 6)), (0.95, (15, 10, 20, 14))]
    assert [(round(s, 3), b) for s, b, _ in by_mean] == [(0.95, (15, 10, 20, 14)), (0.819, (2, 2, 7, 6))]
    assert labels[11, 16] == 1 and labels[3, 3] == 2  # numbered in the order of the list
    # The seed rule is the maximum either way: a grown region whose mean is below the threshold stays.
    grown, _ = regions(_two_fragments(), 0.8, FindingRule(low_ratio=0.6, min_area_px=5, score="mean"))
    assert len(grown) == 1 and grown[0][0] == pytest.approx((28 * 0.9 + 32 * 0.5 + 28 * 0.85) / 88)
    with pytest.raises(ValueError, match="finding score 'median'"):
        FindingRule(score="median")


def test_image_scores():
    prob = np.zeros((10, 10), np.float32)
    prob[0, :4] = [1.0, 0.8, 0.6, 0.4]
    assert topk_mean(prob, 2) == pytest.approx(0.9)
    assert topk_mean(prob, 1000) == pytest.approx(2.8 / 100)
    s = image_scores(prob, [0.7], FindingRule(topk_px=4))
    assert s == {"max_prob": pytest.approx(1.0), "topk_mean": pytest.approx(0.7), "best_finding": pytest.approx(0.7)}
    assert image_scores(prob, [])["best_finding"] == 0.0


def _square(x0, y0, x1, y1):
    return [np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)]


def test_coco_ap_perfect_and_missed():
    truth = np.array([[10, 10, 30, 30]], np.float64)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 10:30] = 1
    perfect = CocoImage(64, 64, [_square(10, 10, 30, 30)], truth, truth.copy(), np.array([0.9]), [mask])
    r = coco_ap([perfect])
    assert r["box_ap50"] == pytest.approx(1.0) and r["mask_ap50"] == pytest.approx(1.0, abs=0.02)
    far = np.array([[40, 40, 60, 60]], np.float64)
    fmask = np.zeros((64, 64), np.uint8)
    fmask[40:60, 40:60] = 1
    missed = CocoImage(64, 64, [_square(10, 10, 30, 30)], truth, far, np.array([0.9]), [fmask])
    r = coco_ap([missed])
    assert r["box_ap50"] == pytest.approx(0.0) and r["mask_ap50"] == pytest.approx(0.0)
    # half the images found: AP@50 between the two
    assert 0.0 < coco_ap([perfect, missed])["box_ap50"] < 1.0
