"""Threshold choice on valid: the sweep, the criterion (``definitions.CRITERION``) and its manifest record."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evaluation.cases import Case
from evaluation.definitions import CRITERION, CRITERION_DEFINITION, SWEEP
from evaluation.scoring import findings_f1, json_safe
from important_variables import CONFIG
from inference.findings import IMAGE_SCORES
from inference.manifest import update_entry

#: Borderline margins tried on valid: 0.05 ... 0.30.
MARGINS: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 7))


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


def choose_margin(cases: list[Case], threshold: float, max_negative_share: float = CONFIG.borderline_max_negative_share) -> dict:
    """The borderline margin on valid: the widest of ``MARGINS`` whose band (images without a
    finding whose highest score is >= threshold - margin) holds at most ``max_negative_share``
    of the negatives; 0 (no borderline state) when none does. Returns the choice and the sweep.
    """
    negatives = sum(not c.fractured for c in cases)
    misses = [c for c in cases if c.fractured and not c.findings(threshold)]
    rows = []
    for m in MARGINS:
        band = [c for c in cases if not c.findings(threshold) and c.result.fracture_score >= threshold - m]
        rows.append({
            "margin": m,
            "negatives_borderline": sum(not c.fractured for c in band) / negatives if negatives else float("nan"),
            "missed_fractures_flagged": sum(c.fractured for c in band) / len(misses) if misses else float("nan"),
        })
    ok = [r for r in rows if r["negatives_borderline"] <= max_negative_share]
    chosen = max(ok, key=lambda r: r["margin"])["margin"] if ok else 0.0
    return {"chosen": chosen, "max_negative_share": max_negative_share, "sweep": rows,
            "definition": "widest margin whose band (no finding, highest score >= threshold - margin) holds at most "
                          f"{max_negative_share:.0%} of the valid negatives; 0 = no borderline state"}


def choose_image_score(cases: list[Case], threshold: float) -> dict:
    """The image-level score (at ``threshold``) with the highest ROC-AUC on these cases, and every candidate's AUC."""
    from evaluation.metrics import roc_auc

    labels = np.array([c.fractured for c in cases], bool)
    scores = [c.at(threshold).image_scores() for c in cases]
    aucs = {name: roc_auc(np.array([s[name] for s in scores]), labels) for name in IMAGE_SCORES}
    finite = {k: v for k, v in aucs.items() if v == v}
    return {"chosen": max(finite, key=finite.get) if finite else "max_prob", "roc_auc": aucs}


def fit_score_calibration(cases: list[Case], score_name: str, threshold: float, split: str = "valid") -> dict | None:
    """Isotonic calibration of ``score_name`` (at ``threshold``) → P(fracture) on these cases (None with one class only)."""
    from inference.calibration import fit_calibration

    labels = [int(c.fractured) for c in cases]
    if len(set(labels)) < 2:
        return None
    scores = [c.at(threshold).image_scores()[score_name] for c in cases]
    return fit_calibration(scores, labels, method="isotonic", fitted_on=split)


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
            "swept": ", ".join(f"{t:.2f}" for t in SWEEP),
            "model_sha256": report["model_sha256"],
            "date": report["date"],
        },
    }


#: What ``operating_points`` says each row is (written into the manifest with the rows).
OPERATING_POINTS_DEFINITION = (
    "per swept threshold, on the split the threshold was chosen on: sensitivity = fractured images with "
    "at least one finding / fractured images; false_findings_per_negative = findings on images without "
    "fracture / those images; box_recall25 / box_precision25 = annotated fracture boxes matched / "
    "findings matching one, at IoU >= 0.25 (the criterion's matching); f1 = the criterion"
)


def operating_points(report: dict) -> dict | None:
    """What every swept threshold does on the choosing split, for the app's threshold slider and
    the Models page: {definition, split, fractured_images, negative_images, rows}; None without a sweep.

    rows: one per threshold of ``SWEEP``, ascending, each {threshold, sensitivity,
    false_findings_per_negative, box_recall25, box_precision25, f1} (floats in [0, 1] except the
    false findings, >= 0; NaN where undefined).
    """
    sweep = (report.get("threshold_choice") or {}).get("sweep")
    if not sweep:
        return None
    rows = []
    for r in sorted(sweep, key=lambda r: r["threshold"]):
        tp, fp, fn = r["tp"], r["fp"], r["fn"]
        rows.append({
            "threshold": r["threshold"],
            "sensitivity": r["sensitivity"],
            "false_findings_per_negative": r["false_findings_per_negative_image"],
            "box_recall25": tp / (tp + fn) if tp + fn else float("nan"),
            "box_precision25": tp / (tp + fp) if tp + fp else float("nan"),
            "f1": r["f1"],
        })
    return {"definition": OPERATING_POINTS_DEFINITION, "split": report["split"],
            "fractured_images": report["counts"]["fractured_images"],
            "negative_images": report["counts"]["negative_images"], "rows": rows}


def choice_record(report: dict) -> dict:
    """Manifest fields of a ``--choose-threshold`` run: the threshold record plus the borderline
    margin, the image-level score, its calibration and the operating points when the run has them."""
    out = threshold_record(report)
    choice = report["threshold_choice"]
    if choice.get("margin") is not None:
        out["borderline_margin"] = choice["margin"]["chosen"]
        out["borderline_criterion"] = {k: choice["margin"][k] for k in ("definition", "max_negative_share")}
    if choice.get("image_score") is not None:
        out["image_score"] = choice["image_score"]["chosen"]
    if choice.get("calibration") is not None:
        out["calibration"] = choice["calibration"]
    points = operating_points(report)
    if points is not None:
        out["operating_points"] = json_safe(points)
    return out


def write_threshold_to_manifest(manifest_path: Path | str, name: str, report: dict) -> None:
    """Record the chosen threshold in the model's manifest entry (other fields untouched), atomically.

    Raises KeyError when the manifest has no entry for ``name``.
    """
    update_entry(name, choice_record(report), manifest_path, create=False)
