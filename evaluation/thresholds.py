"""Threshold choice on valid: the sweep, the criterion (``definitions.CRITERION``) and its manifest record."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from tqdm import tqdm

from evaluation.cases import Case
from evaluation.definitions import CRITERION, CRITERION_DEFINITION, SWEEP
from evaluation.scoring import findings_f1
from model_manifest import update_entry


def sweep_thresholds(cases: list[Case], thresholds=SWEEP, progress: bool = False) -> list[dict]:
    """``findings_f1`` at each threshold (findings recomputed, no model call)."""
    bar = tqdm(thresholds, desc="threshold sweep", unit="t", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    return [findings_f1(cases, t) for t in bar]


def choose_threshold(sweep: list[dict]) -> dict | None:
    """Row of ``sweep`` with the highest F1 (ties: higher threshold); None if the best F1 is 0/NaN."""
    valid = [r for r in sweep if r["f1"] is not None and math.isfinite(r["f1"])]
    if not valid:
        return None
    best = max(valid, key=lambda r: (r["f1"], r["threshold"]))
    return best if best["f1"] > 0 else None


def threshold_record(report: dict) -> dict:
    """The manifest fields for a threshold chosen in ``report`` (a ``--choose-threshold`` run).

    ``threshold``, ``threshold_source`` and ``threshold_criterion`` (criterion,
    definition, value, split counts, the SHA-256 of the weights it was chosen for, date).
    """
    choice = report["threshold_choice"]
    return {
        "threshold": choice["chosen"],
        "threshold_source": report["threshold_source"],
        "threshold_criterion": {
            "name": CRITERION,
            "definition": CRITERION_DEFINITION,
            "value": choice["value"],
            "split": report["split"],
            "fractured_images": report["counts"]["fractured_images"],
            "negative_images": report["counts"]["negative_images"],
            "swept": f"{SWEEP[0]:.2f}..{SWEEP[-1]:.2f} step 0.05",
            "model_sha256": report["model_sha256"],
            "date": report["date"],
        },
    }


def write_threshold_to_manifest(manifest_path: Path | str, name: str, report: dict) -> None:
    """Record the chosen threshold in the model's manifest entry (other fields untouched), atomically.

    Raises KeyError when the manifest has no entry for ``name``.
    """
    update_entry(name, threshold_record(report), manifest_path, create=False)
