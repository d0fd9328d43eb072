"""Metrics: the one formula per overlap metric, and evaluation metrics on numpy arrays.

Overlap formulas (:func:`dice_from_sums`, :func:`iou_from_sums`) take the sums
|A∩B|, |A|, |B| and only do arithmetic, so the same function serves numpy
(evaluation, hard masks, ``smooth=0``) and Keras tensors (``utils``' soft training
metrics and losses, ``smooth=utils.SMOOTH``), in the style of
qubvel/segmentation_models' ``base/functional.py``.

Conventions for the hard (evaluation) metrics: no smoothing; empty prediction vs
empty truth counts as a perfect match (1.0); empty vs non-empty is 0.0.
"""

from __future__ import annotations

import numpy as np


def dice_from_sums(intersection, sum_true, sum_pred, smooth: float = 0.0):
    """Dice (2|A∩B| + s) / (|A| + |B| + s); numpy scalars/arrays or Keras tensors alike."""
    return (2.0 * intersection + smooth) / (sum_true + sum_pred + smooth)


def iou_from_sums(intersection, sum_true, sum_pred, smooth: float = 0.0):
    """IoU (Jaccard) (|A∩B| + s) / (|A| + |B| − |A∩B| + s); numpy scalars/arrays or Keras tensors alike."""
    return (intersection + smooth) / (sum_true + sum_pred - intersection + smooth)


def _mask_sums(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    p = np.asarray(pred, bool)
    t = np.asarray(truth, bool)
    return int(np.logical_and(p, t).sum()), int(t.sum()), int(p.sum())


def dice_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice 2|A∩B| / (|A| + |B|) of two binary masks of the same shape; 1.0 if both empty."""
    inter, n_true, n_pred = _mask_sums(pred, truth)
    if n_true + n_pred == 0:
        return 1.0
    return float(dice_from_sums(inter, n_true, n_pred))


def iou_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """IoU |A∩B| / |A∪B| of two binary masks; 1.0 if both empty."""
    inter, n_true, n_pred = _mask_sums(pred, truth)
    if n_true + n_pred - inter == 0:
        return 1.0
    return float(iou_from_sums(inter, n_true, n_pred))


def pixel_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Share of pixels where two binary masks of the same shape agree, in [0, 1].

    Shown only next to the all-background baseline: on FracAtlas ~99.7 % of the
    pixels are background, so a model that predicts nothing scores ~0.997.
    """
    p = np.asarray(pred, bool)
    t = np.asarray(truth, bool)
    if p.size == 0:
        return float("nan")
    return float(np.count_nonzero(p == t)) / p.size


# --------------------------------------------------------------------------- boxes
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` (N, 4) and ``b`` (M, 4), x0, y0, x1, y1 (x1/y1 exclusive).

    Returns (N, M) float64 in [0, 1]. A box's area is (x1 - x0) * (y1 - y0); degenerate
    boxes (zero area) have IoU 0 with everything.
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return iou


def match_boxes(pred_boxes: np.ndarray, pred_scores: np.ndarray, truth_boxes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy one-to-one matching of one image's predicted boxes to its annotated boxes.

    Predictions are visited by decreasing score (ties: input order); each takes the
    still-unmatched truth box with the highest IoU if that IoU is >= ``iou_threshold``.
    pred_boxes (N, 4), pred_scores (N,), truth_boxes (M, 4).
    Returns (N,) bool, True where the prediction (in the input order) is a true positive.
    """
    scores = np.asarray(pred_scores, np.float64).reshape(-1)
    is_tp = np.zeros(scores.shape[0], bool)
    truth = np.asarray(truth_boxes, np.float64).reshape(-1, 4)
    if scores.size == 0 or truth.shape[0] == 0:
        return is_tp
    iou = box_iou(pred_boxes, truth)
    taken = np.zeros(truth.shape[0], bool)
    for i in np.argsort(-scores, kind="stable"):
        cand = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(cand))
        if cand[j] >= iou_threshold:
            taken[j] = True
            is_tp[i] = True
    return is_tp


def topk_hits(pred_boxes: np.ndarray, pred_scores: np.ndarray, truth_boxes: np.ndarray, k: int, iou_threshold: float) -> int:
    """Annotated boxes of one image matched by one of its ``k`` highest-scored predictions.

    The same greedy one-to-one matching as :func:`match_boxes`, over the top ``k`` only (what
    a reader looking at the first ``k`` numbered boxes sees). Returns a count in [0, M].
    """
    scores = np.asarray(pred_scores, np.float64).reshape(-1)
    top = np.argsort(-scores, kind="stable")[:k]
    boxes = np.asarray(pred_boxes, np.float64).reshape(-1, 4)[top]
    return int(match_boxes(boxes, scores[top], truth_boxes, iou_threshold).sum())


def precision_recall_curve(scores: np.ndarray, is_tp: np.ndarray, n_truth: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each detection, detections pooled over images by score.

    scores (K,), is_tp (K,) bool, n_truth = number of annotated boxes. Returns two
    (K,) float64 arrays ordered by decreasing score (ties: input order, stable).
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    tp_flags = np.asarray(is_tp, bool).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(tp_flags[order])
    fp = np.cumsum(~tp_flags[order])
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / n_truth if n_truth > 0 else np.zeros_like(precision)
    return precision, recall


def average_precision(scores: np.ndarray, is_tp: np.ndarray, n_truth: int) -> float:
    """All-point interpolated AP (VOC 2010+): area under the monotone precision envelope.

    AP = sum over recall steps (r_i - r_{i-1}) * max(precision at recall >= r_i).
    NaN when there is no annotated box (undefined); 0 when there are boxes but no
    detection.
    """
    if n_truth <= 0:
        return float("nan")
    precision, recall = precision_recall_curve(scores, is_tp, n_truth)
    if precision.size == 0:
        return 0.0
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # envelope: best precision at any higher recall
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


# --------------------------------------------------------------------------- image level
def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` (K,), tied values sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    # Start index of each run of equal values, and the average 1-based rank of the run.
    starts = np.concatenate([[0], np.nonzero(sorted_vals[1:] != sorted_vals[:-1])[0] + 1])
    ends = np.concatenate([starts[1:], [values.size]])
    run_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty(values.size, np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC-AUC = P(score of a random positive > that of a random negative), ties count 1/2.

    Computed as the Mann-Whitney U statistic with average ranks. scores (K,) float,
    labels (K,) bool/{0,1}. NaN when one class is absent.
    """
    s = np.asarray(scores, np.float64).reshape(-1)
    y = np.asarray(labels, bool).reshape(-1)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates for "positive if score >= t" at every distinct score.

    Returns (fpr, tpr, thresholds), each (D + 1,), starting at (0, 0) with threshold +inf;
    tied scores form one step, so the trapezoid area equals :func:`roc_auc`.
    """
    s = np.asarray(scores, np.float64).reshape(-1)
    y = np.asarray(labels, bool).reshape(-1)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.concatenate([np.nonzero(s[1:] != s[:-1])[0], [s.size - 1]]) if s.size else np.zeros(0, int)
    tp = np.cumsum(y)[last_of_run]
    fp = np.cumsum(~y)[last_of_run]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    fpr = np.concatenate([[0.0], fp / n_neg])
    tpr = np.concatenate([[0.0], tp / n_pos])
    thresholds = np.concatenate([[np.inf], s[last_of_run]])
    return fpr, tpr, thresholds


def sensitivity_specificity(predicted_positive: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(TP / P, TN / N) of image-level decisions; NaN for a class that is absent."""
    p = np.asarray(predicted_positive, bool).reshape(-1)
    y = np.asarray(labels, bool).reshape(-1)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    sens = float(np.count_nonzero(p & y)) / n_pos if n_pos else float("nan")
    spec = float(np.count_nonzero(~p & ~y)) / n_neg if n_neg else float("nan")
    return sens, spec


def f1_from_counts(tp: int, fp: int, fn: int) -> float:
    """F1 = 2TP / (2TP + FP + FN) in [0, 1]; NaN when all three counts are 0 (nothing to score)."""
    denom = 2 * tp + fp + fn
    return 2.0 * tp / denom if denom else float("nan")
