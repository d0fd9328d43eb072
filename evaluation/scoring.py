"""Every number of a report from a list of cases at one threshold (see ``definitions.DEFINITIONS``).

Pure numpy over ``metrics`` (the one formula per metric); no model, no files.
"""

from __future__ import annotations

import math

import numpy as np

from evaluation.cases import Case
from evaluation.definitions import AP_IOUS, CRITERION_IOU, TOPK_HIT
from evaluation.metrics import (
    average_precision,
    dice_score,
    f1_from_counts,
    iou_score,
    match_boxes,
    precision_recall_curve,
    roc_auc,
    roc_curve,
    sensitivity_specificity,
    topk_hits,
)

#: FracAtlas's body parts, then the second source's (fracture.bone_fracture_yolo8.BODY_PARTS).
BODY_PARTS = ("hand", "leg", "hip", "shoulder", "mixed", "elbow", "fingers", "forearm", "humerus", "wrist", "unknown")


def json_safe(x):
    """JSON-safe value: numpy scalars to Python, NaN/inf to None, recursively."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
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


def _boxes_scores(found: list) -> tuple[np.ndarray, np.ndarray]:
    """One image's findings as (boxes (K, 4) float64 x0, y0, x1, y1, scores (K,) float64)."""
    return (np.array([f.box for f in found], np.float64).reshape(-1, 4), np.array([f.score for f in found], np.float64))


def _top_k_hit_rate(cases: list[Case], threshold: float) -> float:
    """Annotated boxes matched by one of their image's ``TOPK_HIT`` best findings / all annotated boxes."""
    hits = n_truth = 0
    for c in (c for c in cases if c.fractured):
        truth = c.record.boxes()
        hits += topk_hits(*_boxes_scores(c.findings(threshold)), truth, TOPK_HIT, CRITERION_IOU)
        n_truth += len(truth)
    return hits / n_truth if n_truth else float("nan")


def _detections(cases: list[Case], threshold: float, iou: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Pooled (scores (K,), is_tp (K,) bool, number of annotated boxes) at ``threshold``."""
    scores, tps, n_truth = [], [], 0
    for c in cases:
        found = c.findings(threshold)
        truth = c.record.boxes() if c.fractured else np.zeros((0, 4), np.float32)
        n_truth += len(truth)
        if not found:
            continue
        b, s = _boxes_scores(found)
        scores.append(s)
        tps.append(match_boxes(b, s, truth, iou))
    if not scores:
        return np.zeros(0), np.zeros(0, bool), n_truth
    return np.concatenate(scores), np.concatenate(tps), n_truth


def findings_f1(cases: list[Case], threshold: float, iou: float = CRITERION_IOU) -> dict:
    """The threshold criterion at one threshold: TP/FP/FN counts and F1 (see CRITERION_DEFINITION)."""
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


def _per_image(cases: list[Case], threshold: float) -> tuple[list[dict], dict]:
    """One row per case, and the pooled pixel counts per scope [pixels, model ok, background ok, fracture px]."""
    per_image = []
    pix = {"all_images": [0, 0, 0, 0], "fractured_images": [0, 0, 0, 0]}
    for c in cases:
        # The marked pixels: what the app outlines (the findings' regions), not every pixel >= threshold.
        pred = c.at(threshold).mask() > 0
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
        per_image.append({
            "image_id": c.record.image_id,
            "fractured": c.fractured,
            "body_part": c.record.body_part,
            "width": int(truth.shape[1]),
            "height": int(truth.shape[0]),
            "n_annotated": len(c.record.instances),
            "dice": dice_score(pred, truth) if c.fractured else None,
            "iou": iou_score(pred, truth) if c.fractured else None,
            # At this threshold: "best_finding" depends on the findings that exist at it.
            "fracture_score": c.at(threshold).image_score,
            "image_scores": c.at(threshold).image_scores(),
            "max_prob": c.result.fracture_score,
            "n_findings": len(c.findings(threshold)),
        })
    return per_image, pix


def _coco(cases: list[Case], threshold: float) -> dict:
    """Box and mask AP from pycocotools' COCOeval on the fractured images only (as published detector figures)."""
    from evaluation.coco import CocoImage, coco_ap

    images = []
    for c in cases:
        if not c.fractured:
            continue
        r = c.at(threshold)
        labels = r.finding_labels()
        found = r.findings
        images.append(CocoImage(
            r.height, r.width, [list(inst.polygons) for inst in c.record.instances], c.record.boxes(),
            np.array([f.box for f in found], np.float64).reshape(-1, 4), np.array([f.score for f in found], np.float64),
            [labels == f.index for f in found],
        ))
    return coco_ap(images) if images else {}


def _localization(cases: list[Case], threshold: float) -> tuple[dict, dict]:
    """Box AP / recall / precision at each IoU level of ``AP_IOUS``, and the PR curves; ``coco``: the reference evaluator."""
    localization, curves = {}, {}
    localization["coco_fractured_only"] = _coco(cases, threshold)
    for iou in AP_IOUS:
        scores, is_tp, n_truth = _detections(cases, threshold, iou)
        tag = f"{round(iou * 100)}"
        localization[f"ap{tag}"] = average_precision(scores, is_tp, n_truth)
        localization[f"recall{tag}_at_threshold"] = float(is_tp.sum()) / n_truth if n_truth else float("nan")
        localization[f"precision{tag}_at_threshold"] = float(is_tp.sum()) / is_tp.size if is_tp.size else float("nan")
        curves[f"pr{tag}"] = precision_recall_curve(scores, is_tp, n_truth)
        localization["n_annotated_boxes"] = n_truth
        localization["n_findings"] = int(is_tp.size)
    localization[f"top{TOPK_HIT}_hit_rate"] = _top_k_hit_rate(cases, threshold)
    return localization, curves


def _mean_of(rows: list[dict], fn) -> float:
    return float(np.mean([fn(r) for r in rows])) if rows else float("nan")


def _image_level(per_image: list[dict]) -> tuple[dict, tuple]:
    """Image-level numbers (fracture score = the model's chosen image score) and its ROC curve;
    ``roc_auc_by_score`` gives the AUC of every candidate score."""
    frac_rows = [r for r in per_image if r["fractured"]]
    neg_rows = [r for r in per_image if not r["fractured"]]
    labels = np.array([r["fractured"] for r in per_image], bool)
    fscore = np.array([r["fracture_score"] for r in per_image], np.float64)
    positive = np.array([r["n_findings"] > 0 for r in per_image], bool)
    sens, spec = sensitivity_specificity(positive, labels)
    by_score = {}
    for name in (per_image[0]["image_scores"] if per_image else {}):
        by_score[name] = roc_auc(np.array([r["image_scores"][name] for r in per_image], np.float64), labels)
    image_level = {
        "roc_auc": roc_auc(fscore, labels),
        "roc_auc_by_score": by_score,
        "sensitivity": sens,
        "specificity": spec,
        "false_findings_per_negative_image": _mean_of(neg_rows, lambda r: r["n_findings"]),
        "findings_per_fractured_image": _mean_of(frac_rows, lambda r: r["n_findings"]),
        "n_fractured": len(frac_rows),
        "n_negative": len(neg_rows),
    }
    return image_level, roc_curve(fscore, labels)


def _pixel_accuracy(pix: dict) -> dict:
    out = {}
    for scope, (n_px, model_ok, bg_ok, n_frac_px) in pix.items():
        out[scope] = {
            "model": model_ok / n_px if n_px else float("nan"),
            "all_background": bg_ok / n_px if n_px else float("nan"),
            "fracture_pixel_share": n_frac_px / n_px if n_px else float("nan"),
            "n_pixels": n_px,
        }
    return out


def _by_body_part(per_image: list[dict]) -> dict:
    by_part = {}
    for part in (p for p in BODY_PARTS if any(r["body_part"] == p for r in per_image)):
        fr = [r for r in per_image if r["fractured"] and r["body_part"] == part]
        ng = [r for r in per_image if not r["fractured"] and r["body_part"] == part]
        by_part[part] = {
            "n_fractured": len(fr),
            "n_negative": len(ng),
            "dice_mean": _mean_of(fr, lambda r: r["dice"]),
            "sensitivity": _mean_of(fr, lambda r: r["n_findings"] > 0),
            "specificity": _mean_of(ng, lambda r: r["n_findings"] == 0),
        }
    return by_part


def score_cases(cases: list[Case], threshold: float) -> dict:
    """Every metric section of the report at ``threshold``, plus the curves for the plots.

    Returns a dict with keys counts, segmentation, localization, image_level,
    pixel_accuracy, by_body_part, per_image and ``_curves`` (numpy arrays, not
    written to JSON).
    """
    per_image, pix = _per_image(cases, threshold)
    frac_rows = [r for r in per_image if r["fractured"]]
    dice_mean, dice_median = _mean_median([r["dice"] for r in frac_rows])
    iou_mean, iou_median = _mean_median([r["iou"] for r in frac_rows])
    localization, curves = _localization(cases, threshold)
    image_level, curves["roc"] = _image_level(per_image)
    return {
        "counts": {
            "fractured_images": len(frac_rows),
            "negative_images": len(per_image) - len(frac_rows),
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
        "pixel_accuracy": _pixel_accuracy(pix),
        "by_body_part": _by_body_part(per_image),
        "per_image": per_image,
        "_curves": curves,
    }
