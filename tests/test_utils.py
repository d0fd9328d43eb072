"""Jaccard / Dice losses and metrics against hand-computed values."""

import numpy as np
import pytest

import utils


def onehot(fracture) -> np.ndarray:
    """(H, W) fracture probabilities → (1, H, W, 2) one-hot/softmax-like array."""
    f = np.asarray(fracture, np.float32)
    return np.stack([1 - f, f], axis=-1)[None]


SQUARE = np.array([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]])


def test_jaccard_perfect_match_is_one():
    assert float(utils.jaccard_index(onehot(SQUARE), onehot(SQUARE))) == pytest.approx(1.0)
    assert float(utils.jaccard_loss(onehot(SQUARE), onehot(SQUARE))) == pytest.approx(0.0)


def test_jaccard_empty_vs_empty_is_one_thanks_to_smoothing():
    z = np.zeros((4, 4))
    assert float(utils.jaccard_index(onehot(z), onehot(z))) == pytest.approx(1.0)


def test_jaccard_and_dice_hand_computed_partial_overlap():
    # truth: 4 pixels; prediction: 2 of them + 2 others. |A∩B| = 2, |A ∪ B| = 6.
    t = np.array([[1, 1, 1, 1], [0, 0, 0, 0]])
    p = np.array([[0, 0, 1, 1], [1, 1, 0, 0]])
    assert float(utils.jaccard_index(onehot(t), onehot(p))) == pytest.approx((2 + 1) / (6 + 1))
    assert float(utils.dice_coef(onehot(t), onehot(p))) == pytest.approx((2 * 2 + 1) / (4 + 4 + 1))
    assert float(utils.dice_loss(onehot(t), onehot(p))) == pytest.approx(1 - 5 / 9)


def test_soft_values_and_only_fracture_channel_counts():
    # truth 1 pixel; prediction 0.5 on it and 0.5 on a background pixel.
    t = np.array([[1, 0], [0, 0]])
    p = np.array([[0.5, 0], [0, 0.5]])
    # inter = 0.5, |A| = 1, |B| = 1 → J = 1.5 / (1 + 1 - 0.5 + 1) = 0.6
    assert float(utils.jaccard_index(onehot(t), onehot(p))) == pytest.approx(0.6)


def test_jaccard_is_summed_over_the_batch_not_per_image():
    # image 1: perfect hit of 4 px; image 2: empty truth, 1 false pixel.
    t = np.zeros((2, 4, 4, 1))
    t[0, :2, :2] = 1
    p = t.copy()
    p[1, 3, 3] = 1
    y_t = np.concatenate([1 - t, t], -1)
    y_p = np.concatenate([1 - p, p], -1)
    # batch: inter 4, union 5 → (4+1)/(5+1); a per-image mean would give (1 + 1/2) / 2 = 0.75
    assert float(utils.jaccard_index(y_t, y_p)) == pytest.approx(5 / 6)


def test_ce_dice_loss_positive_and_lower_for_better_prediction():
    t = np.zeros((8, 8))
    t[2:5, 2:5] = 1
    good = np.clip(t * 0.9 + 0.05, 0, 1)
    bad = np.full((8, 8), 0.5)
    lg = float(utils.ce_dice_loss(onehot(t), onehot(good)))
    lb = float(utils.ce_dice_loss(onehot(t), onehot(bad)))
    assert 0 < lg < lb


def test_hard_dice_thresholds():
    t = np.array([[1, 1, 0, 0]])
    p = np.array([[0.6, 0.4, 0, 0]])
    # hard prediction: 1 px, overlap 1 → (2*1 + 1) / (2 + 1 + 1)
    assert float(utils.hard_dice(onehot(t), onehot(p))) == pytest.approx(3 / 4)
