"""Evaluation metrics on numpy arrays (binary masks, boxes, scores).

Conventions: empty prediction vs empty truth counts as a perfect match (1.0);
empty vs non-empty is 0.0.
"""

from __future__ import annotations

import numpy as np


def dice_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice 2|A∩B| / (|A| + |B|) of two binary masks of the same shape; 1.0 if both empty."""
    p = np.asarray(pred, bool)
    t = np.asarray(truth, bool)
    denom = int(p.sum()) + int(t.sum())
    if denom == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, t).sum()) / denom


def iou_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """IoU |A∩B| / |A∪B| of two binary masks; 1.0 if both empty."""
    p = np.asarray(pred, bool)
    t = np.asarray(truth, bool)
    union = int(np.logical_or(p, t).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(p, t).sum()) / union
