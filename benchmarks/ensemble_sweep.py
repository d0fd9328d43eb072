"""Weighted averages of the shipped models' maps, swept on valid without calling the models again.

    python benchmarks/ensemble_sweep.py [--models lite0_unet unet encoder_decoder] [--step 0.25] [--yolo8]

Runs every model of ``--models`` (each as its manifest entry says: scale, finding rule,
float32) once over FracAtlas valid, and with ``--yolo8`` over BoneFractureYolo8's valid part;
then for each weight vector on the simplex grid of ``--step`` averages the probability maps
(each at the image's own size), cuts findings under the first model's finding rule, and
chooses the threshold, margin and image score on FracAtlas valid exactly as ``evaluate.py
--choose-threshold`` does. Prints one JSON line per weight vector: the chosen threshold, the
findings F1 there, and the valid numbers of both sources at that threshold (the one-model rows
reproduce the models' own valid numbers). The test split is not read. Nothing is written.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from important_variables import TRAINED_MODELS  # noqa: E402


def weight_grid(n: int, step: float) -> list[tuple[float, ...]]:
    """Every weight vector of ``n`` non-negative multiples of ``step`` that sum to 1, one-model vectors first."""
    k = round(1 / step)
    if n < 1 or k < 1 or abs(k * step - 1) > 1e-9:
        raise ValueError(f"step {step} must divide 1")
    grid = [tuple(c / k for c in combo) for combo in itertools.product(range(k + 1), repeat=n) if sum(combo) == k]
    return sorted(grid, key=lambda w: (sum(x > 0 for x in w), [-x for x in w]))


def averaged(members: list[list], weights: tuple[float, ...]) -> list:
    """Cases whose maps are ``sum(w * prob)`` over the members (same records, same order), under the first member's rule."""
    from evaluation.cases import Case
    from inference.results import PredictionResult

    out = []
    for cases in zip(*members, strict=True):
        first = cases[0].result
        prob = sum(w * c.result.prob for w, c in zip(weights, cases, strict=True) if w > 0)
        result = PredictionResult.from_prob(prob.astype("float32"), first.height, first.width, first.threshold,
                                            first.rule, first.image_score_name)
        out.append(Case(cases[0].record, result))
    return out


def main(argv=None) -> int:
    from finding_rule_sweep import scored_by_source, valid_sources

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", nargs="+", choices=TRAINED_MODELS, default=list(TRAINED_MODELS), help="shipped models to average")
    p.add_argument("--step", type=float, default=0.25, help="weight grid step (divides 1)")
    p.add_argument("--data", help="FracAtlas directory (default: $FRACATLAS_DIR, then the usual places)")
    p.add_argument("--yolo8", action="store_true", help="also score BoneFractureYolo8's valid part at each chosen threshold")
    p.add_argument("--limit", type=int, help="first N fractured + N negative valid images (a smoke run; not for the docs)")
    args = p.parse_args(argv)

    from create_segmentation_model import load_named_model
    from evaluation.cases import run_inference, select_records
    from evaluation.evaluator import choose_on_valid
    from evaluation.scoring import json_safe
    from inference.manifest import model_entry
    from prediction import predictor_for

    t0 = time.time()
    sources = valid_sources(args.data, args.yolo8)
    records = {key: select_records(ds, "valid", args.limit) for key, ds in sources.items()}
    cached: dict[str, list[list]] = {key: [] for key in sources}
    for name in args.models:
        predictor = predictor_for(load_named_model(name), name, model_entry(name), precision="float32")
        for key, recs in records.items():
            cases, _ = run_inference(predictor, recs, 0.5, progress=False)  # unreadable files: one log line each
            cached[key].append(cases)
    for key, members in cached.items():  # the same files are unreadable for every model: one image list
        if len({tuple(c.record.image_id for c in cases) for cases in members}) != 1:
            raise SystemExit(f"{key}: the models read different images")
    for weights in weight_grid(len(args.models), args.step):
        valid = averaged(cached["fracatlas"], weights)
        choice, threshold, _ = choose_on_valid(valid, "ensemble", "valid", 0.5, "", False)
        image_score = choice.get("image_score") or {}
        row = {"weights": dict(zip(args.models, weights, strict=True)), "threshold": threshold, "findings_f1_iou25": choice["value"],
               "image_score": image_score.get("chosen"),
               "auc_of_chosen_score": (image_score.get("roc_auc") or {}).get(image_score.get("chosen"))}
        row.update(scored_by_source(cached, valid, threshold, lambda members, weights=weights: averaged(members, weights)))
        print(json.dumps(json_safe(row)), flush=True)
    print(json.dumps({"minutes": round((time.time() - t0) / 60, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
