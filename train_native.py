"""Train one segmentation model at native pixel scale, resumably (the recipe of issue 9).

    python train_native.py --model unet --epochs 30 [--steps-per-epoch 256] [--batch-size 8]
                           [--lr 5e-4] [--init-from Saved_model/unet.keras] [--checkpoint-dir checkpoints/native]

- Data: 256x256 crops of images kept at their own scale (long side <= 454 px), a 50/50
  sampler of fracture-centred crops of fractured images and random crops of negatives;
  flips, ±12° rotation, ±10 % scale, brightness/contrast jitter.
- Loss: cross-entropy on every sample + per-image soft Dice on samples with fracture.
- Keras runs the plumbing: ``BackupAndRestore`` (rerun the same command after a kill),
  a cosine learning-rate schedule over all steps, ``ModelCheckpoint`` of the best valid
  Dice, and one weights snapshot per epoch (``epochs/epNNN.weights.h5``) so that the
  final choice can be made by ``evaluate.py``'s own validator.
- Precision: ``mixed_bfloat16`` where the CPU has AMX, float32 otherwise (``--precision``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from important_variables import CONFIG, MODEL_NAMES, is_fracatlas_dir, resolve_data_dir

log = logging.getLogger("train")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=MODEL_NAMES, required=True, help="which architecture to train")
    p.add_argument("--epochs", type=int, required=True, help="total epochs of --steps-per-epoch steps (a resumed run continues up to this)")
    p.add_argument("--steps-per-epoch", type=int, default=256, help="training steps per epoch")
    p.add_argument("--batch-size", type=int, default=8, help="crops per step")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate of the cosine schedule (decays to 5 %%)")
    p.add_argument("--warmup-steps", type=int, default=100, help="linear warm-up steps before the cosine decay")
    p.add_argument("--fractured-share", type=float, default=0.5, help="share of samples that are fracture-centred crops")
    p.add_argument("--data", help="FracAtlas directory (default: $FRACATLAS_DIR, fracture/FracAtlas, ../shared/data/FracAtlas)")
    p.add_argument("--init-from", help="start from the weights of this .keras file")
    p.add_argument("--checkpoint-dir", default=str(CONFIG.checkpoint_dir / "native"), help="where backup, best and snapshots go")
    p.add_argument("--valid-negatives", type=int, default=82, help="valid negatives scored each epoch beside all fractured valid images")
    p.add_argument("--precision", choices=["auto", "float32", "mixed_bfloat16"], default="auto", help="Keras dtype policy; auto = bf16 only on AMX")
    p.add_argument("--limit", type=int, default=None, help="only N fractured + N negative images per split (smoke tests)")
    p.add_argument("--seed", type=int, default=CONFIG.seed, help="random seed")
    p.add_argument("--verbose", type=int, default=2, choices=[0, 1, 2], help="Keras progress output")
    return p.parse_args(argv)


def pad16(gray: np.ndarray) -> np.ndarray:
    from fracture.native import pad_to_multiple

    return pad_to_multiple(gray)


def valid_scores(forward, split, threshold: float = 0.5) -> dict:
    """Per-image Dice@threshold on fractured valid images (whole image, native scale), image AUC of the
    maximum probability, share of negatives whose maximum stays below threshold."""
    from metrics import dice_score, roc_auc

    dices, maxes, labels = [], [], []
    for img, msk, frac in zip(split.images, split.masks, split.fractured, strict=True):
        h, w = img.shape
        x = pad16(img.astype(np.float32) / 255.0)
        prob = forward(np.repeat(x[None, ..., None], CONFIG.input_channels, axis=-1))[0, :h, :w]
        maxes.append(float(prob.max()))
        labels.append(bool(frac))
        if frac:
            dices.append(dice_score(prob >= threshold, msk > 0))
    maxes, labels = np.array(maxes), np.array(labels)
    neg = maxes[~labels]
    return {
        "val_dice": float(np.mean(dices)) if dices else float("nan"),
        "val_dice_median": float(np.median(dices)) if dices else float("nan"),
        "val_auc_max": roc_auc(maxes, labels) if labels.any() and (~labels).any() else float("nan"),
        "val_neg_clean": float(np.mean(neg < threshold)) if len(neg) else float("nan"),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_dir = resolve_data_dir(args.data)
    if not is_fracatlas_dir(data_dir):
        log.error("FracAtlas not found (%s); pass --data DIR or set $%s", data_dir, CONFIG.data_env_var)
        return 2

    import keras
    import tensorflow as tf

    import utils
    from create_segmentation_model import build_model, choose_precision
    from fracture.dataset import FracAtlas
    from fracture.native import crop_dataset, load_native_split

    policy = choose_precision(args.precision)
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(args.seed)
    ds = FracAtlas(data_dir)
    train = load_native_split(ds, "train", limit=args.limit)
    valid = load_native_split(ds, "valid", limit=args.limit)
    neg_idx = np.flatnonzero(~valid.fractured)[: args.valid_negatives]
    keep = np.concatenate([np.flatnonzero(valid.fractured), neg_idx])
    valid.images = [valid.images[i] for i in keep]
    valid.masks = [valid.masks[i] for i in keep]
    valid.fractured = valid.fractured[keep]
    log.info("policy %s; train %d fractured + %d negatives; valid %d + %d", policy, int(train.fractured.sum()),
             int((~train.fractured).sum()), int(valid.fractured.sum()), int((~valid.fractured).sum()))

    ckpt = Path(args.checkpoint_dir) / args.model
    (ckpt / "epochs").mkdir(parents=True, exist_ok=True)
    model = build_model(args.model, input_shape=(None, None, CONFIG.input_channels))
    if args.init_from:
        model.set_weights(keras.saving.load_model(args.init_from, compile=False).get_weights())
        log.info("initialised from %s", args.init_from)
    total = args.epochs * args.steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        args.lr * 0.1, decay_steps=max(total - args.warmup_steps, 1), alpha=0.05,
        warmup_target=args.lr, warmup_steps=args.warmup_steps,
    )
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=utils.ce_dice_fractured_loss, metrics=[utils.dice_coef])

    spec = tf.TensorSpec([None, None, None, CONFIG.input_channels], tf.float32)
    fwd = tf.function(lambda x: tf.cast(model(x, training=False)[..., CONFIG.fracture_channel], tf.float32), input_signature=[spec])

    def forward(x):
        return fwd(x).numpy()

    probe = [i for i in np.flatnonzero(valid.fractured)[:4]]

    class Validate(keras.callbacks.Callback):
        """Adds the native-scale valid scores to the epoch logs (read by ModelCheckpoint and CSVLogger)."""

        def __init__(self):
            super().__init__()
            self.t0 = time.time()

        def on_train_batch_end(self, batch, logs=None):
            # Catch a collapse to all-background early: the highest fracture probability on a few valid images.
            step = int(self.model.optimizer.iterations.numpy())
            if step <= 600 and step % 100 == 0:
                mx = max(float(forward(np.repeat(pad16(valid.images[i].astype(np.float32) / 255.0)[None, ..., None], 3, -1)).max())
                         for i in probe)
                log.info("step %d: max fracture probability on 4 valid images %.4f", step, mx)

        def on_epoch_end(self, epoch, logs=None):
            v = valid_scores(forward, valid)
            logs.update(v)
            logs["lr"] = float(keras.ops.convert_to_numpy(schedule(self.model.optimizer.iterations)))
            logs["samples"] = int(self.model.optimizer.iterations.numpy()) * args.batch_size
            logs["minutes"] = round((time.time() - self.t0) / 60, 2)
            self.model.save_weights(ckpt / "epochs" / f"ep{epoch + 1:03d}.weights.h5")
            log.info("epoch %d: %s", epoch + 1, json.dumps({k: round(float(x), 4) for k, x in logs.items()}))

    backup = keras.callbacks.BackupAndRestore(str(ckpt / "backup"), save_freq="epoch", delete_checkpoint=False)
    # BackupAndRestore restores the epoch counter inside fit(); read it here too, so that
    # a resumed run draws new crops rather than replaying the first epochs' ones.
    meta = ckpt / "backup" / "training_metadata.json"
    start = json.loads(meta.read_text()).get("epoch", -1) + 1 if meta.is_file() else 0
    data = crop_dataset(train, args.batch_size, args.seed, start, fractured_share=args.fractured_share)
    callbacks = [
        backup,
        Validate(),
        keras.callbacks.ModelCheckpoint(str(ckpt / "best.keras"), monitor="val_dice", mode="max", save_best_only=True),
        keras.callbacks.CSVLogger(str(ckpt / "history.csv"), append=True),
        keras.callbacks.TerminateOnNaN(),
    ]
    log.info("training %s for %d epochs x %d steps x %d (starting at epoch %d)", args.model, args.epochs, args.steps_per_epoch, args.batch_size, start)
    model.fit(data, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, callbacks=callbacks, verbose=args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
