"""Train one of the two segmentation models on FracAtlas, resumably.

    python train.py --model unet --epochs 40 [--data DIR] [--crop 128] [--batch-size 8]
                    [--strategy {default,mirrored,multiworker}] [--time-budget-min M]

Each epoch ends with a checkpoint in ``checkpoints/<model>/`` (model + optimizer +
state); rerunning the same command continues after the last finished epoch. The
weights with the best valid Dice go to ``Saved_model/<model>.keras`` with their
SHA-256 in ``Saved_model/manifest.json``; the history to
``Saved_model/<model>.history.csv`` and ``Saved_model/<model>.history.png``.

Loss: categorical cross-entropy + soft Dice on the fracture channel summed over
the whole batch (see utils.py for why the batch form). Valid Dice is the mean of
per-image Dice at threshold 0.5 over the fractured valid images at 256x256.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from cli_common import DefaultsFormatter, UsageError, report_usage_error, require_data_dir
from important_variables import CONFIG, MODEL_NAMES
from model_manifest import MANIFEST_NAME

log = logging.getLogger("train")

HISTORY_FIELDS = ["epoch", "phase", "lr", "train_loss", "valid_loss", "valid_dice", "valid_dice_soft", "valid_neg_clean", "score", "seconds"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=DefaultsFormatter)
    p.add_argument("--model", choices=MODEL_NAMES, required=True, help="which architecture to train (required)")
    p.add_argument("--epochs", type=int, required=True, help="total epochs; a resumed run continues up to this (required)")
    p.add_argument("--data", help="FracAtlas directory (default: $FRACATLAS_DIR, fracture/FracAtlas, ../shared/data/FracAtlas)")
    p.add_argument("--crop", type=int, default=128, help="training crop size in px of the 256-px frame; 0 = full frame")
    p.add_argument("--batch-size", type=int, default=8, help="crops per training step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine decay to 5%% over --epochs)")
    p.add_argument("--neg-per-epoch", type=int, default=200, help="negative (no fracture) images per epoch, beside all fractured")
    p.add_argument("--focus", type=float, default=0.7, help="share of fractured crops centred on a fracture")
    p.add_argument("--strategy", choices=["default", "mirrored", "multiworker"], default="default",
                   help="tf.distribute strategy: one device, all local GPUs, or workers from $TF_CONFIG")
    p.add_argument("--time-budget-min", type=float, default=None,
                   help="stop after the epoch that passes this many minutes (default: no time limit)")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="cap on steps per epoch, for smoke tests (default: no cap)")
    p.add_argument("--limit", type=int, default=None,
                   help="use only N fractured + N negative images per split, for smoke tests (default: all images)")
    p.add_argument("--valid-negatives", type=int, default=82, help="valid negatives used for the valid loss")
    p.add_argument("--init-from", help="start from the weights of this .keras file, i.e. fine-tune (default: fresh weights)")
    p.add_argument("--select-on", choices=["dice", "balanced"], default="dice",
                   help="best = valid Dice@0.5 (fractured), or its mean with the share of clean valid negatives")
    p.add_argument("--out-dir", default=str(CONFIG.saved_model_dir), help="where the trained .keras, history and manifest go")
    p.add_argument("--checkpoint-dir", default=str(CONFIG.checkpoint_dir), help="where the resumable checkpoint goes")
    p.add_argument("--seed", type=int, default=CONFIG.seed, help="random seed")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2], help="Keras progress: 0 silent, 1 bar, 2 one line per epoch")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def make_strategy(name: str):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        # Reads the cluster from $TF_CONFIG; on one machine without it, a single worker.
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def cosine_lr(epoch: int, total: int, peak: float) -> float:
    """Cosine decay from ``peak`` to 5 % of it over ``total`` epochs (a function of the epoch only)."""
    floor = 0.05 * peak
    t = min(epoch / max(total - 1, 1), 1.0)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * t))


def compile_model(model, lr: float):
    import keras

    import utils

    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=utils.ce_dice_loss,
        metrics=[utils.jaccard_index, utils.dice_coef],
    )
    return model


def evaluate_valid(predict_fn, x: np.ndarray, y: np.ndarray, fractured: np.ndarray, batch: int = 16) -> dict:
    """Valid figures on full 256-px frames.

    loss: mean training loss; dice: mean per-image Dice@0.5 on the fractured images;
    dice_soft: the same with probabilities; neg_clean: share of the negatives without
    any finding at 0.5 (the app's "no fracture found").
    """
    import utils
    from metrics import dice_score
    from prediction import find_findings

    losses, dices, soft, clean = [], [], [], []
    for s in range(0, len(x), batch):
        prob = np.asarray(predict_fn(x[s : s + batch]))
        yb = y[s : s + batch]
        losses.append(float(utils.ce_dice_loss(yb, prob)) * len(yb))
        for i in range(len(yb)):
            t = yb[i, ..., 1]
            p = prob[i, ..., 1]
            if fractured[s + i]:
                dices.append(dice_score(p >= 0.5, t > 0.5))
                soft.append(float(2 * (t * p).sum() / (t.sum() + p.sum() + 1e-6)))
            else:
                clean.append(float(not find_findings(p, 0.5)))

    def mean(v):
        return float(np.mean(v)) if v else float("nan")

    return {"loss": sum(losses) / len(x), "dice": mean(dices), "dice_soft": mean(soft), "neg_clean": mean(clean)}


def selection_score(v: dict, select_on: str) -> float:
    """What "best" means: valid Dice alone, or its mean with the negatives' clean rate
    (so that a model that marks fewer negatives can win at a similar Dice)."""
    if select_on == "balanced" and not np.isnan(v["neg_clean"]):
        return 0.5 * (v["dice"] + v["neg_clean"])
    return v["dice"]


def save_shipped(model, name: str, out_dir: Path, info: dict) -> Path:
    """Write the inference copy (no optimizer state) and its manifest entry."""
    from create_segmentation_model import build_model
    from model_manifest import model_entry, read_manifest, sha256_file, update_entry

    out_dir.mkdir(parents=True, exist_ok=True)
    clean = build_model(name)
    clean.set_weights(model.get_weights())
    compile_model(clean, 1e-3)  # compiled so the file carries the custom loss; optimizer unbuilt = no state
    path = out_dir / CONFIG.model_files[name]
    tmp = path.with_name(path.stem + ".tmp.keras")
    clean.save(tmp)
    os.replace(tmp, path)
    manifest_path = out_dir / MANIFEST_NAME
    old = model_entry(name, read_manifest(manifest_path)).data
    changes = {**info, "file": path.name, "sha256": sha256_file(path), "params": int(clean.count_params())}
    if "threshold" not in old and "threshold" not in changes:
        changes["threshold"] = CONFIG.default_threshold
    if "threshold_source" not in old and "threshold_source" not in changes:
        changes["threshold_source"] = "default (not yet chosen on valid)"
    update_entry(name, changes, manifest_path)
    return path


def _prior_training(out_dir: Path, args) -> dict:
    """Manifest facts of the run that produced ``--init-from`` (when it is the shipped file), frozen at start.

    Stored in the checkpoint directory so that a resumed fine-tuning run still
    reports the first phase, even after it has overwritten the manifest entry.
    """
    from model_manifest import model_entry, read_manifest

    frozen = Path(args.checkpoint_dir) / args.model / "prior.json"
    if frozen.is_file():
        return json.loads(frozen.read_text())
    prior = {}
    entry = model_entry(args.model, read_manifest(out_dir / MANIFEST_NAME)).data
    if entry and Path(args.init_from).resolve() == (out_dir / entry.get("file", "")).resolve():
        prior = {k: entry[k] for k in ("training_command", "epochs", "training_minutes") if k in entry}
        hist = out_dir / f"{args.model}.history.csv"
        if hist.is_file():
            with open(hist, newline="", encoding="utf-8") as fh:
                prior["history"] = [
                    {k: v if k == "phase" else float(v) if v not in ("", None) else float("nan") for k, v in row.items()} for row in csv.DictReader(fh)
                ]
    frozen.parent.mkdir(parents=True, exist_ok=True)
    frozen.write_text(json.dumps(prior))
    return prior


def write_history(rows: list[dict], out_dir: Path, name: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f"{name}.history.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=HISTORY_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in HISTORY_FIELDS})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, ax1 = plt.subplots(figsize=(7, 4), dpi=100)
    ax1.plot(ep, [r["train_loss"] for r in rows], label="train loss")
    ax1.plot(ep, [r["valid_loss"] for r in rows], label="valid loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss (CE + batch Dice)")
    ax2 = ax1.twinx()
    ax2.plot(ep, [r["valid_dice"] for r in rows], "g-", label="valid Dice@0.5")
    clean = [r.get("valid_neg_clean") for r in rows]
    if any(c is not None and c == c for c in clean):  # c == c is False for NaN
        ax2.plot(ep, [float("nan") if c is None else c for c in clean], "m--", label="valid negatives clean")
    ax2.set_ylabel("valid Dice (fractured) / clean share (negatives)")
    ax2.set_ylim(0, 1)
    for prev, cur in zip(rows, rows[1:], strict=False):
        if prev.get("phase") != cur.get("phase"):  # mark where fine-tuning started
            ax1.axvline(prev["epoch"] + 0.5, color="grey", linestyle=":", label=f"→ {cur.get('phase')}")
    lines = ax1.get_lines() + ax2.get_lines()
    ax1.legend(lines, [ln.get_label() for ln in lines], loc="upper right")
    ax1.set_title(f"{name}: training history")
    fig.tight_layout()
    fig.savefig(out_dir / f"{name}.history.png")
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        data_dir = require_data_dir(args.data)
    except UsageError as exc:
        return report_usage_error("train.py", exc)

    import quiet_tf

    quiet_tf.import_tensorflow()  # before Keras: no TensorFlow start-up lines
    import keras

    from create_segmentation_model import build_model
    from fracture.dataset import FracAtlas
    from fracture.pipeline import full_frame_arrays, load_split_arrays, make_train_dataset

    keras.utils.set_random_seed(args.seed)
    ds = FracAtlas(data_dir)
    train = load_split_arrays(ds, "train", limit=args.limit)
    valid = load_split_arrays(ds, "valid", limit=args.limit)
    keep = np.concatenate([np.flatnonzero(valid.fractured), np.flatnonzero(~valid.fractured)[: args.valid_negatives]])
    valid = valid.subset(keep)
    vx, vy = full_frame_arrays(valid)
    log.info(
        "train: %d fractured + %d negatives (%d per epoch); valid: %d fractured + %d negatives; %d + %d unreadable skipped",
        int(train.fractured.sum()), int((~train.fractured).sum()), args.neg_per_epoch,
        int(valid.fractured.sum()), int((~valid.fractured).sum()), len(train.skipped), len(valid.skipped),
    )

    ckpt_dir = Path(args.checkpoint_dir) / args.model
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state_path, last_path = ckpt_dir / "state.json", ckpt_dir / "last.keras"
    out_dir = Path(args.out_dir)
    strategy = make_strategy(args.strategy)
    with strategy.scope():
        if state_path.is_file() and last_path.is_file():
            state = json.loads(state_path.read_text())
            model = keras.saving.load_model(last_path, compile=True, safe_mode=True)
            state.setdefault("best_score", state.get("best_dice", -1.0))
            log.info("resuming %s after epoch %d (best %s score %.4f)", args.model, state["epoch"], args.select_on, state["best_score"])
        else:
            state = {"epoch": 0, "best_score": -1.0, "best_epoch": 0, "history": [], "seconds": 0.0}
            # Fully convolutional: train on crops with a size-free input; the shipped copy is 256x256.
            model = build_model(args.model, input_shape=(None, None, CONFIG.input_channels))
            if args.init_from:
                model.set_weights(keras.saving.load_model(args.init_from, compile=False).get_weights())
                log.info("initialised from %s", args.init_from)
            compile_model(model, args.lr)

    import tensorflow as tf

    spec = tf.TensorSpec([None, CONFIG.input_size, CONFIG.input_size, CONFIG.input_channels], tf.float32)
    predict_fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    command = "python train.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    prior = _prior_training(out_dir, args) if args.init_from else {}
    if args.init_from and state["epoch"] == 0 and state["best_score"] < 0:
        # Fine-tuning: the starting weights are the bar to beat, so a worse first
        # epoch never replaces the shipped model.
        start = evaluate_valid(predict_fn, vx, vy, valid.fractured)
        state["best_score"] = selection_score(start, args.select_on)
        log.info("starting weights: valid Dice@0.5 %.4f, clean negatives %.3f, %s score %.4f",
                 start["dice"], start["neg_clean"], args.select_on, state["best_score"])
    t_start = time.time()
    try:
        for epoch in range(state["epoch"], args.epochs):
            t0 = time.time()
            lr = cosine_lr(epoch, args.epochs, args.lr)
            model.optimizer.learning_rate.assign(lr)
            data = make_train_dataset(
                train, crop=args.crop, batch_size=args.batch_size, neg_per_epoch=args.neg_per_epoch,
                focus_p=args.focus, seed=args.seed, epoch=epoch, steps=args.steps_per_epoch,
            )
            if args.strategy != "default":
                data = strategy.experimental_distribute_dataset(data)
            hist = model.fit(data, epochs=epoch + 1, initial_epoch=epoch, verbose=args.verbose)
            train_loss = float(hist.history["loss"][-1])
            v = evaluate_valid(predict_fn, vx, vy, valid.fractured)
            score = selection_score(v, args.select_on)
            secs = time.time() - t0
            row = dict(epoch=epoch + 1, phase=f"crop{args.crop}" if args.crop else "full", lr=round(lr, 7),
                       train_loss=round(train_loss, 5), valid_loss=round(v["loss"], 5), valid_dice=round(v["dice"], 5),
                       valid_dice_soft=round(v["dice_soft"], 5), valid_neg_clean=round(v["neg_clean"], 4),
                       score=round(score, 5), seconds=round(secs, 1))
            state["history"].append(row)
            state["epoch"] = epoch + 1
            state["seconds"] = state.get("seconds", 0.0) + secs
            improved = score > state["best_score"]
            if improved:
                state["best_score"], state["best_epoch"] = score, epoch + 1
                save_shipped(model, args.model, out_dir, {
                    "training_command": " && ".join(c for c in (prior.get("training_command"), command) if c),
                    "epochs": prior.get("epochs", 0) + epoch + 1,
                    "valid_dice_at_0.5": round(v["dice"], 4),
                    "valid_dice_note": "mean per-image Dice@0.5 on the fractured valid images at 256x256",
                    "valid_negatives_clean_at_0.5": round(v["neg_clean"], 4),
                    "selected_on": args.select_on,
                    "training_minutes": round(prior.get("training_minutes", 0.0) + state["seconds"] / 60, 1),
                    "loss": "categorical cross-entropy + batch soft Dice (fracture channel)",
                })
            # Checkpoint last: a kill during the save above leaves the previous epoch resumable.
            tmp = last_path.with_name("last.tmp.keras")
            model.save(tmp)
            os.replace(tmp, last_path)
            state_path.write_text(json.dumps(state, indent=1))
            earlier = prior.get("history", [])
            offset = int(earlier[-1]["epoch"]) if earlier else 0
            write_history(earlier + [{**r, "epoch": r["epoch"] + offset} for r in state["history"]], out_dir, args.model)
            log.info(
                "epoch %d/%d  lr %.2e  train loss %.4f  valid loss %.4f  valid Dice@0.5 %.4f (soft %.4f)  clean negatives %.3f%s  %.0fs",
                epoch + 1, args.epochs, lr, train_loss, v["loss"], v["dice"], v["dice_soft"], v["neg_clean"],
                "  * best" if improved else "", secs,
            )
            if args.time_budget_min is not None and (time.time() - t_start) / 60 > args.time_budget_min:
                log.info("time budget of %.1f min reached after epoch %d; rerun the same command to continue", args.time_budget_min, epoch + 1)
                break
    except KeyboardInterrupt:
        log.warning("interrupted; the last finished epoch (%d) is checkpointed, rerun the same command to resume", state["epoch"])
        return 130
    log.info("best valid %s score %.4f at epoch %d; weights in %s", args.select_on, state["best_score"], state["best_epoch"], out_dir / CONFIG.model_files[args.model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
