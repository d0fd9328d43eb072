"""Image-level score → calibrated fracture likelihood, and how well that likelihood is calibrated.

Pure numpy + scikit-learn (fit only) + matplotlib (plot only, imported on use); no UI, no I/O.

The image-level score (for example the highest fracture probability in the image) is
not a probability: normal growth plates score 0.96. A calibration maps it to the share
of images with that score that really hold a fracture, fitted on the valid split:

- ``fit_calibration(scores, labels)`` → a JSON-serialisable dict stored in the model
  manifest (``models.<name>.calibration``). It is always a monotone piecewise-linear
  curve ``x`` → ``y``, so applying it is one ``np.interp`` whatever the method;
- ``apply_calibration(score, cal)`` → likelihood in [0, 1];
- ``expected_calibration_error`` and ``reliability_bins``: the reliability check, best
  on a split the calibration was not fitted on (``check=`` of ``fit_calibration``);
- ``plot_reliability``: the reliability diagram (matplotlib Figure, no pyplot state).

Shapes: ``scores`` / ``probs`` are 1-D float arrays in [0, 1] (one value per image);
``labels`` 1-D of 0/1 (1 = the image has an annotated fracture), same length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

METHODS = ("isotonic", "platt")
DEFAULT_BINS = 10
#: Points of the stored curve for Platt scaling: the sigmoid on a 0..1 grid of step
#: 0.005; linear interpolation between them is within 1e-4 of the exact sigmoid for
#: the slopes seen here, far below what "≈ N %" shows.
PLATT_GRID = 201


def _as_arrays(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length ({s.size} vs {y.size})")
    if s.size == 0:
        raise ValueError("no scores given")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("labels must be 0 or 1")
    return s, y.astype(np.float64)


# --------------------------------------------------------------------------- fit / apply
def _fit_isotonic(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Knots (x, y) of scikit-learn's IsotonicRegression on scores ``s`` and labels ``y``."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(s, y)
    # IsotonicRegression.predict is linear interpolation between these knots and
    # clips outside them: exactly np.interp over (x, y).
    return np.asarray(iso.X_thresholds_, float), np.asarray(iso.y_thresholds_, float), {}


def _fit_platt(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """The Platt sigmoid sampled at PLATT_GRID knots, and its slope ``a`` and offset ``b``."""
    from sklearn.linear_model import LogisticRegression

    # C large: plain maximum likelihood (Platt 1999), no shrinkage of the slope.
    lr = LogisticRegression(C=1e6, solver="lbfgs", max_iter=1000).fit(s[:, None], y)
    a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    x_knots = np.linspace(min(0.0, s.min()), max(1.0, s.max()), PLATT_GRID)
    return x_knots, 1.0 / (1.0 + np.exp(-(a * x_knots + b))), {"a": a, "b": b}


def fit_calibration(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    method: str = "isotonic",
    fitted_on: str = "valid",
    bins: int = DEFAULT_BINS,
    check: tuple[Sequence[float], Sequence[int]] | None = None,
    check_split: str = "test",
) -> dict:
    """Fit score → P(fracture) and return it as a plain dict for the manifest.

    method: "isotonic" (scikit-learn IsotonicRegression, monotone step-wise linear;
    needs no shape assumption, wants a few hundred images) or "platt" (logistic
    regression on the score: a smooth sigmoid, steadier on small sets).

    The dict: {"method", "x", "y" (the curve, x strictly increasing, y non-decreasing in
    [0, 1]), "n", "n_positive", "fitted_on", "reliability"}. "reliability" is the
    check of the calibrated likelihood: on ``check`` = (scores, labels) of another split
    when given (its name in ``check_split``), else on the fitting data itself, which is
    optimistic and labelled so ("in_sample": true). It holds "split", "n", "ece",
    "ece_uncalibrated" (the raw score read as a probability) and "bins".
    """
    s, y = _as_arrays(scores, labels)
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; expected one of {', '.join(METHODS)}")
    if y.min() == y.max():
        raise ValueError("calibration needs images with and without fracture (labels are all one class)")
    x_knots, y_knots, extra = _fit_isotonic(s, y) if method == "isotonic" else _fit_platt(s, y)
    if x_knots.size == 1:  # a single knot (all scores equal): a flat curve over [0, 1]
        x_knots, y_knots = np.array([0.0, 1.0]), np.repeat(y_knots, 2)
    cal = {
        "method": method,
        "x": [round(float(v), 8) for v in x_knots],
        "y": [round(float(v), 8) for v in np.clip(y_knots, 0.0, 1.0)],
        "n": int(s.size),
        "n_positive": int(y.sum()),
        "fitted_on": fitted_on,
        **extra,
    }
    cal["x"], cal["y"] = _strictly_increasing(cal["x"], cal["y"])
    if check is not None:
        cs, cy = _as_arrays(*check)
        split, in_sample = check_split, False
    else:
        cs, cy, split, in_sample = s, y, fitted_on, True
    cal["reliability"] = reliability_report(cs, cy, cal, bins=bins, split=split, in_sample=in_sample)
    return cal


def _strictly_increasing(x: list[float], y: list[float]) -> tuple[list[float], list[float]]:
    """Drop knots whose x repeats after rounding (np.interp wants increasing x)."""
    xs, ys = [x[0]], [y[0]]
    for xi, yi in zip(x[1:], y[1:], strict=True):
        if xi > xs[-1]:
            xs.append(xi)
            ys.append(yi)
        else:  # same x: keep the larger y so the curve stays non-decreasing
            ys[-1] = max(ys[-1], yi)
    if len(xs) == 1:
        xs, ys = [xs[0], xs[0] + 1e-6], [ys[0], ys[0]]
    return xs, ys


def valid_calibration(cal) -> dict | None:
    """``cal`` when it is a usable calibration dict, else None (the app then says "not calibrated").

    Usable: "x" and "y" lists of the same length ≥ 2, finite, x strictly increasing,
    y in [0, 1] and non-decreasing.
    """
    if not isinstance(cal, Mapping):
        return None
    try:
        x = np.asarray(cal["x"], dtype=np.float64)
        y = np.asarray(cal["y"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        return None
    if x.ndim != 1 or x.shape != y.shape or x.size < 2 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return None
    if np.any(np.diff(x) <= 0) or np.any(np.diff(y) < -1e-9) or y.min() < 0.0 or y.max() > 1.0:
        return None
    return dict(cal)


def apply_calibration(score, cal: Mapping):
    """Calibrated likelihood in [0, 1] of an image-level score (float in, float out;
    an array in gives an array of the same shape). Scores outside the fitted range
    take the end values (as scikit-learn's ``out_of_bounds="clip"``)."""
    out = np.clip(np.interp(np.asarray(score, dtype=np.float64), cal["x"], cal["y"]), 0.0, 1.0)
    return float(out) if out.ndim == 0 else out


# --------------------------------------------------------------------------- from evaluation reports
def _score_of(rec: Mapping, kind: str) -> float | None:
    """``kind``'s value in one per-image record: its "image_scores" dict (the evaluation's
    schema), else a field of that name, else, for "max_prob" in reports without
    "image_scores", "fracture_score" (then the maximum probability)."""
    scores = rec.get("image_scores")
    if isinstance(scores, Mapping):
        value = scores.get(kind)
    elif kind in rec:
        value = rec.get(kind)
    else:
        value = rec.get("fracture_score") if kind == "max_prob" else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def scores_and_labels(per_image: Sequence[Mapping], kind: str = "max_prob") -> tuple[np.ndarray, np.ndarray] | None:
    """(scores, labels) of an evaluation report's ``per_image`` records for image score ``kind``.

    Each record needs "fractured" (bool) and the score (see ``_score_of``). None when a
    record lacks them or the split has only one class.
    """
    scores, labels = [], []
    for rec in per_image:
        value = _score_of(rec, kind)
        if value is None or not isinstance(rec.get("fractured"), bool):
            return None
        scores.append(value)
        labels.append(int(rec["fractured"]))
    return (np.asarray(scores), np.asarray(labels)) if scores and 0 < sum(labels) < len(labels) else None


def fit_from_reports(valid_report: Mapping, kind: str = "max_prob", method: str = "isotonic",
                     test_report: Mapping | None = None) -> dict:
    """``fit_calibration`` on the valid report's per-image scores (``evaluate.py --split valid``'s
    ``reports/<model>_valid.json``), checked on the test report's when given.

    Returns the dict to store as the manifest's ``calibration`` (with ``image_score`` = ``kind``
    beside it). Raises ValueError when the valid report lacks the scores.
    """
    if valid_report.get("split") != "valid":
        raise ValueError(f"calibrate on the valid split, not {valid_report.get('split')!r}")
    fit = scores_and_labels(valid_report.get("per_image") or [], kind)
    if fit is None:
        raise ValueError(f"the valid report has no per-image {kind!r} scores with both classes")
    check = scores_and_labels(test_report.get("per_image") or [], kind) if test_report is not None else None
    return fit_calibration(*fit, method=method, fitted_on="valid", check=check,
                           check_split=str(test_report.get("split", "test")) if test_report is not None else "test")


# --------------------------------------------------------------------------- reliability
def _bin_index(probs: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bins over [0, 1]: [0, 1/b), [1/b, 2/b), ..., [(b-1)/b, 1] (1.0 in the last)."""
    return np.clip((np.clip(probs, 0.0, 1.0) * bins).astype(np.int64), 0, bins - 1)


def reliability_bins(probs, labels, bins: int = DEFAULT_BINS) -> list[dict]:
    """Per equal-width bin of predicted probability: {"lo", "hi", "n", "mean_prob", "frac_pos"}.

    ``mean_prob``: mean predicted probability in the bin; ``frac_pos``: share of
    images in it that hold a fracture. Both None for an empty bin (n = 0).
    """
    p, y = _as_arrays(probs, labels)
    idx = _bin_index(p, bins)
    out = []
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        out.append({
            "lo": round(b / bins, 6),
            "hi": round((b + 1) / bins, 6),
            "n": n,
            "mean_prob": float(p[sel].mean()) if n else None,
            "frac_pos": float(y[sel].mean()) if n else None,
        })
    return out


def expected_calibration_error(probs, labels, bins: int = DEFAULT_BINS) -> float:
    """ECE = Σ_b (n_b / N) · |mean predicted probability_b − share of fractures_b|, over
    ``bins`` equal-width bins of [0, 1]. 0 = perfectly calibrated; in [0, 1]."""
    rows = reliability_bins(probs, labels, bins)
    total = sum(r["n"] for r in rows)
    return float(sum(r["n"] / total * abs(r["mean_prob"] - r["frac_pos"]) for r in rows if r["n"]))


def reliability_report(scores, labels, cal: Mapping, bins: int = DEFAULT_BINS, split: str = "test",
                       in_sample: bool = False) -> dict:
    """How well ``cal`` calibrates ``scores`` on one split: ECE before and after, and the bins after."""
    s, y = _as_arrays(scores, labels)
    calibrated = apply_calibration(s, cal)
    return {
        "split": split,
        "in_sample": bool(in_sample),
        "n": int(s.size),
        "bins_count": int(bins),
        "ece": round(expected_calibration_error(calibrated, y, bins), 6),
        "ece_uncalibrated": round(expected_calibration_error(np.clip(s, 0.0, 1.0), y, bins), 6),
        "bins": reliability_bins(calibrated, y, bins),
    }


def plot_reliability(bins: Sequence[Mapping], title: str = "", ece: float | None = None, ax=None,
                     xlabel: str = "predicted fracture likelihood"):
    """Reliability diagram of ``reliability_bins`` output: the share of fractured images per bin
    against the mean predicted likelihood, the diagonal (perfect calibration) and the
    image count per bin. Returns the matplotlib Figure (a new one unless ``ax`` is given)."""
    from matplotlib.figure import Figure

    fig = ax.figure if ax is not None else Figure(figsize=(4.2, 4.2), layout="constrained")
    ax = ax if ax is not None else fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="perfect calibration")
    full = [b for b in bins if b.get("n")]
    widths = [b["hi"] - b["lo"] for b in full]
    ax.bar([b["lo"] for b in full], [b["frac_pos"] for b in full], width=widths, align="edge",
           color="#f5b82e", alpha=0.35, edgecolor="#f5b82e", label="share with fracture")
    ax.plot([b["mean_prob"] for b in full], [b["frac_pos"] for b in full], marker="o", color="#c0392b",
            linewidth=1.5, label="per bin (mean likelihood)")
    for b in full:  # the count tells how much each point can be trusted
        ax.annotate(f"n={b['n']}", (b["lo"] + (b["hi"] - b["lo"]) / 2, b["frac_pos"]), textcoords="offset points",
                    xytext=(0, 4), ha="center", fontsize=7, color="0.35")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of images with a fracture")
    ax.set_title(title + (f"  (ECE {ece:.3f})" if ece is not None else ""), fontsize=10)
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    return fig


__all__ = [
    "METHODS", "fit_calibration", "fit_from_reports", "scores_and_labels", "valid_calibration", "apply_calibration",
    "reliability_bins",
    "expected_calibration_error", "reliability_report", "plot_reliability",
]
