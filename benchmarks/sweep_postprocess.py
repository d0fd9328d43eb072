"""Ablation of the inference-side levers of issue 9 on the valid split, from one set of weights.

    python benchmarks/sweep_postprocess.py --model unet --weights checkpoints/native/unet/best.keras [--tta] [--scale native|256]

One forward pass per valid image (fractured + negatives, truncated files skipped), then a
sweep of thresholds x hysteresis x top-k findings on the cached maps, printing per setting:
Dice (mean/median over fractured images, mask = the kept findings), box AP@50/AP@25 with
negatives included (metrics.average_precision), false findings per negative, and the image
ROC-AUC of each image-level score. --scale 256 squeezes every image to 256x256 as the
shipped seed pipeline did (the "native scale off" row of the ablation).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from findings import IMAGE_SCORES, FindingRule, image_scores, regions  # noqa: E402
from important_variables import CONFIG, MODEL_NAMES, resolve_data_dir  # noqa: E402

log = logging.getLogger("sweep")


def load_variable_model(name: str, weights: str):
    """The named architecture with a size-free input, carrying the weights of ``weights`` (.keras or .weights.h5)."""
    import keras

    from create_segmentation_model import build_model

    model = build_model(name, input_shape=(None, None, CONFIG.input_channels))
    if weights.endswith(".weights.h5"):
        model.load_weights(weights)
    else:
        model.set_weights(keras.saving.load_model(weights, compile=False).get_weights())
    return model


def forward_maps(model, images: list[np.ndarray], scale: str, tta: bool) -> list[np.ndarray]:
    """Fracture probability (h, w) float32 per native-scale uint8 image."""
    import cv2
    import tensorflow as tf

    from fracture.native import pad_to_multiple

    spec = tf.TensorSpec([None, None, None, CONFIG.input_channels], tf.float32)
    fwd = tf.function(lambda x: model(x, training=False)[..., CONFIG.fracture_channel], input_signature=[spec])
    out = []
    for img in images:
        h, w = img.shape
        g = img.astype(np.float32) / 255.0
        if scale == "256":
            g = cv2.resize(g, (CONFIG.input_size, CONFIG.input_size), interpolation=cv2.INTER_AREA)
        x = pad_to_multiple(g)
        batch = np.repeat(x[None, ..., None], CONFIG.input_channels, axis=-1)
        if tta:
            batch = np.concatenate([batch, batch[:, :, ::-1]])
        p = fwd(batch).numpy()
        prob = p[0] if not tta else 0.5 * (p[0] + p[1][:, ::-1])
        prob = prob[: g.shape[0], : g.shape[1]]
        if scale == "256":
            prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        out.append(np.ascontiguousarray(prob, np.float32))
    return out


def score_setting(maps, masks, boxes, fractured, threshold: float, rule: FindingRule) -> dict:
    from metrics import average_precision, dice_score, match_boxes, roc_auc

    dices, neg_findings = [], []
    det = {0.5: ([], []), 0.25: ([], [])}
    n_truth = 0
    img_scores = {k: [] for k in IMAGE_SCORES}
    for prob, mask, tb, frac in zip(maps, masks, boxes, fractured, strict=True):
        found, labels = regions(prob, threshold, rule)
        for k, v in image_scores(prob, [f[0] for f in found], rule).items():
            img_scores[k].append(v)
        if frac:
            dices.append(dice_score(labels > 0, mask > 0))
            n_truth += len(tb)
        else:
            neg_findings.append(len(found))
        if found:
            s = np.array([f[0] for f in found])
            b = np.array([f[1] for f in found], np.float64)
            for iou, (ss, tt) in det.items():
                ss.append(s)
                tt.append(match_boxes(b, s, tb if frac else np.zeros((0, 4)), iou))
    labels_arr = np.array(fractured, bool)
    res = {
        "threshold": threshold, "low_ratio": rule.low_ratio, "max_findings": rule.max_findings,
        "dice_mean": float(np.mean(dices)), "dice_median": float(np.median(dices)),
        "false_findings_per_negative": float(np.mean(neg_findings)),
        "negatives_clean": float(np.mean(np.array(neg_findings) == 0)),
    }
    for iou, (ss, tt) in det.items():
        s = np.concatenate(ss) if ss else np.zeros(0)
        t = np.concatenate(tt) if tt else np.zeros(0, bool)
        res[f"ap{round(iou * 100)}"] = average_precision(s, t, n_truth)
    for k, v in img_scores.items():
        res[f"auc_{k}"] = roc_auc(np.array(v), labels_arr)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=MODEL_NAMES, required=True, help="architecture of the weights")
    p.add_argument("--weights", required=True, help=".keras or .weights.h5 file")
    p.add_argument("--data", help="FracAtlas directory")
    p.add_argument("--scale", choices=["native", "256"], default="native", help="inference scale")
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped pass")
    p.add_argument("--thresholds", default="0.3,0.4,0.5,0.6,0.7,0.8,0.9", help="comma-separated thresholds")
    p.add_argument("--low-ratios", default="1.0,0.6", help="comma-separated hysteresis ratios (1.0 = off)")
    p.add_argument("--max-findings", default="0,3", help="comma-separated caps (0 = no cap)")
    p.add_argument("--limit", type=int, default=None, help="first N fractured + N negatives only")
    p.add_argument("--out", help="write all rows as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from fracture.dataset import FracAtlas
    from fracture.native import load_native_split

    ds = FracAtlas(resolve_data_dir(args.data))
    split = load_native_split(ds, "valid", limit=args.limit)
    recs = {r.image_id: r for r in ds.records("valid")}
    boxes = [recs[i].boxes() * s if f else np.zeros((0, 4)) for i, f, s in zip(split.ids, split.fractured, split.scales, strict=True)]
    model = load_variable_model(args.model, args.weights)
    t0 = time.time()
    maps = forward_maps(model, split.images, args.scale, args.tta)
    secs = time.time() - t0
    rows = []
    for t, lr, mf in itertools.product(
        [float(x) for x in args.thresholds.split(",")], [float(x) for x in args.low_ratios.split(",")], [int(x) for x in args.max_findings.split(",")]
    ):
        rows.append(score_setting(maps, split.masks, boxes, split.fractured, t, FindingRule(low_ratio=lr, max_findings=mf or None)))
    cols = ["threshold", "low_ratio", "max_findings", "dice_mean", "dice_median", "ap50", "ap25", "false_findings_per_negative",
            "negatives_clean"] + [f"auc_{k}" for k in IMAGE_SCORES]
    print(f"# {args.weights} scale={args.scale} tta={args.tta}: {int(split.fractured.sum())} fractured + "
          f"{int((~split.fractured).sum())} negative valid images, forward {secs:.1f} s")
    print("\t".join(cols))
    for r in rows:
        print("\t".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    if args.out:
        Path(args.out).write_text(json.dumps({"weights": args.weights, "scale": args.scale, "tta": args.tta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
