"""Jaccard / Dice losses and metrics for the 2-class softmax segmentation output (Keras).

Thin wrappers: the formulas themselves are ``evaluation.metrics.dice_from_sums`` and
``evaluation.metrics.iou_from_sums`` (the same ones the evaluation uses), here on soft
probabilities with ``SMOOTH`` = 1 so that an empty batch scores 1, not 0/0.

All functions take ``y_true`` one-hot, shape (B, H, W, 2), float in {0, 1}, and
``y_pred`` softmax probabilities, shape (B, H, W, 2), float in [0, 1].

They are computed on the **fracture channel only** (channel 1). On both channels
the background (about 99.7 % of all pixels in FracAtlas) dominates: a prediction of
"all background" would score a Jaccard near 0.5 averaged over channels, and the loss
would barely move when the model misses every fracture.

The overlap is summed over the **whole batch** (one intersection and one union per
batch), not per image. With a per-image soft score, crops and negative images that
contain no fracture reward pushing every probability to 0, and the U-Net collapsed to
all-background within 2 epochs; the batch form does not have that pull.

Everything is registered as a Keras serializable object, so a saved model that was
compiled with these loads with ``keras.saving.load_model(path)`` in safe mode with
no ``custom_objects``, as long as this module has been imported.
"""

from __future__ import annotations

import keras
from keras import ops

from evaluation.metrics import dice_from_sums, iou_from_sums
from important_variables import CONFIG

SMOOTH = 1.0
_PACKAGE = "fracture"


def _fracture_channel(y_true, y_pred):
    ch = CONFIG.fracture_channel
    t = ops.cast(y_true[..., ch], "float32")
    p = ops.cast(y_pred[..., ch], "float32")
    return t, p


@keras.saving.register_keras_serializable(package=_PACKAGE, name="jaccard_index")
def jaccard_index(y_true, y_pred, smooth: float = SMOOTH):
    """Soft Jaccard J = (|A∩B| + s) / (|A| + |B| − |A∩B| + s), fracture channel, whole batch.

    Returns a scalar in (0, 1]; 1 for a perfect match (and for empty vs empty).
    """
    t, p = _fracture_channel(y_true, y_pred)
    return iou_from_sums(ops.sum(t * p), ops.sum(t), ops.sum(p), smooth)


@keras.saving.register_keras_serializable(package=_PACKAGE, name="jaccard_loss")
def jaccard_loss(y_true, y_pred):
    """1 − soft Jaccard index (see :func:`jaccard_index`), in [0, 1)."""
    return 1.0 - jaccard_index(y_true, y_pred)


@keras.saving.register_keras_serializable(package=_PACKAGE, name="dice_coef")
def dice_coef(y_true, y_pred, smooth: float = SMOOTH):
    """Soft Dice D = (2|A∩B| + s) / (|A| + |B| + s), fracture channel, whole batch."""
    t, p = _fracture_channel(y_true, y_pred)
    return dice_from_sums(ops.sum(t * p), ops.sum(t), ops.sum(p), smooth)


@keras.saving.register_keras_serializable(package=_PACKAGE, name="dice_loss")
def dice_loss(y_true, y_pred):
    """1 − soft Dice (see :func:`dice_coef`)."""
    return 1.0 - dice_coef(y_true, y_pred)


@keras.saving.register_keras_serializable(package=_PACKAGE, name="ce_dice_loss")
def ce_dice_loss(y_true, y_pred):
    """Categorical cross-entropy (mean over pixels) + batch soft-Dice loss.

    The training loss. Cross-entropy gives every pixel a gradient from the start;
    the Dice term keeps the rare fracture pixels from being drowned by background.
    """
    ce = ops.mean(keras.losses.categorical_crossentropy(y_true, y_pred))
    return ce + dice_loss(y_true, y_pred)


@keras.saving.register_keras_serializable(package=_PACKAGE, name="ce_dice_fractured_loss")
def ce_dice_fractured_loss(y_true, y_pred, smooth: float = SMOOTH):
    """Cross-entropy on every sample + soft Dice per image on the samples that contain fracture.

    The native-scale training loss. A per-image Dice on crops *without*
    fracture rewards predicting all background (the collapse described above), so
    those samples contribute only cross-entropy; samples with fracture pixels get
    their own Dice, so a small fracture weighs as much as a large one.

    ``y_pred`` must be the softmax output itself, handed unchanged to
    ``categorical_crossentropy``: Keras then computes the cross-entropy from the
    logits behind the softmax. A cast or clip in between cuts the gradient once a
    probability underflows, and the net collapsed to exactly 0 everywhere.
    """
    ce = ops.mean(keras.losses.categorical_crossentropy(y_true, y_pred))
    t, p = _fracture_channel(y_true, y_pred)
    t_sum = ops.sum(t, axis=(1, 2))
    dice = dice_from_sums(ops.sum(t * p, axis=(1, 2)), t_sum, ops.sum(p, axis=(1, 2)), smooth)
    has = ops.cast(t_sum > 0, "float32")
    dice_term = ops.sum((1.0 - dice) * has) / ops.maximum(ops.sum(has), 1.0)
    return ce + dice_term


_EPS = 1e-6


def topk_image_bce(y_true, y_pred, k: int = CONFIG.image_score_topk_px):
    """Per-sample binary cross-entropy of the mean of the ``k`` highest fracture probabilities
    against "this sample holds fracture pixels"; shape (B,).

    The gradient reaches only the k most confident pixels of each sample: on a negative those
    are exactly the false findings. The clip acts only when that mean is already within 1e-6
    of its target, so it does not cut the gradient that matters (the trap of an earlier version was a
    clip on the per-pixel probabilities before the cross-entropy).
    """
    t, p = _fracture_channel(y_true, y_pred)
    has = ops.cast(ops.sum(t, axis=(1, 2)) > 0, "float32")
    return _bce(has, topk_mean(p, k))


def topk_mean(prob, k: int = CONFIG.image_score_topk_px):
    """Per-sample mean of the ``k`` highest values of ``prob`` (B, H, W) -> (B,): the ``topk_mean``
    image score, in a form the losses differentiate."""
    n = ops.shape(prob)[0]
    return ops.mean(ops.top_k(ops.reshape(prob, (n, -1)), k)[0], axis=-1)


def _bce(target, score):
    """Binary cross-entropy of ``score`` (B,) against ``target`` (B,) in [0, 1]; the clip acts only
    within 1e-6 of 0 or 1."""
    score = ops.clip(score, _EPS, 1.0 - _EPS)
    return -(target * ops.log(score) + (1.0 - target) * ops.log(1.0 - score))


@keras.saving.register_keras_serializable(package=_PACKAGE, name="ce_dice_topk_loss")
def ce_dice_topk_loss(y_true, y_pred):
    """:func:`ce_dice_fractured_loss` + the batch mean of :func:`topk_image_bce`.

    For the false findings on negative images that the per-pixel loss left: a
    negative crop whose most confident pixels say "fracture" now costs as much as a whole
    misclassified image, not a few hundred pixels out of 65,536.
    """
    return ce_dice_fractured_loss(y_true, y_pred) + ops.mean(topk_image_bce(y_true, y_pred))


@keras.saving.register_keras_serializable(package=_PACKAGE, name="ce_dice_distill_loss")
def ce_dice_distill_loss(y_true, y_pred):
    """:func:`ce_dice_fractured_loss` on the labels + ``CONFIG.distill_weight`` x the cross-entropy
    of ``y_pred`` against a teacher's softmax map (knowledge distillation).

    ``y_true`` has 4 channels, (B, H, W, 4) float32: the one-hot labels (channels 0-1, so the
    Dice gate and the ``dice_coef`` metric still see the hard mask) followed by the teacher's
    probabilities (channels 2-3, each pixel summing to 1; ``training.distill.TeacherTargets``
    appends them). The soft term carries what the teacher knows beyond the outline: how
    confident it is around the fracture and on the negatives.
    """
    hard, soft = _labels_and_teacher(y_true)
    soft_ce = ops.mean(keras.losses.categorical_crossentropy(soft, y_pred))
    return ce_dice_fractured_loss(hard, y_pred) + CONFIG.distill_weight * soft_ce


def _labels_and_teacher(y_true):
    """(one-hot labels, teacher's softmax) of a distillation target (B, H, W, 2 x num_classes)."""
    n = CONFIG.num_classes
    return y_true[..., :n], y_true[..., n:]


@keras.saving.register_keras_serializable(package=_PACKAGE, name="ce_dice_distill_topk_loss")
def ce_dice_distill_topk_loss(y_true, y_pred, k: int = CONFIG.image_score_topk_px):
    """:func:`ce_dice_distill_loss` + ``CONFIG.distill_weight`` x the batch mean of the binary
    cross-entropy of the student's top-``k`` mean fracture probability against the teacher's.

    The per-pixel soft term is an average over 65,536 pixels of a crop, in which the few the image
    score reads (its top 64) hardly count; this term hands over the teacher's image score itself,
    what ranks X-rays by "holds a fracture" (the image AUC). ``y_true`` as in :func:`ce_dice_distill_loss`.
    """
    teacher, student = _fracture_channel(_labels_and_teacher(y_true)[1], y_pred)
    return ce_dice_distill_loss(y_true, y_pred) + CONFIG.distill_weight * ops.mean(_bce(topk_mean(teacher, k), topk_mean(student, k)))


#: ``train.py --loss`` choices.
TRAINING_LOSSES = {"ce_dice_fractured": ce_dice_fractured_loss, "ce_dice_topk": ce_dice_topk_loss,
                   "ce_dice_distill": ce_dice_distill_loss, "ce_dice_distill_topk": ce_dice_distill_topk_loss}


@keras.saving.register_keras_serializable(package=_PACKAGE, name="hard_dice")
def hard_dice(y_true, y_pred, threshold: float = 0.5):
    """Dice of the thresholded fracture probability (>= threshold), whole batch; a metric."""
    t, p = _fracture_channel(y_true, y_pred)
    p = ops.cast(p >= threshold, "float32")
    return dice_from_sums(ops.sum(t * p), ops.sum(t), ops.sum(p), SMOOTH)
