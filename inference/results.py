"""What a prediction is: findings and :class:`PredictionResult`. Pure numpy/OpenCV, no model, no UI.

prob: (H, W) float32 in [0, 1], the fracture probability at the image's own size.
Findings are the 8-connected regions of ``prob >= threshold`` at or above a minimum
area (``CONFIG.min_finding_area_px`` at model resolution, scaled to the image).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from imaging.rendering import encode_png, render_overlay
from important_variables import CONFIG
from inference.findings import Finding, FindingRule, image_scores, regions
from inference.ood import OodReading

S = CONFIG.input_size


# --------------------------------------------------------------------------- findings
def min_finding_area(height: int, width: int) -> int:
    """Smallest region kept as a finding, in pixels of a (height, width) image: the
    configured minimum at model resolution, scaled by the image's area."""
    return max(1, int(round(CONFIG.min_finding_area_px * (height * width) / (S * S))))


@dataclass(frozen=True)
class _Components:
    """The findings of one map and their pixels, computed once (findings.regions).

    found: [(score, box, area_px)] best first; labels: (H, W) int32, 0 background,
    k = the pixels of the k-th finding.
    """

    found: list
    labels: np.ndarray


def _rule_for(rule: FindingRule | None, height: int, width: int) -> FindingRule:
    # The minimum area is configured at model resolution and scales with the image.
    return replace(rule or FindingRule(), min_area_px=min_finding_area(height, width))


def _components(prob: np.ndarray, threshold: float, rule: FindingRule) -> _Components:
    found, labels = regions(prob, threshold, rule)
    return _Components(found, labels)


def _findings_of(prob: np.ndarray, comp: _Components) -> list[Finding]:
    out = []
    for i, (score, box, area) in enumerate(comp.found):  # a handful of regions, never a pixel loop
        x0, y0, x1, y1 = box
        inside = comp.labels[y0:y1, x0:x1] == i + 1
        peak = float(prob[y0:y1, x0:x1][inside].max()) if inside.any() else float(score)
        out.append(Finding(i + 1, box, score, area, peak))
    return out


def find_findings(prob: np.ndarray, threshold: float, min_area_px: int | None = None) -> list[Finding]:
    """Connected regions (8-connectivity) of ``prob >= threshold``, highest score first.

    prob: (H, W) float in [0, 1]. Regions smaller than ``min_area_px`` (default: the
    configured minimum at model resolution, scaled to this image's size) are dropped.
    """
    rule = _rule_for(None, *prob.shape)
    if min_area_px is not None:
        rule = replace(rule, min_area_px=min_area_px)
    return _findings_of(prob, _components(prob, threshold, rule))


def upscale_prob(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) probability → (height, width) float32, bilinear (a no-op when already that size)."""
    if prob.shape == (height, width):
        return prob.astype(np.float32, copy=False)
    # Bilinear weights are convex, so the result stays in [0, 1]: no clip pass needed.
    return cv2.resize(prob.astype(np.float32, copy=False), (width, height), interpolation=cv2.INTER_LINEAR)


# --------------------------------------------------------------------------- result
@dataclass
class PredictionResult:
    """Output for one image. prob: (H, W) float32 in [0, 1] at the image's own size.

    Owns its mask, rendering and JSON. The connected components of ``prob >= threshold``
    are computed once per result and cached (findings, mask and overlay share them);
    a new threshold is a new result (:meth:`with_threshold`).
    """

    prob: np.ndarray
    threshold: float
    findings: list[Finding] = field(default_factory=list)
    rule: FindingRule | None = None
    image_score_name: str = "max_prob"
    #: The "unlike the training images" check of this image (None: no check fitted for the model).
    ood: OodReading | None = None
    _comp: _Components | None = field(default=None, init=False, repr=False, compare=False)
    _scores: dict | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_prob(cls, prob: np.ndarray, height: int, width: int, threshold: float,
                  rule: FindingRule | None = None, image_score: str | None = None,
                  ood: OodReading | None = None) -> PredictionResult:
        """Probability map at model or image resolution → result at the image's (height, width).

        rule: how findings are cut (hysteresis, cap; default: plain threshold, all regions).
        image_score: which of ``inference.findings.IMAGE_SCORES`` :attr:`image_score` reports.
        ood: the image's "unlike the training images" reading (``inference.ood.OodCheck.assess``), if any.
        """
        prob = upscale_prob(prob, height, width)
        comp = _components(prob, threshold, _rule_for(rule, height, width))
        result = cls(prob, threshold, _findings_of(prob, comp), rule, image_score or "max_prob", ood)
        result._comp = comp
        return result

    @property
    def height(self) -> int:
        return int(self.prob.shape[0])

    @property
    def width(self) -> int:
        return int(self.prob.shape[1])

    @property
    def fracture_score(self) -> float:
        """Image-level score: the maximum fracture probability anywhere in the image."""
        return float(self.prob.max()) if self.prob.size else 0.0

    def image_scores(self) -> dict[str, float]:
        """Every candidate image-level score ({name: value in [0, 1]}, see findings.image_scores).

        Computed once per result (the top-k partition runs over the whole map) and shared by
        the report, the threshold choice and the calibration; a copy is returned.
        """
        if self._scores is None:
            self._scores = image_scores(self.prob, [f.score for f in self.findings], self.rule or FindingRule())
        return dict(self._scores)

    @property
    def image_score(self) -> float:
        """The image-level score this model's calibration and ROC use (``image_score_name``)."""
        if self.image_score_name == "max_prob":
            return self.fracture_score
        return self.image_scores()[self.image_score_name]

    def _components(self) -> _Components:
        if self._comp is None:
            self._comp = _components(self.prob, self.threshold, _rule_for(self.rule, self.height, self.width))
        return self._comp

    def finding_labels(self) -> np.ndarray:
        """(H, W) int32: k on the pixels of finding k (1-based, as ``Finding.index``), 0 elsewhere."""
        return self._components().labels

    def mask(self) -> np.ndarray:
        """Binary mask (H, W) uint8 in {0, 255}: the pixels of the findings.

        That is ``prob >= threshold`` without the specks below the minimum finding
        area, so the mask, the outline and the numbered boxes always agree.
        """
        return np.where(self._components().labels > 0, np.uint8(255), np.uint8(0))

    def with_threshold(self, threshold: float) -> PredictionResult:
        """Same probability map, findings recomputed at another threshold (no model call)."""
        if threshold == self.threshold:
            return self
        return PredictionResult.from_prob(self.prob, self.height, self.width, threshold, self.rule, self.image_score_name,
                                          self.ood)

    def with_rule(self, rule: FindingRule) -> PredictionResult:
        """Same probability map and threshold, findings cut under another finding rule (no model call)."""
        return PredictionResult.from_prob(self.prob, self.height, self.width, self.threshold, rule, self.image_score_name,
                                          self.ood)

    def overlay(self, pixels: np.ndarray, opacity: float = 0.35, show_heatmap: bool = False,
                window: tuple[float, float] | None = None, outline_only: bool = False,
                review_box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Annotated RGB uint8 (H, W, 3) of ``pixels`` (the image this result is for); see
        ``imaging.rendering.render_overlay`` for ``outline_only`` and ``review_box``."""
        return render_overlay(pixels, self, opacity, show_heatmap, window, outline_only, review_box)

    def mask_png(self, compression: int | None = None) -> bytes:
        return encode_png(self.mask(), compression)

    def to_dict(self, file: str, model: str, error: str | None = None) -> dict:
        """The findings JSON object (schema of the app's download and ``predict.py --json``).

        ``fracture_score`` is the highest probability anywhere; ``image_score`` the image-level
        score the model's manifest names (``image_score_name``, e.g. "topk_mean"), the one its
        calibration and ROC use. ``unlike_training_images`` (null: no check for this model),
        ``ood_distance`` and ``ood_threshold``: see ``ood``.
        """
        ood = self.ood
        return {
            "file": file,
            "model": model,
            "width": self.width,
            "height": self.height,
            "threshold": round(float(self.threshold), 4),
            "fracture_score": round(self.fracture_score, 4),
            "image_score_name": self.image_score_name,
            "image_score": round(float(self.image_score), 4),
            "findings": [f.to_dict() for f in self.findings],
            "unlike_training_images": None if ood is None else bool(ood.unlike),
            "ood_distance": None if ood is None else round(ood.distance, 4),
            "ood_threshold": None if ood is None else round(ood.threshold, 4),
            "error": error,
        }


def result_to_dict(result: PredictionResult | None, file: str, model: str, error: str | None = None) -> dict:
    """:meth:`PredictionResult.to_dict`, or the same schema with nulls for a file that failed."""
    if result is None:
        return {"file": file, "model": model, "width": None, "height": None, "threshold": None,
                "fracture_score": None, "image_score_name": None, "image_score": None, "findings": [],
                "unlike_training_images": None, "ood_distance": None, "ood_threshold": None, "error": error}
    return result.to_dict(file, model, error)


def result_from_prob(prob: np.ndarray, height: int, width: int, threshold: float) -> PredictionResult:
    """Alias of :meth:`PredictionResult.from_prob`."""
    return PredictionResult.from_prob(prob, height, width, threshold)
