"""How far a finding grows (the hysteresis ``low_ratio``), swept on valid without calling the model again.

    python benchmarks/finding_rule_sweep.py --model lite0_unet [--weights SNAPSHOT] \
        [--ratios 0.3 0.5 0.8 1.0] [--yolo8]

Runs the model (its manifest entry's inference settings and finding rule; ``--weights`` swaps
in a snapshot) once over FracAtlas valid, and with ``--yolo8`` over BoneFractureYolo8's valid
part; then for each ratio re-cuts the findings from the cached maps and chooses the threshold,
margin and image score on FracAtlas valid exactly as ``evaluate.py --choose-threshold`` does.
Prints one JSON line per ratio: the chosen threshold, the findings F1 there, and the valid
numbers of both sources at that threshold. The test split is not read. Nothing is written.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from important_variables import MODEL_NAMES  # noqa: E402

#: Grow levels tried by default, as fractions of the threshold (1 = plain thresholding).
RATIOS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)


def recut(cases: list, low_ratio: float) -> list:
    """The same maps with findings cut under ``low_ratio`` (every other rule field kept)."""
    from evaluation.cases import Case

    return [Case(c.record, c.result.with_rule(replace(c.result.rule, low_ratio=low_ratio))) for c in cases]


def numbers(scored: dict) -> dict:
    """The sweep's columns of one ``score_cases`` report."""
    seg, loc, img = scored["segmentation"], scored["localization"], scored["image_level"]
    return {"dice": seg["dice_mean"], "ap50": loc["ap50"], "ap25": loc["ap25"], "top3_hit_rate": loc["top3_hit_rate"],
            "auc": img["roc_auc"], "sensitivity": img["sensitivity"],
            "false_findings_per_negative": img["false_findings_per_negative_image"]}


def valid_sources(data: str | None, yolo8: bool) -> dict:
    """{"fracatlas": FracAtlas, and with ``yolo8`` "yolo8": BoneFractureYolo8}: the data sets a sweep scores on."""
    from cli.common import require_data_dir
    from fracture.dataset import FracAtlas

    sources = {"fracatlas": FracAtlas(require_data_dir(data))}
    if yolo8:
        from cli.common import require_yolo8_dir
        from fracture.bone_fracture_yolo8 import BoneFractureYolo8

        sources["yolo8"] = BoneFractureYolo8(require_yolo8_dir())
    return sources


def scored_by_source(cached: dict, valid: list, threshold: float, recast) -> dict:
    """{source: :func:`numbers` at ``threshold``}: FracAtlas valid as ``valid`` (the cases the threshold was chosen
    on), every other source's cached cases through ``recast`` (the same change of rule or map)."""
    from evaluation.scoring import score_cases

    return {key: numbers(score_cases(valid if key == "fracatlas" else recast(cases), threshold)) for key, cases in cached.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=MODEL_NAMES, required=True, help="a shipped model (its manifest entry's settings)")
    p.add_argument("--weights", help="epochs/epNNN.weights.h5 snapshot of that architecture (default: the shipped file)")
    p.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS), help="grow levels, fractions of the threshold")
    p.add_argument("--data", help="FracAtlas directory (default: $FRACATLAS_DIR, then the usual places)")
    p.add_argument("--yolo8", action="store_true", help="also score BoneFractureYolo8's valid part at each chosen threshold")
    p.add_argument("--limit", type=int, help="first N fractured + N negative valid images (a smoke run; not for the docs)")
    args = p.parse_args(argv)
    if any(not 0 < r <= 1 for r in args.ratios):
        p.error("--ratios: each must be in (0, 1]")

    from create_segmentation_model import build_model, load_named_model
    from evaluation.cases import run_inference, select_records
    from evaluation.evaluator import choose_on_valid
    from evaluation.scoring import json_safe
    from inference.manifest import model_entry
    from prediction import predictor_for

    t0 = time.time()
    if args.weights:
        model = build_model(args.model, (None, None, 3))
        model.load_weights(args.weights)
    else:
        model = load_named_model(args.model)
    predictor = predictor_for(model, args.model, model_entry(args.model), precision="float32")
    sources = valid_sources(args.data, args.yolo8)
    cached = {key: run_inference(predictor, select_records(ds, "valid", args.limit), 0.5, progress=False)[0]
              for key, ds in sources.items()}
    for ratio in args.ratios:
        valid = recut(cached["fracatlas"], ratio)
        choice, threshold, _ = choose_on_valid(valid, args.model, "valid", 0.5, "", False)
        row = {"model": args.model, "weights": args.weights or "shipped", "low_ratio": ratio, "threshold": threshold,
               "findings_f1_iou25": choice["value"]}
        row.update(scored_by_source(cached, valid, threshold, lambda cases, ratio=ratio: recut(cases, ratio)))
        print(json.dumps(json_safe(row)), flush=True)
    print(json.dumps({"minutes": round((time.time() - t0) / 60, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
