"""A validator the trainer can call: the same case building and scoring as ``evaluate.py``.

Ultralytics' BaseValidator style: standalone (``evaluate.py``) or called by a
trainer at the end of an epoch::

    v = Validator(data_dir, split="valid", limit=None)
    numbers = v.score(model_or_predictor, threshold=0.5)
    numbers["segmentation"]["dice_mean"], numbers["image_level"]["roc_auc"], ...

The records of the split are read once (in the constructor); each ``score`` call
runs the model on every image through ``prediction.iter_predictions`` and scores
with ``evaluation.scoring.score_cases``. Nothing is written.
"""

from __future__ import annotations

from pathlib import Path

from evaluation.cases import run_inference, select_records, settings_of
from evaluation.scoring import json_safe, score_cases


class Validator:
    """Scores a model on one split of FracAtlas exactly as ``evaluate.py`` does.

    data_dir: the FracAtlas folder (or an already opened ``fracture.dataset.FracAtlas``).
    split: "valid" (the trainer's) or "test". limit: first N fractured + first N negatives.
    entry: the model's manifest entry (``inference.manifest.ModelEntry``): a Keras model is run with
    its finding rule, image score and TTA, as ``evaluate.py`` runs the shipped model, so the
    epoch's numbers are those the checkpoint will be judged by (None: the Predictor defaults,
    plain thresholding and the maximum probability).
    """

    def __init__(self, data_dir, split: str = "valid", limit: int | None = None, batch_size: int = 8, entry=None):
        from fracture.dataset import FracAtlas

        self.atlas = data_dir if isinstance(data_dir, FracAtlas) else FracAtlas(Path(data_dir))
        self.split = split
        self.limit = limit
        self.batch_size = batch_size
        self.records = select_records(self.atlas, split, limit)
        self.entry = entry
        self.skipped: list[str] = []
        self._wrapped: tuple = (None, None)  # (Keras model, its Predictor): traced once, reused every epoch

    def cases(self, model_or_predictor, threshold: float, progress: bool = False) -> list:
        """Run the model on the split: ``evaluation.cases.Case`` per readable image (skips in ``self.skipped``)."""
        cases, self.skipped = run_inference(self._predictor(model_or_predictor), self.records, threshold,
                                            self.batch_size, progress)
        return cases

    def _predictor(self, model_or_predictor):
        """A ``prediction.Predictor`` (or anything with ``forward``) as is; a Keras model wrapped once.

        A Keras model is recognised by type first: on the PyTorch backend it is a
        ``torch.nn.Module`` and so has a ``forward`` of its own.
        """
        import keras

        if not isinstance(model_or_predictor, keras.Model) and (
                hasattr(model_or_predictor, "forward") or hasattr(model_or_predictor, "predict_probs")):
            return model_or_predictor
        if self._wrapped[0] is not model_or_predictor:
            from prediction import predictor_for

            name = getattr(model_or_predictor, "name", "model")
            # float32: a checkpoint is chosen on the numbers of the weights themselves (a bf16 check
            # of the shipped weights says nothing of a training checkpoint's). fold=False: the
            # trainer's model is scored each epoch with its current weights, never a copy of old ones.
            self._wrapped = (model_or_predictor, predictor_for(model_or_predictor, name, self.entry, precision="float32",
                                                               fold=False))
        return self._wrapped[1]

    def settings(self, model_or_predictor) -> dict:
        """What the maps are made and cut with (a report's ``settings``): scale, TTA, finding rule, image score."""
        return settings_of(self._predictor(model_or_predictor))

    def score(self, model_or_predictor, threshold: float, progress: bool = False) -> dict:
        """Every report section (counts, segmentation, localization, image_level, pixel_accuracy,
        by_body_part, per_image) at ``threshold``; JSON-safe (NaN → None, rounded to 6 digits)."""
        scored = score_cases(self.cases(model_or_predictor, threshold, progress), threshold)
        scored.pop("_curves")
        scored["counts"]["skipped_unreadable"] = len(self.skipped)
        return json_safe(scored)

