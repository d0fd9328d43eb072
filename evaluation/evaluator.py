"""One model on one split: inference → (threshold choice) → scoring → the JSON-ready report. No files written."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cli.common import UsageError
from evaluation.cases import Case, run_inference, select_records, settings_of
from evaluation.definitions import CRITERION, CRITERION_DEFINITION, DEFINITIONS, REPORT_KEYS
from evaluation.intervals import image_intervals
from evaluation.scoring import json_safe, score_cases
from evaluation.thresholds import choose_image_score, choose_margin, choose_threshold, fit_score_calibration, sweep_thresholds
from important_variables import MODEL_LABELS

log = logging.getLogger("evaluate")


def choose_on_valid(cases: list[Case], name: str, split: str, threshold: float, source: str, progress: bool) -> tuple[dict, float, str]:
    """Sweep ``SWEEP`` on the cached maps: (threshold_choice record, threshold to report at, its source)."""
    sweep = sweep_thresholds(cases, progress=progress)
    best = choose_threshold(sweep)
    choice = {"criterion": CRITERION, "definition": CRITERION_DEFINITION, "sweep": sweep, "chosen": None, "value": None}
    if best is None:
        log.warning("%s: no threshold gives any matched finding on %s; threshold left at %.2f", name, split, threshold)
        return choice, threshold, source
    choice.update(chosen=best["threshold"], value=best["f1"])
    # At the chosen threshold: the borderline margin, the image-level score and its calibration.
    choice["margin"] = choose_margin(cases, best["threshold"])
    choice["image_score"] = choose_image_score(cases, best["threshold"])
    choice["calibration"] = fit_score_calibration(cases, choice["image_score"]["chosen"], best["threshold"], split)
    return choice, best["threshold"], f"chosen on valid by evaluate.py --choose-threshold ({CRITERION})"


@dataclass
class Evaluation:
    """A finished evaluation: the JSON-ready report, the cases (for the grid) and the curves."""

    report: dict
    cases: list[Case]
    curves: dict


def _reliability(rows: list[dict], calibration: dict, split: str) -> dict | None:
    """The manifest calibration's reliability on this split's per-image scores (None without both classes)."""
    from inference.calibration import reliability_report

    if len({r["fractured"] for r in rows}) != 2:
        return None
    return reliability_report([r["fracture_score"] for r in rows], [int(r["fractured"]) for r in rows],
                              calibration, split=split, in_sample=calibration.get("fitted_on") == split)


def evaluate(predictor, atlas, split: str, threshold: float, *, model_name: str | None = None,
             threshold_source: str = "given", model_sha256: str | None = None, model_file: str | None = None,
             limit: int | None = None, choose: bool = False, batch_size: int = 8, progress: bool = True,
             command: str | None = None, calibration: dict | None = None) -> Evaluation:
    """Evaluate one model (behind a ``prediction.Predictor``) on ``split``; no files written.

    ``choose=True`` (valid only) sweeps ``SWEEP`` on the cached probability maps and
    scores the split at the best threshold; the report's ``threshold_choice`` holds
    the sweep, the borderline margin, the image-level score and its calibration.
    ``calibration`` (the manifest's) adds its reliability on this split to the report.
    Raises UsageError for ``choose`` on another split.
    """
    if choose and split != "valid":
        raise UsageError("--choose-threshold is only allowed on the valid split; the test split stays unseen")
    name = model_name or predictor.name
    t0 = time.perf_counter()
    records = select_records(atlas, split, limit)
    cases, skipped = run_inference(predictor, records, threshold, batch_size, progress)
    t_infer = time.perf_counter() - t0

    choice = None
    if choose:
        choice, threshold, threshold_source = choose_on_valid(cases, name, split, threshold, threshold_source, progress)

    scored = score_cases(cases, threshold)
    curves = scored.pop("_curves")
    reliability = _reliability(scored["per_image"], calibration, split) if calibration and not choose else None
    scored["counts"]["skipped_unreadable"] = len(skipped)
    scored["counts"]["skipped_files"] = skipped
    total = time.perf_counter() - t0
    report = {
        "model": name,
        "model_label": MODEL_LABELS.get(name, name),
        "model_file": model_file,
        "model_sha256": model_sha256,
        "source": getattr(atlas, "name", "FracAtlas"),
        "split": split,
        "data_dir": Path(atlas.root).name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "limit": limit,
        "threshold": threshold,
        "threshold_source": threshold_source,
        "settings": settings_of(predictor),
        **scored,
        "intervals": image_intervals(scored["per_image"]),
        "calibration": reliability,
        "threshold_choice": choice,
        "timing": {"inference_s": t_infer, "total_s": total, "images_per_s": len(cases) / t_infer if t_infer > 0 else float("nan")},
        "definitions": DEFINITIONS,
    }
    report = {k: report[k] for k in REPORT_KEYS}  # fixed key order, and fails loudly if one is missing
    return Evaluation(json_safe(report), cases, curves)
