"""Knowledge distillation: training batches that carry a teacher model's softmax map beside the
labels, for ``utils.ce_dice_distill_loss`` (``train.py --teacher``).

The teacher is a shipped model, loaded verified like any other; it runs on the very crops the
student sees (augmented, so its maps cannot be computed once beforehand). No I/O at import.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from important_variables import CONFIG

log = logging.getLogger("train")


def load_teacher(name: str):
    """The shipped model ``name`` (verified against the manifest), float32, for crops of
    ``CONFIG.input_size`` squared: (B, 256, 256, 3) float32 in [0, 1] -> (B, 256, 256, 2) softmax."""
    import keras

    from create_segmentation_model import load_named_model

    policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("float32")  # the teacher's maps are targets: no bf16 rounding in them
    try:
        teacher = load_named_model(name)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    log.info("teacher %s: %d parameters", name, teacher.count_params())
    return teacher


def teacher_targets(data, teacher, workers: int | None = None):
    """Endless ``keras.utils.PyDataset`` of ``data``'s batches with the teacher's map appended to
    the labels: x (B, H, W, 3) unchanged, y (B, H, W, 4) float32 = [one-hot labels, teacher softmax].

    Batch ``i`` is ``data[i]`` (so the seeding of ``fracture.native.crop_batches`` holds) plus one
    compiled teacher forward pass on it, in this dataset's worker threads while the student trains.
    """
    import keras

    n_workers = workers or os.cpu_count() or 2
    # The compiled forward (a tf.function under TensorFlow: 1.64 s against 2.24 s eager for 8 crops of
    # the ensemble on one Zen 3 core) is built here, once, not by racing worker threads.
    teacher.predict_on_batch(np.zeros((1, CONFIG.input_size, CONFIG.input_size, CONFIG.input_channels), np.float32))

    class TeacherTargets(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=n_workers, use_multiprocessing=False, max_queue_size=4 * n_workers)

        @property
        def num_batches(self):
            return None  # endless like ``data``: fit's steps_per_epoch ends an epoch

        def __getitem__(self, index):
            x, y = data[index]
            soft = np.asarray(teacher.predict_on_batch(x), np.float32)
            if soft.shape != y.shape:
                raise ValueError(f"teacher map {soft.shape} does not match the labels {y.shape}: the teacher "
                                 f"takes {CONFIG.input_size}-px crops")
            return x, np.concatenate([y, soft], axis=-1)

    return TeacherTargets()
