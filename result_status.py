"""How to read one image's result: its state (finding, borderline, no finding) and its calibrated
fracture likelihood. Pure numpy/OpenCV, no UI.

A near miss must not look like an all-clear: an image without a finding whose highest
score is within ``margin`` of the threshold is *borderline* ("review this area", with the
spot marked), and the rest is *no finding at the threshold*, which is never called clear
(the models miss fractures at every threshold; ``reading`` says how many). The likelihood is the model's image-level
score (the manifest's ``image_score``) through the calibration fitted on valid (the
manifest's ``calibration``); without one there is no likelihood, only scores. The app,
``predict.py``'s JSON (``"status"``) and the downloads all take both from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sized

import cv2
import numpy as np

from calibration import apply_calibration, valid_calibration
from findings import IMAGE_SCORES, FindingRule, image_scores
from important_variables import CONFIG

FINDING, BORDERLINE, NO_FINDING = "finding", "borderline", "no_finding"
STATUSES = (FINDING, BORDERLINE, NO_FINDING)


def result_status(findings: Sized | int, top_score: float, threshold: float, margin: float) -> str:
    """"finding" when there is at least one finding; else "borderline" when
    ``top_score >= threshold - margin``; else "no_finding".

    findings: the findings (any sized collection) or their number. top_score: the
    image's highest fracture score in [0, 1]. margin ≥ 0 (0: no borderline state).
    """
    n = findings if isinstance(findings, int) else len(findings)
    if n > 0:
        return FINDING
    return BORDERLINE if float(top_score) >= float(threshold) - max(0.0, float(margin)) else NO_FINDING


def borderline_margin(entry: Mapping | None) -> float:
    """A model's margin from its manifest entry (``borderline_margin``, chosen on valid),
    else the configured default. Values outside [0, 1) fall back too."""
    try:
        value = float((entry or {})["borderline_margin"])
    except (KeyError, TypeError, ValueError):
        return CONFIG.default_borderline_margin
    return value if 0.0 <= value < 1.0 else CONFIG.default_borderline_margin


def borderline_spot(prob: np.ndarray, threshold: float, margin: float) -> tuple[int, int, int, int] | None:
    """Box (x0, y0, x1, y1), x1/y1 exclusive, of the spot to review on a borderline image.

    The connected region of ``prob >= threshold - margin`` that holds the highest
    score; None when even the highest score is below that level. prob: (H, W) float
    in [0, 1].
    """
    if prob.size == 0:
        return None
    level = float(threshold) - max(0.0, float(margin))
    y, x = np.unravel_index(int(np.argmax(prob)), prob.shape)
    if prob[y, x] < level:
        return None
    _n, labels, stats, _ = cv2.connectedComponentsWithStats((prob >= level).view(np.uint8), connectivity=8)
    bx, by, bw, bh, _area = (int(v) for v in stats[labels[y, x]])
    return (bx, by, bx + bw, by + bh)


def likelihood_from_scores(scores: Mapping[str, float], entry: Mapping | None) -> float | None:
    """Calibrated fracture likelihood in [0, 1] from an image's candidate scores ({name: value},
    see ``findings.image_scores``), or None when the entry has no usable calibration.

    The score fed to the calibration is the entry's ``image_score`` ("max_prob" when absent).
    """
    entry = entry or {}
    cal = valid_calibration(entry.get("calibration"))
    kind = entry.get("image_score") or "max_prob"
    if cal is None or kind not in IMAGE_SCORES or kind not in scores:
        return None  # not calibrated, or a score this code cannot compute: no number rather than a wrong one
    return apply_calibration(scores[kind], cal)


def likelihood(prob: np.ndarray, finding_scores: list[float], entry: Mapping | None) -> float | None:
    """:func:`likelihood_from_scores` of a probability map (H, W) float in [0, 1] and its findings'
    scores, with the entry's finding rule (``findings``, e.g. ``topk_px``) for the top-k score."""
    entry = entry or {}
    fields = entry.get("findings") if isinstance(entry.get("findings"), Mapping) else {}
    rule = FindingRule(**{k: v for k, v in fields.items() if k in FindingRule.__dataclass_fields__})
    return likelihood_from_scores(image_scores(prob, list(finding_scores), rule), entry)


def status_fields(result, entry: Mapping | None, threshold: float | None = None) -> dict:
    """The reading of ``result`` (a ``PredictionResult``) as JSON fields: {"status",
    "borderline_margin", "review_box" ([x0, y0, x1, y1] of the spot to review on a borderline
    image, x1/y1 exclusive, else None), "fracture_likelihood" (None: not calibrated)}.

    entry: the model's manifest entry (a mapping; None or {} = defaults, no calibration).
    threshold: the threshold the status is judged at (default: the result's own).
    """
    margin = borderline_margin(entry)
    t = result.threshold if threshold is None else threshold
    # The result's own candidate scores (its finding rule), as the calibration was fitted on.
    scores = result.image_scores() if hasattr(result, "image_scores") else image_scores(
        result.prob, [f.score for f in result.findings])
    lk = likelihood_from_scores(scores, entry)
    status = result_status(result.findings, result.fracture_score, t, margin)
    spot = borderline_spot(result.prob, t, margin) if status == BORDERLINE else None
    return {
        "status": status,
        "borderline_margin": round(margin, 4),
        "review_box": None if spot is None else list(spot),
        "fracture_likelihood": None if lk is None else round(lk, 4),
    }


__all__ = ["FINDING", "BORDERLINE", "NO_FINDING", "STATUSES", "result_status", "borderline_margin",
           "borderline_spot", "likelihood", "likelihood_from_scores", "status_fields"]
