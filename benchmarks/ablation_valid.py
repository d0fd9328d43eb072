"""One row of the ablation: weights + inference settings scored on the valid split by evaluate's own code.

    python benchmarks/ablation_valid.py --model unet --weights checkpoints/gpu/phase1/half_unet/epochs/ep014.weights.h5 --native \
        [--low-ratio 0.8] [--max-findings 3] [--finding-score mean] [--tta] [--label TEXT]
    python benchmarks/ablation_valid.py --model unet --weights SEED.keras    # a .keras file at the 256x256 squeeze (the seed rows)

Runs ``evaluation.evaluator.evaluate`` with ``choose=True`` (threshold by the findings F1 at
IoU >= 0.25, borderline margin, image score, as ``evaluate.py --choose-threshold``) and prints
one JSON line of the key numbers; ``--yolo8`` adds the second source's valid part scored at the
threshold chosen on FracAtlas valid (keys ``yolo8_*``). Nothing is written.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from important_variables import ARCHITECTURES  # noqa: E402
from inference.findings import FINDING_SCORES  # noqa: E402


def load(name: str, weights: str):
    """A .weights.h5 snapshot into the size-free architecture, or a .keras file as saved."""
    import keras

    from create_segmentation_model import build_model

    if weights.endswith(".weights.h5"):
        model = build_model(name, (None, None, 3))
        model.load_weights(weights)
        return model
    return keras.saving.load_model(weights, compile=False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=ARCHITECTURES, required=True, help="architecture of the weights")
    p.add_argument("--weights", required=True, help=".keras file or epochs/epNNN.weights.h5 snapshot")
    p.add_argument("--native", action="store_true", help="whole images at the training scale (else the seed's 256x256 squeeze)")
    p.add_argument("--low-ratio", type=float, default=1.0, help="hysteresis: grow findings to this fraction of the threshold (1 = off)")
    p.add_argument("--max-findings", type=int, default=None, help="keep at most this many findings per image (default: all)")
    p.add_argument("--finding-score", choices=FINDING_SCORES, default="max", help="a finding's score: its region's max or mean probability")
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped pass")
    p.add_argument("--data", help="FracAtlas directory (default: $FRACATLAS_DIR, then the usual places)")
    p.add_argument("--yolo8", action="store_true", help="also score BoneFractureYolo8's valid part at the chosen threshold")
    p.add_argument("--label", default="", help="free text copied into the output line")
    args = p.parse_args(argv)

    from cli.common import require_data_dir
    from evaluation.evaluator import evaluate
    from fracture.dataset import FracAtlas
    from inference.manifest import ModelEntry
    from prediction import predictor_for

    findings = {"low_ratio": args.low_ratio, **({"max_findings": args.max_findings} if args.max_findings else {}),
                **({"score": args.finding_score} if args.finding_score != "max" else {})}
    entry = ModelEntry(args.model, {"inference": {"scale": "native" if args.native else "fixed", "tta": args.tta}, "findings": findings})
    t0 = time.time()
    predictor = predictor_for(load(args.model, args.weights), args.model, entry)
    ev = evaluate(predictor, FracAtlas(require_data_dir(args.data)), "valid", 0.5, choose=True, progress=False)
    r, tc = ev.report, ev.report["threshold_choice"] or {}
    second = {}
    if args.yolo8:
        from cli.common import require_yolo8_dir
        from fracture.bone_fracture_yolo8 import BoneFractureYolo8

        y = evaluate(predictor, BoneFractureYolo8(require_yolo8_dir()), "valid", r["threshold"], progress=False).report
        second = {"yolo8_dice": y["segmentation"]["dice_mean"], "yolo8_ap50": y["localization"]["ap50"],
                  "yolo8_ap25": y["localization"]["ap25"], "yolo8_top3_hit_rate": y["localization"]["top3_hit_rate"],
                  "yolo8_sensitivity": y["image_level"]["sensitivity"], "yolo8_n": y["counts"]["fractured_images"]}
    print(json.dumps({
        "label": args.label, "weights": args.weights, "native": args.native, "findings": findings, "tta": args.tta,
        "threshold": r["threshold"], "findings_f1_iou25": tc.get("value"),
        "dice": r["segmentation"]["dice_mean"], "dice_median": r["segmentation"]["dice_median"],
        "ap50": r["localization"]["ap50"], "ap25": r["localization"]["ap25"], "coco": r["localization"]["coco_fractured_only"],
        "auc": r["image_level"]["roc_auc_by_score"], "sensitivity": r["image_level"]["sensitivity"],
        "specificity": r["image_level"]["specificity"], "false_findings_per_negative": r["image_level"]["false_findings_per_negative_image"],
        "top3_hit_rate": r["localization"]["top3_hit_rate"], **second,
        "minutes": round((time.time() - t0) / 60, 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
