"""The callbacks of a training run, in the order their epoch ends run: the time budget, the valid
scores and the collapse probe, the best-model checkpoint, the per-epoch record, NaN stop, backup."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import keras
import numpy as np

from important_variables import CONFIG
from training.history import read_history, write_history_row
from training.recipe import time_lr

log = logging.getLogger("train")



#: Steps after which the collapse probe logs the highest fracture probability (an early
#: clipped-loss run fell to exactly 0 within 300 steps).
PROBE_EVERY, PROBE_UNTIL = 100, 600

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


class RunClock:
    """Training minutes of a run so far, earlier invocations included (``offset``: their minutes)."""

    def __init__(self, offset: float):
        self.offset, self.t0 = offset, time.time()

    def minutes(self) -> float:
        return self.offset + (time.time() - self.t0) / 60


class ValidScores(keras.callbacks.Callback):
    """Valid scores from ``evaluation.validator.Validator`` into the epoch logs; the collapse probe."""

    def __init__(self, args, ckpt: Path, validator, probe_x: np.ndarray, schedule, clock: RunClock):
        super().__init__()
        self.args, self.ckpt, self.validator, self.probe_x, self.schedule, self.clock = args, ckpt, validator, probe_x, schedule, clock

    def on_train_begin(self, logs=None):
        self.step = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        # A collapse to all-background shows early as a tiny maximum fracture probability. Steps are
        # counted here: under JAX the model's variables are brought up to date only on request.
        self.step += 1
        if self.step <= PROBE_UNTIL and self.step % PROBE_EVERY == 0:
            getattr(self.model, "jax_state_sync", lambda: None)()
            prob = keras.ops.convert_to_numpy(self.model(self.probe_x, training=False))[..., CONFIG.fracture_channel]
            log.info("step %d: max fracture probability on %d valid images %.4f", self.step, len(self.probe_x), float(prob.max()))

    def on_epoch_begin(self, epoch, logs=None):
        # Samples seen: the previous epoch's count plus this epoch's steps x batch, so that a
        # resume with another --batch-size keeps the earlier epochs' count right.
        self.step0 = int(self.model.optimizer.iterations.numpy())
        before = [r for r in read_history(self.ckpt / "history.csv") if int(float(r["epoch"])) == epoch - 1 and r.get("samples")]
        self.samples0 = int(float(before[0]["samples"])) if before else self.step0 * self.args.batch_size

    def on_epoch_end(self, epoch, logs=None):
        logs.update(valid_logs(self.validator.score(self.model, self.args.valid_threshold)))
        step = self.model.optimizer.iterations
        lr = self.schedule(step) if callable(self.schedule) else self.model.optimizer.learning_rate
        logs["lr"] = float(keras.ops.convert_to_numpy(lr))
        logs["samples"] = self.samples0 + (int(step.numpy()) - self.step0) * self.args.batch_size
        logs["minutes"] = round(self.clock.minutes(), 2)


class Record(keras.callbacks.Callback):
    """best.json when ModelCheckpoint kept a new best, the epoch's snapshot, the history row, one log line."""

    def __init__(self, args, ckpt: Path, checkpoint: keras.callbacks.ModelCheckpoint):
        super().__init__()
        self.args, self.ckpt, self.checkpoint = args, ckpt, checkpoint
        self.best = checkpoint.best

    def on_epoch_end(self, epoch, logs=None):
        if self.checkpoint.best != self.best:
            self.best = self.checkpoint.best
            (self.ckpt / "best.json").write_text(json.dumps({"epoch": epoch + 1, "monitor": self.args.monitor, "value": float(self.best)}))
        save_weights_only(self.model, self.args.model, self.ckpt / "epochs" / f"ep{epoch + 1:03d}.weights.h5")
        write_history_row(self.ckpt / "history.csv", {"epoch": epoch, **{k: float(v) if not isinstance(v, int) else v for k, v in logs.items()}})
        log.info("epoch %d: %s", epoch + 1, json.dumps({k: round(float(v), 4) for k, v in logs.items()}))


class TimeBudget(keras.callbacks.Callback):
    """``--time-budget-minutes``: the learning rate of :func:`time_lr` at each epoch start; stop once the time is spent."""

    def __init__(self, args, clock: RunClock):
        super().__init__()
        self.args, self.clock = args, clock

    def fraction(self) -> float:
        return self.clock.minutes() / self.args.time_budget_minutes

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate = time_lr(self.args.lr, self.fraction(), epoch)

    def on_epoch_end(self, epoch, logs=None):
        if self.fraction() >= 1.0:
            log.info("time budget of %.1f minutes spent after epoch %d", self.args.time_budget_minutes, epoch + 1)
            self.model.stop_training = True


def make_callbacks(args, ckpt: Path, validator, probe_x: np.ndarray, schedule, best_so_far: float | None, minutes_offset: float):
    """The callback list of one run, in the order their epoch ends must run (valid scores first, backup last)."""
    clock = RunClock(minutes_offset)
    checkpoint = keras.callbacks.ModelCheckpoint(str(ckpt / "best.keras"), monitor=args.monitor, mode="max", save_best_only=True,
                                                 initial_value_threshold=best_so_far)
    timed = [TimeBudget(args, clock)] if args.time_budget_minutes else []
    return [
        *timed,
        ValidScores(args, ckpt, validator, probe_x, schedule, clock),
        checkpoint,
        Record(args, ckpt, checkpoint),
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
