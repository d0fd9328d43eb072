"""Check whether a model may run its inference in bfloat16: valid metrics under bf16 vs float32.

    python tools/check_bf16.py --model NAME [--members MEMBER...] [--limit N] [--data DIR]
                               [--saved-model-dir DIR] [--report FILE.json] [--dry-run]

NAME is any model of the manifest; its file is loaded after the SHA-256 check and run the
way its entry says (native scale, finding rule, image score), once in float32 and once
under Keras 'mixed_bfloat16' (for the ensemble, ``--members`` runs bf16 in those members only
and float32 in the others), on the FracAtlas **valid** split (all of it, or the first
``--limit`` fractured + ``--limit`` negative images) at the entry's threshold. Compared:
findings F1 (the threshold criterion), mean Dice on the fractured images, image ROC-AUC.

Unless ``--dry-run``, the outcome goes into ``models.<NAME>.bf16_inference`` with the
SHA-256 of the weights (and ``members``, where given): ``allowed`` is true only when every metric moved by at most
``inference.manifest.BF16_INFERENCE_TOLERANCE`` (0.005) on the *whole* valid split.
Prediction then runs bf16 only on a CPU with native bf16 instructions where bf16 also
measures faster (``create_segmentation_model.inference_precision``). The check itself must run
on such a CPU (``native_bf16`` in the record): emulated bf16 rounds differently from the native
kernels, so a check on a CPU without them is reported but never allows bf16.

Prints one line per precision and the verdict. Exit status 0, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.common import (  # noqa: E402
    Parser,
    UsageError,
    load_listed_model,
    positive_int,
    require_data_dir,
    run_tool,
)
from important_variables import CONFIG, ENSEMBLE_MEMBERS  # noqa: E402

POLICIES = ("float32", "mixed_bfloat16")
METRICS = ("f1", "dice_mean", "roc_auc")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="check_bf16.py", description="Compare a model's FracAtlas valid metrics under bf16 and float32.")
    p.add_argument("--model", required=True, help="a model name of the manifest")
    p.add_argument("--members", nargs="+", choices=tuple(ENSEMBLE_MEMBERS), help="--model ensemble only: run bf16 "
                   "in these members and float32 in the rest (default: bf16 everywhere)")
    p.add_argument("--limit", type=positive_int, help="first N fractured + N negative valid images (default: all; "
                   "a limited check is reported but never allows bf16)")
    p.add_argument("--data", metavar="DIR", help="FracAtlas folder (default: $FRACATLAS_DIR or the default places)")
    p.add_argument("--saved-model-dir", metavar="DIR", help="folder of manifest.json and the model files (default: Saved_model)")
    p.add_argument("--report", metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--dry-run", action="store_true", help="print only; leave the manifest as it is")
    return p


def metrics_of(cases: list, threshold: float) -> dict:
    """{f1, dice_mean, roc_auc} of one run's cases at ``threshold`` (the evaluation's own formulas)."""
    from evaluation.scoring import findings_f1, score_cases

    scored = score_cases(cases, threshold)
    return {"f1": findings_f1(cases, threshold)["f1"], "dice_mean": scored["segmentation"]["dice_mean"],
            "roc_auc": scored["image_level"]["roc_auc"]}


def compare(metrics: dict[str, dict], full_split: bool, native: bool = True) -> dict:
    """The verdict from ``{policy: {metric: value}}``: per-metric deltas, their maximum, ``allowed``.

    ``allowed`` needs the whole split and bf16 computed by native instructions (``native``):
    emulated bf16 rounds differently from the native kernels the Predictor would run, so its
    deltas say nothing about them (measured: the U-Net's largest change 0.0088 emulated, 0.0049
    native; the Lite0-UNet's 0.0056 emulated, 0.0167 native).
    """
    from inference.manifest import BF16_INFERENCE_TOLERANCE

    deltas = {m: abs(metrics["mixed_bfloat16"][m] - metrics["float32"][m]) for m in METRICS}
    max_delta = max(deltas.values())
    return {"deltas": {m: round(d, 6) for m, d in deltas.items()}, "max_delta": round(max_delta, 6),
            "tolerance": BF16_INFERENCE_TOLERANCE,
            "allowed": bool(full_split and native and max_delta <= BF16_INFERENCE_TOLERANCE)}


def run(args) -> dict:
    from create_segmentation_model import cpu_bf16_flags
    from evaluation.validator import Validator
    from inference.manifest import update_entry
    from prediction import predictor_for

    if args.members and args.model != "ensemble":
        raise UsageError(f"--members names ensemble members; {args.model!r} is not the ensemble")
    saved = Path(args.saved_model_dir) if args.saved_model_dir else CONFIG.saved_model_dir
    data_dir = require_data_dir(args.data)
    model, entry = load_listed_model(args.model, saved)
    validator = Validator(data_dir, split="valid", limit=args.limit, entry=entry)
    threshold = entry.threshold
    metrics, seconds = {}, {}
    for policy in POLICIES:
        predictor = predictor_for(model, args.model, entry, precision=policy, bf16_members=args.members)
        t0 = time.perf_counter()
        cases = validator.cases(predictor, threshold)
        seconds[policy] = round(time.perf_counter() - t0, 1)
        metrics[policy] = metrics_of(cases, threshold)
        shown = ", ".join(f"{m} {v:.4f}" for m, v in metrics[policy].items())
        print(f"{args.model} {predictor.precision:>14}: {shown}  ({len(cases)} images, {seconds[policy]:.0f} s)")
    flags = sorted(cpu_bf16_flags())
    verdict = compare(metrics, full_split=args.limit is None, native=bool(flags))
    check = {
        "model_sha256": entry.sha256, **verdict, **({"members": list(args.members)} if args.members else {}),
        "native_bf16": flags, "threshold": threshold,
        "checked_on": f"FracAtlas valid split: {len(cases)} images" + (f" (--limit {args.limit})" if args.limit else ""),
        "metrics": metrics, "seconds": seconds,
        "cpu": f"{platform.processor() or platform.machine()}; native bf16: {', '.join(flags) or 'none (emulated)'}",
        "date": dt.date.today().isoformat(),
        "command": f"python tools/check_bf16.py --model {args.model}"
                   + (f" --members {' '.join(args.members)}" if args.members else "")
                   + (f" --limit {args.limit}" if args.limit else ""),
    }
    word = "allowed" if check["allowed"] else "not allowed"
    why = ("" if args.limit is None else " (a limited check never allows it)") + (
        "" if flags else " (bf16 is emulated on this CPU: a check here never allows it)")
    print(f"{args.model}: largest change {check['max_delta']:.4f} (tolerance {check['tolerance']}): bf16 inference {word}{why}")
    if not args.dry_run:
        update_entry(args.model, {"bf16_inference": check}, saved / "manifest.json", create=False)
        print(f"{args.model}: written to models.{args.model}.bf16_inference of {saved.name}/manifest.json")
    if args.report:
        Path(args.report).write_text(json.dumps(check, indent=2) + "\n", encoding="utf-8")
    return check


def main(argv: list[str] | None = None) -> int:
    return run_tool("check_bf16.py", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
