""""Unlike the training images": how far an image's features are from the training X-rays'. Pure numpy.

The features are the model's own (``inference.features``: the global average of its deepest
encoder feature map, one vector of C numbers per image). Fitted on the training X-rays
(:func:`fit_ood`, run by ``tools/fit_ood.py``):

- each feature is taken as ``log1p(max(f, 0))`` (the maps are ReLU outputs with long right
  tails; the log keeps one very bright channel from deciding alone);
- their mean and the top ``k`` principal axes with their variances, plus one variance for
  everything outside those axes (the features of a few hundred images do not pin down a
  full C x C covariance);
- the **distance** of an image is the Mahalanobis distance in that model, divided by
  sqrt(C): about 1 for a typical training image, larger the less the image looks like one;
- the **threshold** is the (1 - false-alarm rate) quantile of the distances of the
  validation X-rays (not used for the fit), so about that share of ordinary X-rays of the
  training data's kind gets the warning.

An image above the threshold is *unlike the training images*: a plain warning that the
result may be worse than the published figures. It never changes or hides a finding.

The fitted check is a JSON dict in the model's manifest entry (``models.<name>.ood``, see
:meth:`OodCheck.to_entry`); arrays are stored as base64 of little-endian float32.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

#: How a feature is transformed before the fit ("log1p": log(1 + max(f, 0))).
TRANSFORMS = ("log1p", "none")
DEFAULT_COMPONENTS = 32
DEFAULT_FALSE_ALARM = 0.05
_EPS = 1e-6


def _encode(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def _decode(text: str, shape: tuple[int, ...]) -> np.ndarray:
    a = np.frombuffer(base64.b64decode(text.encode("ascii"), validate=True), dtype="<f4")
    if a.size != math.prod(shape):
        raise ValueError(f"stored array has {a.size} values, expected {shape}")
    return a.reshape(shape).astype(np.float64)


def transform(features: np.ndarray, kind: str = "log1p") -> np.ndarray:
    """Features (..., C) → the space the check is fitted in (float64)."""
    f = np.asarray(features, np.float64)
    return np.log1p(np.maximum(f, 0.0)) if kind == "log1p" else f


@dataclass(frozen=True)
class OodReading:
    """One image's check: ``distance`` (≈ 1 typical of training), the ``threshold`` it is judged at
    and ``unlike`` = distance > threshold."""

    distance: float
    threshold: float

    @property
    def unlike(self) -> bool:
        return self.distance > self.threshold


@dataclass(frozen=True)
class OodCheck:
    """A fitted check. Arrays: mean (C,), axes (k, C) orthonormal rows, variances (k,) > 0."""

    layer: str
    mean: np.ndarray
    axes: np.ndarray
    variances: np.ndarray
    residual_variance: float
    threshold: float
    kind: str = "log1p"
    info: Mapping = field(default_factory=dict)  # what it was fitted on, for the record (no arrays)

    @property
    def channels(self) -> int:
        return int(self.mean.size)

    def distances(self, features: np.ndarray) -> np.ndarray:
        """(N, C) or (C,) features → (N,) or scalar distances (float64, ≥ 0)."""
        z = transform(features, self.kind) - self.mean
        if z.shape[-1] != self.channels:
            raise ValueError(f"features have {z.shape[-1]} channels, the check was fitted on {self.channels}")
        proj = z @ self.axes.T
        inside = np.sum(proj**2 / self.variances, axis=-1)
        outside = np.maximum(np.sum(z**2, axis=-1) - np.sum(proj**2, axis=-1), 0.0) / self.residual_variance
        return np.sqrt((inside + outside) / self.channels)

    def assess(self, features: np.ndarray) -> OodReading:
        """One image's pooled features (C,) → its :class:`OodReading`."""
        return OodReading(float(self.distances(np.asarray(features).reshape(-1))), float(self.threshold))

    def to_entry(self) -> dict:
        """The manifest's ``ood`` dict: the parameters plus ``info`` (kept as given)."""
        return {
            **dict(self.info),
            "layer": self.layer,
            "transform": self.kind,
            "channels": self.channels,
            "components": int(self.axes.shape[0]),
            "mean": _encode(self.mean),
            "axes": _encode(self.axes),
            "variances": [round(float(v), 8) for v in self.variances],
            "residual_variance": round(float(self.residual_variance), 8),
            "threshold": round(float(self.threshold), 6),
            "encoding": "base64 of little-endian float32",
        }

    @classmethod
    def from_entry(cls, data, sha256: str | None = None) -> OodCheck | None:
        """The check stored in a manifest entry's ``ood``; None when absent, unusable, or fitted for
        other weights (``sha256`` given and different from the stored ``model_sha256``)."""
        if not isinstance(data, Mapping):
            return None
        if sha256 is not None and data.get("model_sha256") not in (None, sha256):
            return None
        try:
            c, k = int(data["channels"]), int(data["components"])
            kind = str(data.get("transform", "log1p"))
            variances = np.asarray(data["variances"], np.float64)
            check = cls(str(data["layer"]), _decode(data["mean"], (c,)), _decode(data["axes"], (k, c)), variances,
                        float(data["residual_variance"]), float(data["threshold"]), kind,
                        {key: v for key, v in data.items() if key in INFO_KEYS})
        except (KeyError, TypeError, ValueError):
            return None
        ok = (kind in TRANSFORMS and variances.shape == (k,) and np.all(variances > 0) and check.residual_variance > 0
              and math.isfinite(check.threshold) and check.threshold > 0
              and np.all(np.isfinite(check.mean)) and np.all(np.isfinite(check.axes)))
        return check if ok else None


#: Keys of the manifest's ``ood`` dict that describe the fit (kept in ``OodCheck.info``).
INFO_KEYS = ("model_sha256", "sources", "fitted_on", "threshold_on", "false_alarm_target", "valid_false_alarm", "n_train", "n_valid",
             "date", "command", "checks", "pooling", "definition")


def fit_ood(train_features: np.ndarray, valid_features: np.ndarray, layer: str, false_alarm: float = DEFAULT_FALSE_ALARM,
            components: int = DEFAULT_COMPONENTS, kind: str = "log1p", info: Mapping | None = None) -> OodCheck:
    """Fit the check on train features (N, C) and set its threshold on valid features (M, C).

    The threshold is the smallest distance that at most ``false_alarm`` of the valid images
    exceed (numpy's "higher" quantile at 1 - false_alarm). ``components`` is capped at N - 1
    and C - 1. Raises ValueError on too few images or bad shapes.
    """
    x = np.asarray(train_features, np.float64)
    v = np.asarray(valid_features, np.float64)
    if x.ndim != 2 or v.ndim != 2 or x.shape[1] != v.shape[1]:
        raise ValueError(f"train and valid features must be (N, C) with the same C, got {x.shape} and {v.shape}")
    if x.shape[0] < 3 or v.shape[0] < 1:
        raise ValueError(f"need at least 3 train and 1 valid image, got {x.shape[0]} and {v.shape[0]}")
    if not (0.0 < false_alarm < 1.0):
        raise ValueError(f"false-alarm rate {false_alarm} must be strictly between 0 and 1")
    if kind not in TRANSFORMS:
        raise ValueError(f"unknown transform {kind!r}; expected one of {', '.join(TRANSFORMS)}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(v))):
        raise ValueError("features must be finite")
    t = transform(x, kind)
    mean = t.mean(axis=0)
    centred = t - mean
    n, c = centred.shape
    k = max(1, min(int(components), n - 1, c - 1))
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var_all = s**2 / (n - 1)
    total = float(np.sum(centred**2) / (n - 1))
    variances = np.maximum(var_all[:k], _EPS)
    residual = max((total - float(var_all[:k].sum())) / (c - k), _EPS)
    draft = OodCheck(layer, mean, vt[:k], variances, residual, math.inf, kind)
    d_valid = draft.distances(v)
    threshold = float(np.quantile(d_valid, 1.0 - false_alarm, method="higher"))
    record = {"false_alarm_target": float(false_alarm), "n_train": int(n), "n_valid": int(v.shape[0]),
              "valid_false_alarm": round(float(np.mean(d_valid > threshold)), 4), **dict(info or {})}
    return OodCheck(layer, mean, vt[:k], variances, residual, threshold, kind, record)


def alarm_rate(check: OodCheck, features: np.ndarray) -> tuple[int, int, float]:
    """(alarms, images, share flagged) of features (N, C) under ``check``."""
    d = check.distances(np.asarray(features, np.float64).reshape(-1, check.channels))
    alarms = int(np.sum(d > check.threshold))
    return alarms, int(d.size), (alarms / d.size if d.size else float("nan"))


__all__ = ["TRANSFORMS", "DEFAULT_COMPONENTS", "DEFAULT_FALSE_ALARM", "INFO_KEYS", "OodReading", "OodCheck", "transform",
           "fit_ood", "alarm_rate"]
