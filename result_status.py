"""The three states of one image's result: finding, borderline, clean. Pure numpy/OpenCV, no UI.

A near miss must not look like an all-clear: an image without a finding whose highest
score is within ``margin`` of the threshold is *borderline* ("review this area", with the
spot marked), and only the rest is *clean*. The app, ``predict.py``'s JSON
(``"status"``) and the downloads all take the state from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sized

import cv2
import numpy as np

from important_variables import CONFIG

FINDING, BORDERLINE, CLEAN = "finding", "borderline", "clean"
STATUSES = (FINDING, BORDERLINE, CLEAN)


def result_status(findings: Sized | int, top_score: float, threshold: float, margin: float) -> str:
    """"finding" when there is at least one finding; else "borderline" when
    ``top_score >= threshold - margin``; else "clean".

    findings: the findings (any sized collection) or their number. top_score: the
    image's highest fracture score in [0, 1]. margin ≥ 0 (0: no borderline state).
    """
    n = findings if isinstance(findings, int) else len(findings)
    if n > 0:
        return FINDING
    return BORDERLINE if float(top_score) >= float(threshold) - max(0.0, float(margin)) else CLEAN


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


STATUS_TEXT = {
    FINDING: "Possible fracture: review the marked region(s).",
    BORDERLINE: "Borderline: no region reached the threshold, but one came close. Review this area.",
    CLEAN: "No fracture found.",
}

__all__ = ["FINDING", "BORDERLINE", "CLEAN", "STATUSES", "STATUS_TEXT", "result_status", "borderline_margin",
           "borderline_spot"]
