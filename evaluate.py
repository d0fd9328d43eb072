"""Honest evaluation of the segmentation models on the official FracAtlas split.

Usage::

    python evaluate.py --model {unet,encoder_decoder,all} --split {valid,test}
                       [--data DIR] [--threshold T] [--out reports/] [--limit N]
                       [--choose-threshold] [--ship] [--batch-size B] [--no-progress]

Evaluation set: the fractured images of the official split file plus the negatives
of the same split by the id rule (``n % 10 == 0`` test, ``== 1`` valid); unreadable
(truncated) files are skipped with one log line each and counted. ``--limit N``
keeps the first N fractured and the first N negative records (by id), for tests.

Predictions go through ``prediction.predict_images``, the path the app uses: the
256x256 probability map is resized back to each image's own size and compared
there with the annotation polygons. Numbers (see ``DEFINITIONS`` for the exact
wording written into every report):

1. segmentation on fractured images: per-image Dice and IoU of ``prob >= t``
   against the annotated mask, mean and median;
2. findings (connected regions of ``prob >= t``, score = region max probability)
   against the COCO instance boxes: box AP@50 and AP@25 pooled over all evaluated
   images (greedy matching by score, all-point interpolation), recall at ``t``;
3. image level: fracture score = max probability; ROC-AUC fractured vs negatives;
   sensitivity (fractured images with >= 1 finding) and specificity (negatives
   with none) at ``t``; false findings per negative image;
4. pixel accuracy of the model next to that of an all-background prediction on the
   same pixels (on its own it is meaningless: ~99.7 % of the pixels are background);
5. Dice and sensitivity by body part, with counts.

Outputs in ``--out`` (default ``reports/``): ``<model>_<split>.json`` (every number,
counts, threshold, model SHA-256, data path, date), ``<model>_<split>.md`` (markdown
table), ``<model>_<split>_pr.png``, ``<model>_<split>_roc.png`` and, for the test
split, ``<model>_<split>_grid.png`` (the 8 best and 8 worst fractured images by
Dice, predicted vs annotated outline). ``--ship`` (test split, full set, the
manifest's threshold) also writes ``Saved_model/<model>.metrics.json`` and the
plots under ``Saved_model/report/``.

Threshold: by default the model's ``threshold`` in ``Saved_model/manifest.json``.
``--choose-threshold`` (valid split only; refused on test) sweeps ``SWEEP`` on the
cached probability maps of one inference pass and keeps the threshold with the
highest ``CRITERION`` (F1 of findings at IoU >= 0.25 over fractured + negative
images, see ``CRITERION_DEFINITION``), writes it into the model's manifest entry
(``threshold``, ``threshold_source``, ``threshold_criterion``; other fields are
left alone) and reports the valid split at that threshold.

Exit codes: 0 ok; 1 a model file missing or failing its SHA-256 check, or the
manifest lacks the model; 2 usage error (unknown model, missing data set, bad
threshold, a refused option combination). Error messages are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import textwrap
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from important_variables import CONFIG, MODEL_LABELS, MODEL_NAMES, resolve_data_dir

log = logging.getLogger("evaluate")

#: Thresholds tried by --choose-threshold: 0.05, 0.10, ..., 0.95.
SWEEP: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 20))
#: IoU levels for box AP / recall; the criterion uses the looser one.
AP_IOUS: tuple[float, ...] = (0.5, 0.25)
CRITERION = "findings_f1_iou25"
CRITERION_IOU = 0.25
CRITERION_DEFINITION = (
    "F1 = 2TP / (2TP + FP + FN) of the findings against the annotated fracture boxes, pooled over "
    "the fractured and the negative images of the valid split; a finding is a TP when greedy "
    "one-to-one matching by score pairs it with an annotated box at IoU >= 0.25, every other finding "
    "(all findings on negative images included) is a FP, every unmatched annotated box is a FN. "
    "It balances missed fractures against false findings. Ties go to the higher threshold (fewer "
    "findings for the same F1); a best F1 of 0 chooses nothing."
)
GRID_N = 8
CREDIT = (
    "Images: FracAtlas, Abedeen et al., Scientific Data 10, 521 (2023), doi:10.1038/s41597-023-02432-4, "
    "CC BY 4.0"
)
DEFINITIONS = {
    "dice_iou": "per fractured image, prob >= threshold vs the annotated mask (all instances merged), "
    "both at the image's own resolution; then mean and median over images",
    "findings": "8-connected regions of prob >= threshold (regions below the minimum area dropped), "
    "box in original pixels, score = region max probability (prediction.find_findings)",
    "box_ap": "all-point interpolated AP over the findings of all evaluated images pooled by score; "
    "greedy one-to-one matching per image by decreasing score at IoU >= 0.5 (ap50) / 0.25 (ap25) "
    "against the COCO instance boxes; only findings at the threshold exist, so the curve ends there",
    "recall_at_threshold": "matched annotated boxes / all annotated boxes, at the threshold",
    "fracture_score": "max probability in the image",
    "roc_auc": "fracture score, fractured vs negative images; ties count 1/2 (Mann-Whitney U)",
    "sensitivity": "fractured images with at least one finding / fractured images",
    "specificity": "negative images without any finding / negative images",
    "false_findings_per_negative_image": "findings on negative images / negative images",
    "pixel_accuracy": "share of pixels where prob >= threshold equals the annotation, pooled over "
    "the images of the scope; all_background = the same for a prediction of nothing",
}
#: Top-level keys every report has (the tests check them).
REPORT_KEYS = (
    "model", "model_label", "model_file", "model_sha256", "split", "data_dir", "date", "command",
    "limit", "threshold", "threshold_source", "counts", "segmentation", "localization",
    "image_level", "pixel_accuracy", "by_body_part", "threshold_choice", "timing", "definitions",
    "per_image",
)


class UsageError(Exception):
    """Bad command line or missing data set: exit code 2, one-line message."""


# --------------------------------------------------------------------------- data + inference
@dataclass
class Case:
    """One evaluated image: its record and the model output at its own resolution.

    result.prob: (H, W) float32 in [0, 1]; findings are cached per threshold so the
    sweep recomputes only ``find_findings``, never the model.
    """

    record: object  # fracture.dataset.Record
    result: object  # prediction.PredictionResult
    _findings: dict = field(default_factory=dict, repr=False)
    _truth: np.ndarray | None = field(default=None, repr=False)

    @property
    def fractured(self) -> bool:
        return bool(self.record.fractured)

    def truth(self) -> np.ndarray:
        """Annotated mask (H, W) bool at the image's size; all False for a negative."""
        if self._truth is None:
            h, w = self.result.prob.shape
            self._truth = self.record.mask(h, w).astype(bool) if self.fractured else np.zeros((h, w), bool)
        return self._truth

    def findings(self, threshold: float) -> list:
        """Findings at ``threshold`` (prediction.find_findings on the cached probability map)."""
        key = round(float(threshold), 6)
        if key not in self._findings:
            from prediction import find_findings

            if math.isclose(threshold, self.result.threshold):
                self._findings[key] = list(self.result.findings)
            else:
                self._findings[key] = find_findings(self.result.prob, threshold)
        return self._findings[key]


def select_records(atlas, split: str, limit: int | None = None) -> list:
    """Fractured records of ``split`` (official file) then its negatives (id rule), by id."""
    frac = atlas.records(split, fractured=True)
    neg = atlas.records(split, fractured=False)
    if limit is not None:
        frac, neg = frac[:limit], neg[:limit]
    return frac + neg


def run_inference(predictor, records: list, threshold: float, batch_size: int = 8, progress: bool = True) -> tuple[list[Case], list[str]]:
    """Read and predict every record once. Returns (cases, one-line reasons of skipped files)."""
    from tqdm import tqdm

    from image_io import ImageLoadError
    from prediction import predict_images

    cases: list[Case] = []
    skipped: list[str] = []
    batch_recs, batch_px = [], []

    def flush():
        for rec, res in zip(batch_recs, predict_images(predictor, batch_px, threshold, batch_size), strict=True):
            cases.append(Case(rec, res))
        batch_recs.clear()
        batch_px.clear()

    bar = tqdm(records, desc=f"{predictor.name}", unit="img", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    for rec in bar:
        try:
            pixels = rec.load_pixels()
        except ImageLoadError as exc:
            log.warning("skipped %s", exc)
            skipped.append(str(exc))
            continue
        batch_recs.append(rec)
        batch_px.append(pixels)
        if len(batch_px) >= batch_size:
            flush()
    if batch_px:
        flush()
    return cases, skipped


# --------------------------------------------------------------------------- scoring
def _nan_to_none(x):
    """JSON-safe value: numpy scalars to Python, NaN/inf to None, recursively."""
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if not math.isfinite(x) else round(x, 6)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _mean_median(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return float(np.mean(values)), float(np.median(values))


def _detections(cases: list[Case], threshold: float, iou: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Pooled (scores (K,), is_tp (K,) bool, number of annotated boxes) at ``threshold``."""
    from metrics import match_boxes

    scores, tps, n_truth = [], [], 0
    for c in cases:
        found = c.findings(threshold)
        truth = c.record.boxes() if c.fractured else np.zeros((0, 4), np.float32)
        n_truth += len(truth)
        if not found:
            continue
        s = np.array([f.score for f in found], np.float64)
        b = np.array([f.box for f in found], np.float64)
        scores.append(s)
        tps.append(match_boxes(b, s, truth, iou))
    if not scores:
        return np.zeros(0), np.zeros(0, bool), n_truth
    return np.concatenate(scores), np.concatenate(tps), n_truth


def findings_f1(cases: list[Case], threshold: float, iou: float = CRITERION_IOU) -> dict:
    """The threshold criterion at one threshold: TP/FP/FN counts and F1 (see CRITERION_DEFINITION)."""
    from metrics import f1_from_counts

    _, is_tp, n_truth = _detections(cases, threshold, iou)
    tp = int(is_tp.sum())
    fp = int(is_tp.size - tp)
    fn = int(n_truth - tp)
    neg = [c for c in cases if not c.fractured]
    frac = [c for c in cases if c.fractured]
    return {
        "threshold": threshold,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "f1": f1_from_counts(tp, fp, fn),
        "sensitivity": float(np.mean([bool(c.findings(threshold)) for c in frac])) if frac else float("nan"),
        "false_findings_per_negative_image": float(np.mean([len(c.findings(threshold)) for c in neg])) if neg else float("nan"),
    }


def sweep_thresholds(cases: list[Case], thresholds=SWEEP, progress: bool = False) -> list[dict]:
    """``findings_f1`` at each threshold (findings recomputed, no model call)."""
    from tqdm import tqdm

    bar = tqdm(thresholds, desc="threshold sweep", unit="t", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    return [findings_f1(cases, t) for t in bar]


def choose_threshold(sweep: list[dict]) -> dict | None:
    """Row of ``sweep`` with the highest F1 (ties: higher threshold); None if the best F1 is 0/NaN."""
    valid = [r for r in sweep if r["f1"] is not None and math.isfinite(r["f1"])]
    if not valid:
        return None
    best = max(valid, key=lambda r: (r["f1"], r["threshold"]))
    return best if best["f1"] > 0 else None


def score_cases(cases: list[Case], threshold: float) -> dict:
    """Every metric section of the report at ``threshold``, plus the curves for the plots.

    Returns a dict with keys counts, segmentation, localization, image_level,
    pixel_accuracy, by_body_part, per_image and ``_curves`` (numpy arrays, not
    written to JSON).
    """
    from metrics import (
        average_precision,
        dice_score,
        iou_score,
        precision_recall_curve,
        roc_auc,
        roc_curve,
        sensitivity_specificity,
    )

    per_image = []
    pix = {"all_images": [0, 0, 0, 0], "fractured_images": [0, 0, 0, 0]}  # pixels, model ok, bg ok, fracture px
    for c in cases:
        pred = c.result.prob >= threshold
        truth = c.truth()
        n_px = truth.size
        model_ok = int(np.count_nonzero(pred == truth))
        n_frac_px = int(np.count_nonzero(truth))
        scopes = ("all_images", "fractured_images") if c.fractured else ("all_images",)
        for scope in scopes:
            acc = pix[scope]
            acc[0] += n_px
            acc[1] += model_ok
            acc[2] += n_px - n_frac_px  # all-background prediction is right wherever truth is background
            acc[3] += n_frac_px
        found = c.findings(threshold)
        per_image.append({
            "image_id": c.record.image_id,
            "fractured": c.fractured,
            "body_part": c.record.body_part,
            "width": int(truth.shape[1]),
            "height": int(truth.shape[0]),
            "n_annotated": len(c.record.instances),
            "dice": dice_score(pred, truth) if c.fractured else None,
            "iou": iou_score(pred, truth) if c.fractured else None,
            "fracture_score": c.result.fracture_score,
            "n_findings": len(found),
        })

    frac_rows = [r for r in per_image if r["fractured"]]
    neg_rows = [r for r in per_image if not r["fractured"]]
    dice_mean, dice_median = _mean_median([r["dice"] for r in frac_rows])
    iou_mean, iou_median = _mean_median([r["iou"] for r in frac_rows])

    localization, curves = {}, {}
    for iou in AP_IOUS:
        scores, is_tp, n_truth = _detections(cases, threshold, iou)
        tag = f"{round(iou * 100)}"
        localization[f"ap{tag}"] = average_precision(scores, is_tp, n_truth)
        localization[f"recall{tag}_at_threshold"] = float(is_tp.sum()) / n_truth if n_truth else float("nan")
        localization[f"precision{tag}_at_threshold"] = float(is_tp.sum()) / is_tp.size if is_tp.size else float("nan")
        curves[f"pr{tag}"] = precision_recall_curve(scores, is_tp, n_truth)
        localization["n_annotated_boxes"] = n_truth
        localization["n_findings"] = int(is_tp.size)

    labels = np.array([r["fractured"] for r in per_image], bool)
    fscore = np.array([r["fracture_score"] for r in per_image], np.float64)
    positive = np.array([r["n_findings"] > 0 for r in per_image], bool)
    sens, spec = sensitivity_specificity(positive, labels)
    curves["roc"] = roc_curve(fscore, labels)
    image_level = {
        "roc_auc": roc_auc(fscore, labels),
        "sensitivity": sens,
        "specificity": spec,
        "false_findings_per_negative_image": float(np.mean([r["n_findings"] for r in neg_rows])) if neg_rows else float("nan"),
        "findings_per_fractured_image": float(np.mean([r["n_findings"] for r in frac_rows])) if frac_rows else float("nan"),
        "n_fractured": len(frac_rows),
        "n_negative": len(neg_rows),
    }

    pixel_accuracy = {}
    for scope, (n_px, model_ok, bg_ok, n_frac_px) in pix.items():
        pixel_accuracy[scope] = {
            "model": model_ok / n_px if n_px else float("nan"),
            "all_background": bg_ok / n_px if n_px else float("nan"),
            "fracture_pixel_share": n_frac_px / n_px if n_px else float("nan"),
            "n_pixels": n_px,
        }

    parts = [p for p in ("hand", "leg", "hip", "shoulder", "mixed", "unknown") if any(r["body_part"] == p for r in per_image)]
    by_part = {}
    for part in parts:
        fr = [r for r in frac_rows if r["body_part"] == part]
        ng = [r for r in neg_rows if r["body_part"] == part]
        by_part[part] = {
            "n_fractured": len(fr),
            "n_negative": len(ng),
            "dice_mean": float(np.mean([r["dice"] for r in fr])) if fr else float("nan"),
            "sensitivity": float(np.mean([r["n_findings"] > 0 for r in fr])) if fr else float("nan"),
            "specificity": float(np.mean([r["n_findings"] == 0 for r in ng])) if ng else float("nan"),
        }

    return {
        "counts": {
            "fractured_images": len(frac_rows),
            "negative_images": len(neg_rows),
            "annotated_fractures": sum(r["n_annotated"] for r in frac_rows),
        },
        "segmentation": {
            "dice_mean": dice_mean,
            "dice_median": dice_median,
            "iou_mean": iou_mean,
            "iou_median": iou_median,
            "n_images": len(frac_rows),
        },
        "localization": localization,
        "image_level": image_level,
        "pixel_accuracy": pixel_accuracy,
        "by_body_part": by_part,
        "per_image": per_image,
        "_curves": curves,
    }


@dataclass
class Evaluation:
    """A finished evaluation: the JSON-ready report, the cases (for the grid) and the curves."""

    report: dict
    cases: list[Case]
    curves: dict


def evaluate(
    predictor,
    atlas,
    split: str,
    threshold: float,
    *,
    model_name: str | None = None,
    threshold_source: str = "given",
    model_sha256: str | None = None,
    model_file: str | None = None,
    limit: int | None = None,
    choose: bool = False,
    batch_size: int = 8,
    progress: bool = True,
    command: str | None = None,
) -> Evaluation:
    """Evaluate one model (behind a ``prediction.Predictor``) on ``split``; no files written.

    ``choose=True`` (valid only) sweeps ``SWEEP`` on the cached probability maps and
    scores the split at the best threshold; the report's ``threshold_choice`` holds
    the sweep. Raises UsageError for ``choose`` on another split.
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
        sweep = sweep_thresholds(cases, progress=progress)
        best = choose_threshold(sweep)
        choice = {"criterion": CRITERION, "definition": CRITERION_DEFINITION, "sweep": sweep, "chosen": None, "value": None}
        if best is None:
            log.warning("%s: no threshold gives any matched finding on %s; threshold left at %.2f", name, split, threshold)
        else:
            threshold = best["threshold"]
            threshold_source = f"chosen on valid by evaluate.py --choose-threshold ({CRITERION})"
            choice.update(chosen=best["threshold"], value=best["f1"])

    scored = score_cases(cases, threshold)
    curves = scored.pop("_curves")
    scored["counts"]["skipped_unreadable"] = len(skipped)
    scored["counts"]["skipped_files"] = skipped
    total = time.perf_counter() - t0
    report = {
        "model": name,
        "model_label": MODEL_LABELS.get(name, name),
        "model_file": model_file,
        "model_sha256": model_sha256,
        "split": split,
        "data_dir": str(atlas.root),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "limit": limit,
        "threshold": threshold,
        "threshold_source": threshold_source,
        **scored,
        "threshold_choice": choice,
        "timing": {
            "inference_s": t_infer,
            "total_s": total,
            "images_per_s": len(cases) / t_infer if t_infer > 0 else float("nan"),
        },
        "definitions": DEFINITIONS,
    }
    report = {k: report[k] for k in REPORT_KEYS}  # fixed key order, and fails loudly if one is missing
    return Evaluation(_nan_to_none(report), cases, curves)


# --------------------------------------------------------------------------- outputs
def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def markdown_table(reports: list[dict]) -> str:
    """Markdown table, one column per report (model), one row per headline number."""
    rows: list[tuple[str, list[str]]] = []

    def row(label, fn):
        rows.append((label, [fn(r) for r in reports]))

    row("images (fractured / negative / skipped)", lambda r: f"{r['counts']['fractured_images']} / {r['counts']['negative_images']} / {r['counts']['skipped_unreadable']}")
    row("threshold", lambda r: _fmt(r["threshold"], 2))
    row("Dice, mean (median)", lambda r: f"{_fmt(r['segmentation']['dice_mean'])} ({_fmt(r['segmentation']['dice_median'])})")
    row("IoU, mean (median)", lambda r: f"{_fmt(r['segmentation']['iou_mean'])} ({_fmt(r['segmentation']['iou_median'])})")
    row("box AP@50", lambda r: _fmt(r["localization"]["ap50"]))
    row("box AP@25", lambda r: _fmt(r["localization"]["ap25"]))
    row("box recall@50 / @25 at threshold", lambda r: f"{_fmt(r['localization']['recall50_at_threshold'])} / {_fmt(r['localization']['recall25_at_threshold'])}")
    row("image ROC-AUC", lambda r: _fmt(r["image_level"]["roc_auc"]))
    row("sensitivity / specificity", lambda r: f"{_fmt(r['image_level']['sensitivity'])} / {_fmt(r['image_level']['specificity'])}")
    row("false findings per negative image", lambda r: _fmt(r["image_level"]["false_findings_per_negative_image"], 2))
    row("pixel accuracy: model vs all-background", lambda r: f"{_fmt(r['pixel_accuracy']['all_images']['model'], 4)} vs {_fmt(r['pixel_accuracy']['all_images']['all_background'], 4)}")
    parts = []
    for r in reports:
        parts += [p for p in r["by_body_part"] if p not in parts]
    for p in parts:
        def cell(r, p=p):
            b = r["by_body_part"].get(p)
            if not b or not b["n_fractured"]:
                return "n/a"
            return f"{_fmt(b['dice_mean'])} / {_fmt(b['sensitivity'])} (n={b['n_fractured']})"
        row(f"{p}: Dice / sensitivity", cell)
    header = "| " + " | ".join([f"{reports[0]['split']} split"] + [r["model_label"] for r in reports]) + " |"
    sep = "|" + "---|" * (len(reports) + 1)
    body = ["| " + " | ".join([label, *cells]) + " |" for label, cells in rows]
    return "\n".join([header, sep, *body]) + "\n"


def _plot_pr(ev: Evaluation, path: Path) -> None:
    import matplotlib.pyplot as plt

    r = ev.report
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    for tag, color in (("50", "tab:blue"), ("25", "tab:orange")):
        precision, recall = ev.curves[f"pr{tag}"]
        if precision.size:
            ax.step(np.concatenate([[0], recall]), np.concatenate([[precision[0]], precision]), where="post", color=color,
                    label=f"IoU ≥ 0.{tag}: AP {_fmt(r['localization'][f'ap{tag}'])}")
        else:
            ax.plot([], [], color=color, label=f"IoU ≥ 0.{tag}: no findings")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall (annotated fractures found)", ylabel="precision (findings that are fractures)")
    _finish_plot(fig, ax, path, f"{r['model_label']}, {r['split']}: findings PR (threshold {r['threshold']:.2f})", "upper right")


def _plot_roc(ev: Evaluation, path: Path) -> None:
    import matplotlib.pyplot as plt

    r = ev.report
    fpr, tpr, _ = ev.curves["roc"]
    il = r["image_level"]
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="chance")
    ax.plot(fpr, tpr, color="tab:blue", label=f"max-probability score, AUC {_fmt(il['roc_auc'])}")
    if il["sensitivity"] is not None and il["specificity"] is not None:
        ax.plot([1 - il["specificity"]], [il["sensitivity"]], "o", color="tab:red", label=f"findings at threshold {r['threshold']:.2f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="1 - specificity (negatives flagged)", ylabel="sensitivity (fractured images flagged)")
    _finish_plot(fig, ax, path, f"{r['model_label']}, {r['split']}: image-level ROC ({il['n_fractured']} fractured, {il['n_negative']} negative)",
                 "lower right")


def _finish_plot(fig, ax, path: Path, title: str, legend_loc: str) -> None:
    """Title, legend and grid of a one-axes report plot; save it and free the figure."""
    import matplotlib.pyplot as plt

    ax.set_title(title, fontsize=9)
    ax.legend(loc=legend_loc, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _thumbnail(case: Case, threshold: float, height: int = 160) -> np.ndarray:
    """RGB uint8 thumbnail: annotation outline green, predicted outline red (drawn at full size)."""
    import cv2

    from prediction import display_gray

    gray = display_gray(case.record.load_pixels())
    rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    h, w = gray.shape
    thick = max(2, round(max(h, w) / 150))
    for mask, color in ((case.truth(), (0, 220, 0)), (case.result.prob >= threshold, (255, 40, 40))):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(rgb, contours, -1, color, thick)
    return cv2.resize(rgb, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)


def _plot_grid(ev: Evaluation, path: Path) -> bool:
    """The 8 best and 8 worst fractured images by Dice (fewer if the set is small). False if none."""
    import matplotlib.pyplot as plt

    r = ev.report
    dice = {p["image_id"]: p["dice"] for p in r["per_image"] if p["fractured"]}
    frac = sorted((c for c in ev.cases if c.fractured), key=lambda c: (-dice[c.record.image_id], c.record.image_id))
    if not frac:
        return False
    n_best = min(GRID_N, (len(frac) + 1) // 2)
    best = frac[:n_best]
    worst = frac[n_best:][-GRID_N:][::-1]  # worst first
    cols = max(len(best), len(worst), 1)
    width = max(1.7 * cols, 7.5)  # wide enough for title and credit even with a few images
    # Tall enough that each row's two-line titles clear the row above.
    fig, axes = plt.subplots(2, cols, figsize=(width, 5.4), dpi=100, squeeze=False, gridspec_kw={"hspace": 0.35})
    for row_i, (label, group) in enumerate((("best", best), ("worst", worst))):
        for col in range(cols):
            ax = axes[row_i][col]
            ax.axis("off")
            if col < len(group):
                c = group[col]
                ax.imshow(_thumbnail(c, r["threshold"]))
                ax.set_title(f"{c.record.image_id.removesuffix('.jpg')}\n{c.record.body_part}, Dice {dice[c.record.image_id]:.2f}", fontsize=7)
        axes[row_i][0].text(-0.08, 0.5, f"{len(group)} {label}", transform=axes[row_i][0].transAxes, rotation=90,
                            va="center", ha="right", fontsize=9)
    fig.suptitle(f"{r['model_label']}, {r['split']} split, threshold {r['threshold']:.2f}: green = annotation, red = model", fontsize=9)
    fig.text(0.5, 0.01, textwrap.fill(CREDIT, int(width * 16)), ha="center", va="bottom", fontsize=6, color="0.3")
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.06, top=0.86, wspace=0.08, hspace=0.35)
    fig.savefig(path)
    plt.close(fig)
    return True


def write_report(ev: Evaluation, out_dir: Path | str, grid: bool | None = None) -> list[Path]:
    """Write ``<model>_<split>.json``/``.md``/``_pr.png``/``_roc.png`` (+ ``_grid.png`` on test) into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{ev.report['model']}_{ev.report['split']}"
    written = [out / f"{stem}.json", out / f"{stem}.md", out / f"{stem}_pr.png", out / f"{stem}_roc.png"]
    written[0].write_text(json.dumps(ev.report, indent=2) + "\n", encoding="utf-8")
    written[1].write_text(markdown_table([ev.report]), encoding="utf-8")
    _plot_pr(ev, written[2])
    _plot_roc(ev, written[3])
    if grid if grid is not None else ev.report["split"] == "test":
        if _plot_grid(ev, out / f"{stem}_grid.png"):
            written.append(out / f"{stem}_grid.png")
    return written


def ship(ev: Evaluation, written: list[Path]) -> list[Path]:
    """Copy the report to ``Saved_model/<model>.metrics.json`` and the plots to ``Saved_model/report/``."""
    name = ev.report["model"]
    CONFIG.report_dir.mkdir(parents=True, exist_ok=True)
    shipped = [CONFIG.metrics_path(name)]
    shutil.copyfile(written[0], shipped[0])
    for p in written[1:]:
        dest = CONFIG.report_dir / p.name
        shutil.copyfile(p, dest)
        shipped.append(dest)
    return shipped


def write_threshold_to_manifest(manifest_path: Path | str, name: str, report: dict) -> None:
    """Record the chosen threshold in the model's manifest entry; other fields untouched.

    Sets ``threshold``, ``threshold_source`` and ``threshold_criterion`` (criterion,
    definition, value, split counts, the SHA-256 of the weights it was chosen for,
    date). Written atomically, in the same format as train.py writes it.
    """
    path = Path(manifest_path)
    manifest = json.loads(path.read_text(encoding="utf-8"))
    entry = manifest.get("models", {}).get(name)
    if entry is None:
        raise KeyError(f"{path}: no entry for model {name!r}")
    choice = report["threshold_choice"]
    entry["threshold"] = choice["chosen"]
    entry["threshold_source"] = report["threshold_source"]
    entry["threshold_criterion"] = {
        "name": CRITERION,
        "definition": CRITERION_DEFINITION,
        "value": choice["value"],
        "split": report["split"],
        "fractured_images": report["counts"]["fractured_images"],
        "negative_images": report["counts"]["negative_images"],
        "swept": f"{SWEEP[0]:.2f}..{SWEEP[-1]:.2f} step 0.05",
        "model_sha256": report["model_sha256"],
        "date": report["date"],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- CLI
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message}\n")


def _threshold(text: str) -> float:
    try:
        t = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"threshold {text!r} is not a number") from None
    if not 0.0 < t < 1.0:
        raise argparse.ArgumentTypeError(f"threshold {t} must be strictly between 0 and 1")
    return t


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} must be at least 1")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="evaluate.py", description="Evaluate the segmentation models on the official FracAtlas split.")
    p.add_argument("--model", required=True, choices=(*MODEL_NAMES, "all"))
    p.add_argument("--split", required=True, choices=("valid", "test"))
    p.add_argument("--data", help="FracAtlas directory (default: $FRACATLAS_DIR, then the default locations)")
    p.add_argument("--threshold", type=_threshold, help="probability threshold (default: the manifest's, chosen on valid)")
    p.add_argument("--out", default=str(CONFIG.reports_dir), help="output directory (default: reports/)")
    p.add_argument("--limit", type=_positive_int, help="only the first N fractured and first N negative images")
    p.add_argument("--choose-threshold", action="store_true", help="valid only: choose the threshold and write it into the manifest")
    p.add_argument("--ship", action="store_true", help="test only: also write Saved_model/<model>.metrics.json and Saved_model/report/")
    p.add_argument("--batch-size", type=_positive_int, default=8)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check_combination(args) -> None:
    if args.choose_threshold:
        if args.split != "valid":
            raise UsageError("--choose-threshold is only allowed with --split valid; choosing on the test split is not allowed")
        if args.threshold is not None:
            raise UsageError("--choose-threshold and --threshold exclude each other")
        if args.limit is not None:
            raise UsageError("--choose-threshold needs the whole valid split; drop --limit")
    if args.ship:
        if args.split != "test":
            raise UsageError("--ship publishes test-split results; use --split test")
        if args.limit is not None or args.threshold is not None:
            raise UsageError("--ship needs the whole test split at the manifest's threshold; drop --limit/--threshold")


def _run_model(name: str, args, atlas, manifest: dict, command: str) -> tuple[int, dict | None]:
    """Evaluate one named model as the command line asks; (exit code, report or None)."""
    from create_segmentation_model import ModelIntegrityError, load_named_model, sha256_file
    from prediction import Predictor

    entry = manifest.get("models", {}).get(name, {})
    if args.threshold is not None:
        threshold, source = args.threshold, "--threshold"
    elif "threshold" in entry:
        threshold, source = float(entry["threshold"]), f"manifest: {entry.get('threshold_source', 'unknown')}"
    else:
        threshold, source = CONFIG.default_threshold, "default (no manifest entry)"
    try:
        model = load_named_model(name)
    except (ModelIntegrityError, ValueError) as exc:
        log.error("%s", exc)
        return 1, None
    path = CONFIG.model_path(name)
    ev = evaluate(
        Predictor(model, name), atlas, args.split, threshold,
        model_name=name, threshold_source=source, model_sha256=sha256_file(path), model_file=path.name,
        limit=args.limit, choose=args.choose_threshold, batch_size=args.batch_size,
        progress=not args.no_progress, command=command,
    )
    written = write_report(ev, args.out)
    log.info("%s: wrote %s", name, ", ".join(str(p) for p in written))
    if args.ship:
        log.info("%s: shipped %s", name, ", ".join(str(p) for p in ship(ev, written)))
    if args.choose_threshold and ev.report["threshold_choice"]["chosen"] is not None:
        try:
            write_threshold_to_manifest(CONFIG.manifest_path, name, ev.report)
        except (OSError, KeyError, ValueError) as exc:
            log.error("%s: threshold not recorded: %s", name, exc)
            return 1, ev.report
        log.info("%s: threshold %.2f (%s = %.4f) written to %s", name, ev.report["threshold"], CRITERION,
                 ev.report["threshold_choice"]["value"], CONFIG.manifest_path)
    return 0, ev.report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        _check_combination(args)
        data_dir = resolve_data_dir(args.data)
        if data_dir is None:
            raise UsageError(f"FracAtlas not found: pass --data DIR or set ${CONFIG.data_env_var}")
        from fracture.dataset import DatasetError, FracAtlas

        try:
            atlas = FracAtlas(data_dir)
        except DatasetError as exc:
            raise UsageError(str(exc)) from None
    except UsageError as exc:
        sys.stderr.write(f"evaluate.py: error: {exc}\n")
        return 2

    from create_segmentation_model import read_manifest

    manifest = read_manifest()
    names = MODEL_NAMES if args.model == "all" else (args.model,)
    command = "python evaluate.py " + " ".join(argv)
    results = [_run_model(name, args, atlas, manifest, command) for name in names]
    codes = [code for code, _ in results]
    reports = [rep for _, rep in results if rep is not None]
    if reports:
        table = markdown_table(reports)
        if len(reports) > 1:
            Path(args.out, f"models_{args.split}.md").write_text(table, encoding="utf-8")
        sys.stdout.write(table)
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
