"""One training run: data, model, callbacks, ``model.fit`` (the engine behind ``train.py``)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from cli.common import require_data_dir
from important_variables import CONFIG, PAD_MULTIPLES
from inference.manifest import model_entry, read_manifest_or_empty
from training.history import best_so_far, note_run, read_history
from training.recipe import compile_model, load_weights_model, lr_schedule, source_shares, training_split

log = logging.getLogger("train")


def probe_batch(atlas, model_name: str) -> np.ndarray:
    """The collapse probe's input: up to 4 fractured valid images at native scale, zero-padded to one
    shape (a multiple of the model's pad), (N, H, W, C) float32 in [0, 1]."""
    from fracture.native import load_native_split
    from imaging.image_io import pad_to_multiple

    probe = load_native_split(atlas, "valid", limit=4, use_cache=False)
    probe_imgs = [im for im, f in zip(probe.images, probe.fractured, strict=True) if f][:4]
    h = max(im.shape[0] for im in probe_imgs)
    w = max(im.shape[1] for im in probe_imgs)
    probe_shape = pad_to_multiple(np.zeros((h, w)), PAD_MULTIPLES[model_name]).shape
    probe_x = np.zeros((len(probe_imgs), *probe_shape, CONFIG.input_channels), np.float32)
    for i, im in enumerate(probe_imgs):
        probe_x[i, : im.shape[0], : im.shape[1]] = im[..., None] / 255.0
    return probe_x


def start_model(args, start: int):
    """The size-free model to train: ``--init-from``'s weights or ImageNet's encoder on a fresh run
    (``start`` = epochs already finished; a resumed run gets its weights from the backup)."""
    from create_segmentation_model import build_model

    model = build_model(args.model, input_shape=(None, None, CONFIG.input_channels))
    if args.init_from and start == 0:
        model.set_weights(load_weights_model(args.model, Path(args.init_from)).get_weights())
        log.info("initialised from %s", args.init_from)
    elif args.pretrained == "imagenet" and start == 0:
        from training.pretrained.efficientnet_lite import load_imagenet_encoder

        log.info("encoder initialised from ImageNet: %d values", load_imagenet_encoder(model))
    return model


def train(args, command: str) -> int:
    """One run of ``train.py`` (parsed ``args``; ``command`` is recorded in runs.jsonl); 0 when done."""
    data_dir = require_data_dir(args.data)

    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        from cli import quiet_tf

        quiet_tf.import_tensorflow()  # before Keras: no TensorFlow start-up lines
    import keras

    from create_segmentation_model import choose_precision
    from evaluation.validator import Validator
    from fracture.dataset import FracAtlas
    from fracture.native import AUGMENTS, crop_batches
    from training.callbacks import make_callbacks

    policy = choose_precision(args.precision, args.model, batch=args.batch_size)
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(args.seed)
    atlas = FracAtlas(data_dir)
    split = training_split(args, atlas)
    valid_limit = min(args.valid_limit, args.limit) if args.limit else args.valid_limit
    # Scored with the finding rule and image score the shipped model of this name runs with
    # (the manifest's), so the epoch's numbers are the ones evaluate.py will judge it by.
    validator = Validator(atlas, "valid", limit=valid_limit, entry=model_entry(args.model, read_manifest_or_empty()))
    probe_x = probe_batch(atlas, args.model)
    log.info("backend %s, policy %s; train %d fractured + %d negatives; valid %d images per epoch", keras.backend.backend(), policy,
             int(split.fractured.sum()), int((~split.fractured).sum()), len(validator.records))

    ckpt = Path(args.checkpoint_dir) / args.model
    (ckpt / "epochs").mkdir(parents=True, exist_ok=True)
    meta = ckpt / "backup" / "training_metadata.json"
    start = int(json.loads(meta.read_text()).get("epoch", 0)) if meta.is_file() else 0  # epochs already finished
    model = start_model(args, start)
    schedule = args.lr if args.time_budget_minutes else lr_schedule(args.lr, args.epochs * args.steps_per_epoch, args.warmup_steps)
    compile_model(model, schedule, args.loss)
    valid_scoring = validator.settings(model)  # wraps the model once, as the first epoch end would
    log.info("valid scored with %s", valid_scoring)
    note_run(ckpt, args, command, policy, start, valid_scoring)
    rows = read_history(ckpt / "history.csv")
    minutes_offset = float(rows[-1].get("minutes") or 0.0) if rows else 0.0
    callbacks = make_callbacks(args, ckpt, validator, probe_x, schedule, best_so_far(ckpt, rows, args.monitor), minutes_offset)
    # Seeded by the first epoch too, so a resumed run draws new crops rather than replaying the first epochs'.
    data = crop_batches(split, args.batch_size, args.seed, start, fractured_share=args.fractured_share, workers=args.workers,
                        source_shares=source_shares(args), aug=AUGMENTS[args.augment])
    if args.teacher:
        from training.distill import load_teacher, teacher_targets

        data = teacher_targets(data, load_teacher(args.teacher), workers=args.workers)
    if start >= args.epochs:
        log.info("%s: all %d epochs done already (%s)", args.model, args.epochs, ckpt)
    else:
        log.info("training %s for epochs %d..%d x %d steps x %d", args.model, start + 1, args.epochs, args.steps_per_epoch, args.batch_size)
    model.fit(data, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, callbacks=callbacks, verbose=args.verbose, shuffle=False)
    return 0
