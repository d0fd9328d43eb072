"""The training recipe: the losses by name, the learning-rate schedules, compiling a model, the
training images of ``--sources``. No I/O at import; Keras is imported where it is used."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from cli.common import require_yolo8_dir
from important_variables import CONFIG

log = logging.getLogger("train")

#: What ``--monitor`` may choose: the epoch-log keys written by :func:`valid_logs`.
MONITORS = ("val_dice", "val_ap25", "val_ap50", "val_auc")
SOURCE_CHOICES = ("fracatlas", "fracatlas+yolo8")

LOSS_NOTES = {
    "ce_dice_fractured": "cross-entropy on every sample + per-image soft Dice on samples with fracture (utils.ce_dice_fractured_loss)",
    "ce_dice_topk": "cross-entropy on every sample + per-image soft Dice on samples with fracture + cross-entropy of the top-64 "
                    "mean probability per sample (utils.ce_dice_topk_loss)",
    "ce_dice_distill": "cross-entropy on every sample + per-image soft Dice on samples with fracture + cross-entropy against "
                       "the teacher model's softmax map (utils.ce_dice_distill_loss)",
    "ce_dice_distill_topk": "the same + cross-entropy of the top-64 mean probability per sample against the teacher's "
                            "(utils.ce_dice_distill_topk_loss)",
}

#: The losses that read a teacher's map beside the labels (``train.py --teacher``).
DISTILL_LOSSES = ("ce_dice_distill", "ce_dice_distill_topk")


def compile_model(model, learning_rate=1e-3, loss: str = "ce_dice_fractured"):
    """Compile with the training loss ``utils.TRAINING_LOSSES[loss]`` (so a saved file carries it) and Adam at
    ``learning_rate`` (float or schedule)."""
    import keras

    import utils

    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=utils.TRAINING_LOSSES[loss], metrics=[utils.dice_coef])
    return model


def lr_schedule(peak: float, total_steps: int, warmup_steps: int):
    """Linear warm-up from 10 % of ``peak`` over ``warmup_steps``, then cosine decay to 5 % of it at ``total_steps``."""
    import keras

    return keras.optimizers.schedules.CosineDecay(
        peak * 0.1, decay_steps=max(total_steps - warmup_steps, 1), alpha=0.05, warmup_target=peak, warmup_steps=warmup_steps,
    )


def time_lr(peak: float, fraction: float, epoch: int) -> float:
    """Learning rate of ``--time-budget-minutes``: 20 % of ``peak`` in the first epoch (warm-up), then a cosine
    from ``peak`` at the start to 5 % of it when ``fraction`` (time spent / budget) reaches 1."""
    if epoch == 0:
        return 0.2 * peak
    f = min(max(fraction, 0.0), 1.0)
    return peak * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * f)))


def training_split(args, atlas):
    """The native-scale training images of ``--sources`` (``fracture.native.NativeSplit``)."""
    from fracture.native import concat_splits, load_native_split

    fracatlas = load_native_split(atlas, "train", limit=args.limit)
    if args.sources == "fracatlas":
        return fracatlas
    from fracture.bone_fracture_yolo8 import SOURCE_NAME, BoneFractureYolo8

    second = load_native_split(BoneFractureYolo8(require_yolo8_dir(args.yolo8_data)), "train", limit=args.limit)
    log.info("second source %s: %d fractured train images", SOURCE_NAME, int(second.fractured.sum()))
    return concat_splits({atlas.name: fracatlas, SOURCE_NAME: second})


def source_shares(args) -> dict[str, float] | None:
    """The ``source_shares`` of ``fracture.native.CropSampler`` that ``--fracatlas-share`` asks for (None: equal;
    with one source the sampler has nothing to weigh)."""
    from fracture.dataset import SOURCE_NAME

    return None if args.fracatlas_share is None else {SOURCE_NAME: args.fracatlas_share}


def load_weights_model(name: str, source: Path):
    """The size-free architecture ``name`` carrying the weights of ``source`` (.keras or .weights.h5)."""
    import keras

    from create_segmentation_model import build_model

    model = build_model(name, input_shape=(None, None, CONFIG.input_channels))
    if source.name.endswith(".weights.h5"):
        model.load_weights(source)  # a snapshot also holds the optimizer's slots: skipped here
    else:
        model.set_weights(keras.saving.load_model(source, compile=False).get_weights())
    return model
