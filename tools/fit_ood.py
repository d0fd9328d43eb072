"""Fit a model's "unlike the training images" check and write it into its manifest entry.

    python tools/fit_ood.py --model NAME [--limit 300] [--valid-limit N] [--false-alarm 0.05]
                            [--components 32] [--layer LAYER] [--seed 1337] [--data DIR]
                            [--check-test] [--check LABEL=DIR ...] [--check-limit 300]
                            [--saved-model-dir DIR] [--features-cache FILE.npz] [--report FILE.json] [--dry-run]

NAME is any model of the manifest (``Saved_model/manifest.json``, or ``--saved-model-dir``):
its ``file`` is loaded after the SHA-256 check, as the app does, and run the way its entry
says (native scale, ...). Steps:

1. the feature layer: ``--layer``, else ``inference.features.deepest_feature_layer`` (the
   documented rule: the last layer at the encoder's coarsest resolution);
2. features of ``--limit`` FracAtlas **train** images (random, ``--seed``; fractured and
   fracture-free as they come) and of the **valid** images (all, or ``--valid-limit`` of
   each class), through the one inference loop (``prediction.iter_predictions``);
3. ``inference.ood.fit_ood``: fit on train, threshold on valid at ``--false-alarm``;
4. alarm rates on valid, on the FracAtlas test split (``--check-test``) and on any
   ``--check LABEL=DIR`` folder (images of another source, pictures that are not X-rays;
   at most ``--check-limit`` files each, random, one per original for Roboflow exports);
5. unless ``--dry-run``: the check goes into ``models.<NAME>.ood`` (``inference.manifest.update_entry``),
   with the SHA-256 of the weights, so prediction ignores it once other weights are shipped.

Prints one line per measured set; ``--report`` writes them as JSON. Unreadable files are
skipped with one line each. Exit status 0, 2 on a usage error (unknown model, no data).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.common import (  # noqa: E402
    Parser,
    UsageError,
    load_listed_model,
    positive_int,
    require_data_dir,
    require_yolo8_dir,
    run_tool,
)
from important_variables import CONFIG  # noqa: E402

log = logging.getLogger("fit_ood")

#: Roboflow exports keep augmented copies as ``<original>_<ext>.rf.<hash>.<ext>``: one per original is taken.
_ROBOFLOW_COPY = re.compile(r"_(jpg|jpeg|png)\.rf\.[0-9a-f]+$", re.IGNORECASE)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="fit_ood.py", description="Fit a model's 'unlike the training images' check on FracAtlas.")
    p.add_argument("--model", required=True, help="a model name of the manifest")
    p.add_argument("--limit", type=positive_int, default=300, help="train images to fit on (random)")
    p.add_argument("--valid-limit", type=positive_int, help="valid images per class (default: all)")
    p.add_argument("--false-alarm", type=float, default=0.05, help="share of valid X-rays allowed to get the warning")
    p.add_argument("--components", type=positive_int, default=32, help="principal axes of the feature model")
    p.add_argument("--layer", help="feature layer name (default: the documented rule, model_features.deepest_feature_layer)")
    p.add_argument("--seed", type=int, default=CONFIG.seed, help="random choice of train and check images")
    p.add_argument("--data", metavar="DIR", help="FracAtlas folder (default: $FRACATLAS_DIR or the default places)")
    p.add_argument("--second-source", type=positive_int, metavar="N",
                   help="for a model trained on BoneFractureYolo8 too: also fit on N random originals of its train part, and "
                   "set the threshold on both sources' valid parts (default: FracAtlas only)")
    p.add_argument("--check-test", action="store_true", help="also report the alarm rate on the FracAtlas test split")
    p.add_argument("--check", action="append", default=[], metavar="LABEL=DIR",
                   help="also report the alarm rate on the images of DIR (recursed); repeatable")
    p.add_argument("--check-limit", type=positive_int, default=300, help="at most this many files per --check folder")
    p.add_argument("--saved-model-dir", metavar="DIR", help="folder of manifest.json and the weights (default: Saved_model)")
    p.add_argument("--features-cache", metavar="FILE", help="reuse/save the features of every set here (.npz)")
    p.add_argument("--report", metavar="FILE", help="write the figures as JSON")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per model call")
    p.add_argument("--dry-run", action="store_true", help="fit and report, but leave the manifest as it is")
    return p


# --------------------------------------------------------------------------- inputs
def one_per_original(paths: list[Path]) -> list[Path]:
    """The first file of each original of a Roboflow export (other names are kept as they are)."""
    seen, out = set(), []
    for p in paths:
        key = (p.parent, _ROBOFLOW_COPY.sub("", p.stem))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def check_files(folder: Path, limit: int, seed: int) -> list[Path]:
    """Up to ``limit`` decodable files of ``folder`` (recursed), one per original, in a seeded random order."""
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder")
    files = one_per_original(sorted(q for q in folder.rglob("*") if q.is_file() and q.suffix.lower() in CONFIG.folder_extensions))
    if not files:
        raise UsageError(f"{folder}: no images found")
    random.Random(seed).shuffle(files)
    return sorted(files[:limit])


def parse_check(text: str) -> tuple[str, Path]:
    label, sep, folder = text.partition("=")
    if not sep or not label.strip() or not folder:
        raise UsageError(f"--check {text!r}: expected LABEL=DIR")
    return label.strip(), Path(folder)


def fracatlas_sets(data_dir: Path, limit: int, valid_limit: int | None, seed: int,
                   test: bool) -> tuple[dict[str, list[Path]], set[Path]]:
    """({"train": the random fitting subset, "valid": all (or ``valid_limit`` per class), "test": all
    (when asked)}, the fractured ones among them)."""
    from fracture.dataset import FracAtlas

    atlas = FracAtlas(data_dir)
    records = atlas.records("train")
    random.Random(seed).shuffle(records)
    sets = {"train": sorted(r.path for r in records[:limit])}
    valid = atlas.records("valid", fractured=True)[:valid_limit] + atlas.records("valid", fractured=False)[:valid_limit]
    sets["valid"] = [r.path for r in valid]
    fractured = {r.path for r in records[:limit] + valid if r.fractured}
    if test:
        sets["test"] = [r.path for r in atlas.records("test")]
    return sets, fractured


def second_source_sets(limit: int, seed: int) -> dict[str, list[Path]]:
    """BoneFractureYolo8's train part (``limit`` originals at random, one copy each) and its valid part."""
    from fracture.bone_fracture_yolo8 import BoneFractureYolo8

    ds = BoneFractureYolo8(require_yolo8_dir())
    train = one_per_original(sorted(r.path for r in ds.records("train")))
    random.Random(seed).shuffle(train)
    return {"train": sorted(train[:limit]), "valid": [r.path for r in ds.records("valid")]}


# --------------------------------------------------------------------------- features
def featured_outcomes(predictor, files: list[Path], batch_size: int, label: str, threshold: float = 0.5):
    """The ``prediction.Outcome`` of each file that was read and gave features, in order (tag: its path);
    an unreadable file is skipped with one log line. ``threshold`` cuts the findings."""
    from imaging.image_io import read_image_file
    from prediction import Source, iter_predictions

    sources = [Source(str(p), (lambda p=p: read_image_file(p, name=p.name)), p) for p in files]
    for o in iter_predictions(predictor, sources, threshold, batch_size=batch_size, workers=1):
        if o.error is not None or o.features is None:
            log.warning("%s: skipped: %s", label, o.error or f"{o.name}: no features")
            continue
        yield o


def features_of(predictor, files: list[Path], batch_size: int, label: str):
    """(features (N, C) float32, the N files read); an unreadable file is skipped with one log line."""
    import numpy as np

    outcomes = list(featured_outcomes(predictor, files, batch_size, label))
    feats = [o.features for o in outcomes]
    return (np.stack(feats) if feats else np.zeros((0, 0), np.float32)), [o.tag for o in outcomes]


def cached_features(cache: Path | None, key: dict, compute):
    """``compute()`` → {label: (features, files)}, reused from ``cache`` when it was made with the same ``key``."""
    import numpy as np

    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if json.loads(str(z["key"])) == key:
                labels = json.loads(str(z["labels"]))
                return {lab: (z[f"f_{i}"], [Path(p) for p in json.loads(str(z[f"n_{i}"]))]) for i, lab in enumerate(labels)}
    out = compute()
    if cache is not None:
        arrays = {"key": json.dumps(key), "labels": json.dumps(list(out))}
        for i, (feats, files) in enumerate(out.values()):
            arrays[f"f_{i}"], arrays[f"n_{i}"] = feats, json.dumps([str(p) for p in files])
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache, **arrays)
    return out


# --------------------------------------------------------------------------- main
def command_text(args) -> str:
    """The fitting command as recorded in the manifest (no machine paths)."""
    parts = [f"python tools/fit_ood.py --model {args.model} --limit {args.limit}"]
    if args.second_source:
        parts.append(f"--second-source {args.second_source}")
    if args.valid_limit:
        parts.append(f"--valid-limit {args.valid_limit}")
    parts.append(f"--false-alarm {args.false_alarm:g} --components {args.components} --seed {args.seed}")
    if args.layer:
        parts.append(f"--layer {args.layer}")
    return " ".join(parts)


def run(args) -> dict:
    import numpy as np

    from fracture.bone_fracture_yolo8 import BoneFractureYolo8
    from fracture.dataset import FracAtlas
    from inference.features import deepest_feature_layer
    from inference.manifest import update_entry
    from inference.ood import alarm_rate, fit_ood
    from prediction import predictor_for

    if not 0.0 < args.false_alarm < 1.0:
        raise UsageError(f"--false-alarm {args.false_alarm} must be strictly between 0 and 1")
    checks = [parse_check(c) for c in args.check]
    saved = Path(args.saved_model_dir) if args.saved_model_dir else CONFIG.saved_model_dir
    data_dir = require_data_dir(args.data)
    sets, fractured = fracatlas_sets(data_dir, args.limit, args.valid_limit, args.seed, args.check_test)
    second = second_source_sets(args.second_source, args.seed) if args.second_source else None
    if second:  # one set per source and role, so that every figure is reported per source
        sets["train BoneFractureYolo8"], sets["valid BoneFractureYolo8"] = second["train"], second["valid"]
    for label, folder in checks:
        if label in sets:
            raise UsageError(f"--check {label}=...: the label {label!r} is taken")
        sets[label] = check_files(folder, args.check_limit, args.seed)
    model, entry = load_listed_model(args.model, saved)
    layer = args.layer or deepest_feature_layer(model)
    predictor = predictor_for(model, args.model, entry, feature_layer=layer, ood=None)
    key = {"model_sha256": entry.sha256, "layer": layer, "inference": entry.inference,
           "sets": {k: [str(p) for p in v] for k, v in sets.items()}}
    feats = cached_features(Path(args.features_cache) if args.features_cache else None, key,
                            lambda: {lab: features_of(predictor, files, args.batch_size, lab) for lab, files in sets.items()})
    train, valid = feats["train"][0], feats["valid"][0]
    n_frac = sum(1 for p in feats["train"][1] if Path(p) in fractured)
    fitted_on = f"FracAtlas train split: {len(train)} images at random (seed {args.seed}), {n_frac} of them fractured"
    threshold_on = f"FracAtlas valid split: {len(valid)} images"
    if second:
        t2, v2 = feats["train BoneFractureYolo8"][0], feats["valid BoneFractureYolo8"][0]
        fitted_on += f"; BoneFractureYolo8 train part: {len(t2)} originals at random"
        threshold_on += f"; BoneFractureYolo8 valid part: {len(v2)} images"
        train, valid = np.concatenate([train, t2]), np.concatenate([valid, v2])
    info = {
        "model_sha256": entry.sha256,
        "sources": [FracAtlas.name, BoneFractureYolo8.name] if second else [FracAtlas.name],
        "fitted_on": fitted_on,
        "threshold_on": threshold_on,
        "pooling": "global average of the layer's output over the image (padding excluded)",
        "definition": "distance = Mahalanobis distance of log1p(features) to the train features (top principal axes "
                      "+ one residual variance) / sqrt(channels); unlike the training images when distance > threshold, "
                      "the threshold being the (1 - false_alarm_target) quantile of the valid distances",
        "date": dt.date.today().isoformat(),
        "command": command_text(args),
    }
    check = fit_ood(train, valid, layer, args.false_alarm, args.components, info=info)
    figures = {}
    for label, (f, files) in feats.items():
        alarms, n, rate = alarm_rate(check, f) if len(f) else (0, 0, float("nan"))
        figures[label] = {"images": n, "alarms": alarms, "rate": round(rate, 4) if n else None,
                          "skipped": len(sets[label]) - len(files)}
        role = "fitted on" if label.startswith("train") else "threshold set on" if label.startswith("valid") else "held out"
        print(f"{args.model} {label:>12}: {alarms:4d} of {n:4d} flagged ({100 * rate:5.1f} %)  [{role}]")
    check = type(check)(check.layer, check.mean, check.axes, check.variances, check.residual_variance, check.threshold,
                        check.kind, {**check.info, "checks": {k: v for k, v in figures.items() if not k.startswith("train")}})
    d = check.distances(valid)
    print(f"{args.model}: layer {layer}, {check.channels} channels, {check.axes.shape[0]} axes, threshold {check.threshold:.3f} "
          f"(valid distances: median {np.median(d):.3f}, max {d.max():.3f})")
    if not args.dry_run:
        update_entry(args.model, {"ood": check.to_entry()}, saved / "manifest.json", create=False)
        print(f"{args.model}: written to models.{args.model}.ood of {saved.name}/manifest.json")
    report = {"model": args.model, "layer": layer, "threshold": check.threshold, "false_alarm_target": args.false_alarm,
              "command": command_text(args), "figures": figures}
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    return run_tool("fit_ood.py", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
