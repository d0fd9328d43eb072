"""Inference on a split: FracAtlas records → :class:`Case` (record + PredictionResult), through the one loop.

``run_inference`` hands the records to ``prediction.iter_predictions`` (the loop the
app and ``predict.py`` use); unreadable files are skipped with one log line each and
counted. A Case keeps the probability map at the image's own resolution and caches
its findings per threshold, so a threshold sweep never calls the model again.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import asdict, dataclass, field

import numpy as np

from inference.findings import FindingRule

log = logging.getLogger("evaluate")


@dataclass
class Case:
    """One evaluated image: its record and the model output at its own resolution.

    result.prob: (H, W) float32 in [0, 1]; findings are cached per threshold so the
    sweep recomputes only the findings, never the model.
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

    def at(self, threshold: float):
        """The result at ``threshold`` (same map and finding rule; cached per threshold, no model call)."""
        key = round(float(threshold), 6)
        if key not in self._findings:
            self._findings[key] = self.result if math.isclose(threshold, self.result.threshold) else self.result.with_threshold(threshold)
        return self._findings[key]

    def findings(self, threshold: float) -> list:
        """Findings at ``threshold``, cut by the result's own finding rule."""
        return self.at(threshold).findings


def select_records(atlas, split: str, limit: int | None = None) -> list:
    """Fractured records of ``split`` (official file) then its negatives (id rule), by id."""
    frac = atlas.records(split, fractured=True)
    neg = atlas.records(split, fractured=False)
    if limit is not None:
        frac, neg = frac[:limit], neg[:limit]
    return frac + neg


def run_inference(predictor, records: list, threshold: float, batch_size: int = 8, progress: bool = True) -> tuple[list[Case], list[str]]:
    """Read and predict every record once, through ``prediction.iter_predictions``.

    Returns (cases in record order, one-line reasons of the skipped files).
    """
    from tqdm import tqdm

    from prediction import Source, iter_predictions

    cases: list[Case] = []
    skipped: list[str] = []
    sources = [Source(rec.image_id, rec.load_pixels, rec) for rec in records]
    name = getattr(predictor, "name", "model")
    bar = tqdm(total=len(records), desc=name, unit="img", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    for o in iter_predictions(predictor, sources, threshold, batch_size):
        if o.error is not None:
            log.warning("skipped %s", o.error)
            skipped.append(o.error)
        else:
            cases.append(Case(o.tag, o.result))
        bar.update(1)
    bar.close()
    return cases, skipped


def settings_of(predictor) -> dict:
    """What made and cut the maps (report ``settings``): scale, TTA, finding rule, image score, precision.

    A stand-in predictor (tests) without these attributes gets the Predictor defaults.
    """
    rule = getattr(predictor, "finding_rule", None) or FindingRule()
    return {
        "scale": "native" if getattr(predictor, "native", False) else "fixed",
        "tta": bool(getattr(predictor, "tta", False)),
        "findings_rule": asdict(rule),
        "image_score": getattr(predictor, "image_score", "max_prob"),
        "precision": getattr(predictor, "precision", "float32"),
    }
