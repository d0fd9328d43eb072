"""How sure a report's image-level numbers are: bootstrap intervals over the images.

A split of 61-82 fractured images moves a mean Dice or an AUC by a few hundredths from one
image more or less, so a difference between two models (or two versions of one) is only
worth reading beside its interval. Pure numpy over a report's ``per_image`` rows (the
fields ``fractured``, ``dice``, ``fracture_score``, ``n_findings``) with the formulas of
``evaluation.metrics``; no model, no files.

Resampling is stratified: the fractured and the negative images are drawn with replacement
separately, so every resample keeps the split's counts (and an AUC exists in each).
Box AP is not covered: it pools the findings of all images and needs their boxes, which
the rows do not hold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from evaluation.metrics import roc_auc, sensitivity_specificity

#: The numbers given an interval, in the order reports show them.
INTERVAL_METRICS = ("dice_mean", "roc_auc", "sensitivity", "specificity", "false_findings_per_negative_image")
RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
METHOD = ("stratified percentile bootstrap over images: the fractured and the negative images resampled "
          "with replacement separately ({n} resamples, seed {seed}); {level:.0%} interval = the "
          "{lo:.1%} and {hi:.1%} quantiles of the resampled values")


class _Arrays:
    """The per-image fields as arrays; ``frac`` / ``neg``: row indices of each class."""

    def __init__(self, rows: Sequence[Mapping]):
        self.fractured = np.array([bool(r["fractured"]) for r in rows], bool)
        self.dice = np.array([float(r["dice"]) if r["fractured"] else np.nan for r in rows], np.float64)
        self.score = np.array([float(r["fracture_score"]) for r in rows], np.float64)
        self.found = np.array([int(r["n_findings"]) for r in rows], np.int64)
        self.frac, self.neg = np.flatnonzero(self.fractured), np.flatnonzero(~self.fractured)


def _metrics(a: _Arrays, frac: np.ndarray, neg: np.ndarray) -> dict[str, float]:
    """The :data:`INTERVAL_METRICS` of the images ``frac`` + ``neg`` (index arrays, repeats allowed); the same
    formulas as ``evaluation.scoring`` (NaN where a class is absent)."""
    nan = float("nan")
    both = np.concatenate([frac, neg])
    sens, spec = sensitivity_specificity(a.found[both] > 0, a.fractured[both])
    return {
        "dice_mean": float(a.dice[frac].mean()) if frac.size else nan,
        "roc_auc": roc_auc(a.score[both], a.fractured[both]),
        "sensitivity": sens,
        "specificity": spec,
        "false_findings_per_negative_image": float(a.found[neg].mean()) if neg.size else nan,
    }


def _resamples(a: _Arrays, n: int, seed: int):
    """``n`` stratified resamples (frac indices, neg indices) of ``a``, reproducible by ``seed``."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield (rng.choice(a.frac, a.frac.size) if a.frac.size else a.frac,
               rng.choice(a.neg, a.neg.size) if a.neg.size else a.neg)


def _finite_values(values: list[float]) -> np.ndarray:
    """The finite ones of ``values`` (a resample without a class gives NaN), as float64."""
    return np.array([x for x in values if math.isfinite(x)], np.float64)


def _interval(v: np.ndarray, level: float) -> tuple[float | None, float | None]:
    """The ``level`` percentile interval of the finite resampled values ``v``; (None, None) when there are none."""
    if not v.size:
        return None, None
    lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _method(n: int, seed: int, level: float) -> str:
    return METHOD.format(n=n, seed=seed, level=level, lo=(1 - level) / 2, hi=(1 + level) / 2)


def image_intervals(rows: Sequence[Mapping], n: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> dict:
    """{"method", "metrics": {name: {"value", "low", "high"}}} for a report's ``per_image`` rows.

    ``value`` is the number on all the rows (the report's own); low/high bound the ``level``
    interval; None where the number does not exist (e.g. AUC without negatives).
    """
    a = _Arrays(rows)
    point = _metrics(a, a.frac, a.neg)
    boot = [_metrics(a, f, g) for f, g in _resamples(a, n, seed)]
    out = {}
    for name in INTERVAL_METRICS:
        lo, hi = _interval(_finite_values([b[name] for b in boot]), level)
        out[name] = {"value": point[name] if math.isfinite(point[name]) else None, "low": lo, "high": hi}
    return {"method": _method(n, seed, level), "metrics": out}


def paired_differences(rows_a: Sequence[Mapping], rows_b: Sequence[Mapping], n: int = RESAMPLES, seed: int = SEED,
                       level: float = LEVEL) -> dict:
    """B minus A on the same images: {"method", "n_images", "metrics": {name: {"a", "b", "difference", "low", "high",
    "share_b_better"}}}. Each resample draws the same images for both (paired), so what the two share cancels.

    ``share_b_better``: the share of resamples where B is better (higher, or lower for false findings).
    Raises ValueError when the two reports do not hold the same images (another split or source).
    """
    by_id = {r["image_id"]: r for r in rows_b}
    if sorted(by_id) != sorted(r["image_id"] for r in rows_a):
        raise ValueError("the two reports are not on the same images (another split, source or limit)")
    a, b = _Arrays(rows_a), _Arrays([by_id[r["image_id"]] for r in rows_a])
    pa, pb = _metrics(a, a.frac, a.neg), _metrics(b, b.frac, b.neg)
    diffs: dict[str, list[float]] = {m: [] for m in INTERVAL_METRICS}
    for f, g in _resamples(a, n, seed):
        ma, mb = _metrics(a, f, g), _metrics(b, f, g)
        for m in INTERVAL_METRICS:
            diffs[m].append(mb[m] - ma[m])
    out = {}
    for m in INTERVAL_METRICS:
        d = _finite_values(diffs[m])
        lo, hi = _interval(d, level)
        sign = -1.0 if m == "false_findings_per_negative_image" else 1.0
        better = float(np.mean(sign * d > 0)) if d.size else None
        delta = pb[m] - pa[m]
        out[m] = {"a": _finite(pa[m]), "b": _finite(pb[m]), "difference": _finite(delta), "low": lo, "high": hi,
                  "share_b_better": better}
    return {"method": "paired " + _method(n, seed, level), "n_images": len(rows_a), "metrics": out}


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
