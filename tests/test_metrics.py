"""Evaluation metrics (metrics.py) against hand-computed cases."""

import math

import numpy as np
import pytest

from evaluation.metrics import (
    average_precision,
    box_iou,
    dice_score,
    f1_from_counts,
    iou_score,
    match_boxes,
    pixel_accuracy,
    precision_recall_curve,
    roc_auc,
    roc_curve,
    sensitivity_specificity,
)


# --------------------------------------------------------------------------- masks
def _mask(shape, *slices):
    m = np.zeros(shape, np.uint8)
    for sl in slices:
        m[sl] = 1
    return m


def test_dice_iou_perfect_match():
    m = _mask((6, 6), np.s_[1:4, 1:4])
    assert dice_score(m, m) == 1.0
    assert iou_score(m, m) == 1.0


def test_dice_iou_empty_vs_empty_is_one():
    z = np.zeros((5, 5), np.uint8)
    assert dice_score(z, z) == 1.0
    assert iou_score(z, z) == 1.0


def test_dice_iou_empty_vs_something_is_zero_both_ways():
    z = np.zeros((5, 5), np.uint8)
    m = _mask((5, 5), np.s_[0, 0])
    assert dice_score(z, m) == 0.0 and dice_score(m, z) == 0.0
    assert iou_score(z, m) == 0.0 and iou_score(m, z) == 0.0


def test_dice_iou_partial_overlap_hand_computed():
    # truth: row 0 (4 px); prediction: 2 of them + 2 px of row 1. |A∩B| = 2, |A∪B| = 6.
    t = _mask((4, 4), np.s_[0, 0:4])
    p = _mask((4, 4), np.s_[0, 2:4], np.s_[1, 0:2])
    assert dice_score(p, t) == pytest.approx(2 * 2 / 8)
    assert iou_score(p, t) == pytest.approx(2 / 6)


def test_pixel_accuracy_and_the_all_background_trap():
    # 100 px, 1 px of fracture: predicting nothing is 99 % "accurate".
    t = _mask((10, 10), np.s_[5, 5])
    assert pixel_accuracy(np.zeros_like(t), t) == pytest.approx(0.99)
    assert pixel_accuracy(t, t) == 1.0
    # Half right on a 2-px fracture plus 1 false pixel: 98 of 100 agree.
    t2 = _mask((10, 10), np.s_[5, 5:7])
    p2 = _mask((10, 10), np.s_[5, 5], np.s_[0, 0])
    assert pixel_accuracy(p2, t2) == pytest.approx(0.98)


# --------------------------------------------------------------------------- boxes
def test_box_iou_hand_computed():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [10, 0, 20, 10]], np.float32)
    # identical: 1; half-shifted: 50 / 150; disjoint: 0; touching edge: 0.
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0, 0.0]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 4)
    assert box_iou(a, np.array([[3, 3, 3, 8]])).item() == 0.0  # zero-area box


def test_match_one_box_matched_and_unmatched():
    truth = np.array([[0, 0, 10, 10]], np.float32)
    good = np.array([[1, 1, 10, 10]], np.float32)  # IoU 81 / 100
    shifted = np.array([[5, 0, 15, 10]], np.float32)  # IoU 1/3
    assert match_boxes(good, [0.9], truth, 0.5).tolist() == [True]
    assert match_boxes(shifted, [0.9], truth, 0.5).tolist() == [False]
    assert match_boxes(shifted, [0.9], truth, 0.25).tolist() == [True]
    assert match_boxes(good, [0.9], np.zeros((0, 4)), 0.5).tolist() == [False]  # negative image
    assert match_boxes(np.zeros((0, 4)), [], truth, 0.5).tolist() == []


def test_match_is_greedy_by_score_and_one_to_one():
    truth = np.array([[0, 0, 10, 10]], np.float32)
    preds = np.array([[0, 0, 10, 9], [0, 0, 10, 10]], np.float32)  # IoU 0.9 and 1.0
    # The higher score takes the only truth box, even though the other overlaps more.
    assert match_boxes(preds, [0.8, 0.6], truth, 0.5).tolist() == [True, False]
    assert match_boxes(preds, [0.6, 0.8], truth, 0.5).tolist() == [False, True]


def test_average_precision_hand_computed():
    # 3 annotated boxes; detections by score: 0.9 TP, 0.8 FP, 0.7 TP, 0.6 FP.
    # recall:    1/3, 1/3, 2/3, 2/3
    # precision: 1,   1/2, 2/3, 1/2
    # envelope (max precision at recall >= r): r=1/3 -> 1, r=2/3 -> 2/3
    # AP = (1/3 - 0) * 1 + (2/3 - 1/3) * 2/3 = 1/3 + 2/9 = 5/9
    scores = np.array([0.7, 0.9, 0.6, 0.8])  # order of input must not matter
    is_tp = np.array([True, True, False, False])
    assert average_precision(scores, is_tp, 3) == pytest.approx(5 / 9)
    precision, recall = precision_recall_curve(scores, is_tp, 3)
    np.testing.assert_allclose(precision, [1, 1 / 2, 2 / 3, 1 / 2])
    np.testing.assert_allclose(recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3])


def test_average_precision_edge_cases():
    assert average_precision([0.9], [True], 1) == 1.0
    assert average_precision([], [], 2) == 0.0  # boxes but no detection
    assert average_precision([0.9, 0.8], [False, False], 2) == 0.0
    assert math.isnan(average_precision([0.9], [False], 0))  # nothing to find: undefined
    # A false positive ranked below every true positive costs nothing.
    assert average_precision([0.9, 0.8, 0.1], [True, True, False], 2) == 1.0


# --------------------------------------------------------------------------- image level
def test_roc_auc_with_ties_hand_computed():
    # positives 0.8, 0.5; negatives 0.5, 0.2. Pairs: (0.8>0.5)=1, (0.8>0.2)=1,
    # (0.5=0.5)=1/2, (0.5>0.2)=1 -> 3.5 / 4.
    scores = [0.8, 0.5, 0.5, 0.2]
    labels = [1, 1, 0, 0]
    assert roc_auc(scores, labels) == pytest.approx(0.875)
    fpr, tpr, thr = roc_curve(scores, labels)
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.875)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    assert thr[0] == np.inf


def test_roc_auc_perfect_inverted_constant_and_undefined():
    assert roc_auc([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    assert roc_auc([0.1, 0.2, 0.9], [1, 1, 0]) == 0.0
    assert roc_auc([0.3, 0.3, 0.3, 0.3], [1, 0, 1, 0]) == 0.5  # all tied: chance
    assert math.isnan(roc_auc([0.3, 0.4], [1, 1]))


def test_sensitivity_specificity_and_f1():
    pred = [True, False, True, False, False]
    truth = [True, True, False, False, False]
    sens, spec = sensitivity_specificity(pred, truth)
    assert sens == pytest.approx(1 / 2)
    assert spec == pytest.approx(2 / 3)
    assert math.isnan(sensitivity_specificity([False], [False])[0])
    assert f1_from_counts(2, 1, 1) == pytest.approx(4 / 6)
    assert f1_from_counts(0, 3, 2) == 0.0
    assert math.isnan(f1_from_counts(0, 0, 0))
