"""Image → probability map → findings → result, and the one inference loop. Pure numpy/OpenCV/TensorFlow, no UI.

Results and findings are defined in ``results``, drawing in ``rendering``; both are
re-exported here, so callers import from this module only.

Shared by the app, ``predict.py`` and ``evaluate.py`` (all through
:func:`iter_predictions` or its one-image form :func:`predict_image`) so that all
three see the same numbers. Pixel work is vectorised (OpenCV / numpy); the only
Python loop runs over connected regions, never over pixels.

Shapes and ranges:
- decoded image ("pixels"): (H, W) or (H, W, 3), uint8 or uint16 (see image_io).
- model input: (N, 256, 256, 3) float32 in [0, 1] (grey replicated to 3 channels).
- probability map from the model: (h, w) float32 in [0, 1], fracture channel, at model
  resolution or already at the image's; :class:`PredictionResult` holds it at the
  image's own (H, W).

Where the resizing lives: everything between decoded pixels and a probability map
is behind :meth:`Predictor.predict_probs`: either the seed's squeeze to 256² or the
whole image at the training scale (native), see :class:`Predictor`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from imaging.image_io import ImageLoadError, pad_to_multiple, resize_for_model, to_model_gray, to_native_gray
from imaging.rendering import (
    HEAT_FLOOR,
    HEAT_FULL,
    REVIEW_COLOR,
    display_gray,
    encode_png,
    heat_alpha,
    heatmap_legend,
    render_overlay,
)
from important_variables import CONFIG, PAD_MULTIPLES
from inference.features import pooled_features
from inference.findings import Finding, FindingRule
from inference.ood import OodCheck
from inference.results import PredictionResult, find_findings, min_finding_area, result_from_prob, result_to_dict, upscale_prob

log = logging.getLogger(__name__)

S = CONFIG.input_size


# --------------------------------------------------------------------------- model side
def preprocess(pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Decoded image → model input (256, 256, 3) float32 in [0, 1].

    ``out``, when given, is a (256, 256, 3) float32 view to fill (a slot of a batch
    array), which saves the stacking copy.
    """
    if pixels.dtype == np.uint8 and pixels.ndim == 2 and min(pixels.shape) >= S:
        # Common case (8-bit grey X-ray): area-average the uint8 pixels, then scale the
        # 256x256 result, instead of converting the full-size image to float first
        # (2-3x less work). Equals the float path within 0.5/255, and is exactly how the
        # training cache stores images (resized, rounded to uint8).
        gray = cv2.resize(pixels, (S, S), interpolation=cv2.INTER_AREA).astype(np.float32) * np.float32(1 / 255)
    else:
        gray = resize_for_model(to_model_gray(pixels), S).astype(np.float32, copy=False)
    if out is None:
        out = np.empty((S, S, CONFIG.input_channels), np.float32)
    # Grey replicated to the 3 channels the models were trained on (one broadcast copy).
    out[...] = gray[..., None]
    return out


def fixed_size_probs(forward: Callable[[np.ndarray], np.ndarray], images: list[np.ndarray]) -> list[np.ndarray]:
    """Decoded images (any sizes) → one (256, 256) probability map each, in one forward call."""
    batch = np.empty((len(images), S, S, CONFIG.input_channels), np.float32)
    for i, p in enumerate(images):
        preprocess(p, out=batch[i])
    return list(forward(batch))


def native_input(pixels: np.ndarray) -> np.ndarray:
    """Decoded image → (h, w) float32 grey in [0, 1] at the training scale (long side <= 454 px)."""
    if pixels.dtype == np.uint8 and pixels.ndim == 2:
        # 8-bit grey: shrink the uint8 pixels first, as the training cache did.
        return to_native_gray(pixels).astype(np.float32) * np.float32(1 / 255)
    return to_native_gray(to_model_gray(pixels)).astype(np.float32, copy=False)


def _as_channels(grays: np.ndarray) -> np.ndarray:
    """(N, h, w) grey → (N, h, w, C): the grey repeated over the model's C input channels."""
    return np.repeat(grays[..., None], CONFIG.input_channels, axis=-1)


class Predictor:
    """A loaded model behind a compiled forward pass.

    Two input schemes, chosen by the model's input shape:
    - fixed (the seed's 256x256x3 input): every image is squeezed to 256x256;
    - native (a size-free input, (None, None, 3)): each image is brought to the training
      scale (:func:`native_input`), padded to a multiple of the net's stride
      (``important_variables.PAD_MULTIPLES``: 16 for the U-Net) and forwarded whole; the
      map is cropped back. ``create_segmentation_model.for_inference`` makes that twin of
      a shipped model when its manifest entry says ``"inference": {"scale": "native"}``.
    ``tta`` averages with the horizontally flipped pass. ``finding_rule`` (a
    ``inference.findings.FindingRule``) and ``image_score`` (one of ``inference.findings.IMAGE_SCORES``) are
    handed to every result.

    ``forward`` is safe to call from several threads at once (Streamlit sessions share one
    cached Predictor): tracing happens in the constructor, the compiled function holds no
    per-call Python state.
    """

    def __init__(self, model, name: str = "model", jit_compile: bool = False, warmup: bool = True, *,
                 tta: bool = False, finding_rule: FindingRule | None = None, image_score: str = "max_prob",
                 ood: OodCheck | None = None, feature_layer: str | None = None, precision: str = "float32"):
        self.model = model
        #: The Keras dtype policy ``model`` computes under ('float32' or 'mixed_bfloat16', which an ensemble
        #: may run in some members only: ``create_segmentation_model.precision_name``), as reported.
        self.precision = precision
        self.name = name
        self.tta = tta
        self.finding_rule = finding_rule or FindingRule()
        self.image_score = image_score
        self.native = model.input_shape[1] is None
        #: Native inputs are zero-padded to a multiple of this (the net's total stride).
        self.pad_multiple = PAD_MULTIPLES.get(model.name, CONFIG.pad_multiple)
        #: The "unlike the training images" check (None: not fitted for this model); its layer's
        #: pooled output comes out of the same forward pass as the probabilities.
        self.ood = ood
        self.feature_layer = feature_layer or (ood.layer if ood is not None else None)
        self._forward = self._compiled_forward(model, jit_compile)
        if warmup:
            w = self.pad_multiple * 4 if self.native else S
            self.forward(np.zeros((1, w, w, CONFIG.input_channels), np.float32))

    def _compiled_forward(self, model, jit_compile: bool) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]:
        """(N, h, w, 3) float32 → ((N, h, w) float32 numpy fracture probability, (N, h', w', C) feature map
        of ``feature_layer`` or None), traced once.

        TensorFlow (the app, the CLIs): a ``tf.function`` with a fixed input signature.
        Another Keras backend (the trainer's validator on a GPU machine that has JAX but no
        TensorFlow): ``model.predict_on_batch``, which that backend compiles per input shape.
        """
        import keras

        ch = CONFIG.fracture_channel
        if self.feature_layer is not None:
            from inference.features import with_features

            model = with_features(model, self.feature_layer)
        two = self.feature_layer is not None
        if keras.backend.backend() != "tensorflow":
            def _eager(x):
                out = model.predict_on_batch(x)
                prob, fmap = (out[0], out[1]) if two else (out, None)
                prob = keras.ops.convert_to_numpy(prob)[..., ch].astype(np.float32)
                return prob, None if fmap is None else keras.ops.convert_to_numpy(fmap).astype(np.float32)
            return _eager
        import tensorflow as tf

        side = None if self.native else S
        spec = tf.TensorSpec([None, side, side, CONFIG.input_channels], tf.float32)

        @tf.function(input_signature=[spec], jit_compile=jit_compile, reduce_retracing=True)
        def _forward(x):
            if two:
                prob, fmap = model(x, training=False)
                return tf.cast(prob[..., ch], tf.float32), tf.cast(fmap, tf.float32)
            return tf.cast(model(x, training=False)[..., ch], tf.float32)

        if two:
            return lambda x: tuple(t.numpy() for t in _forward(x))
        return lambda x: (_forward(x).numpy(), None)

    def forward_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, h, w, 3) float32 in [0, 1] → ((N, h, w) float32 fracture probability, (N, h', w', C) float32
        feature map of ``feature_layer``, or None without one). With ``tta`` the probabilities are
        averaged with the flipped pass; the features are those of the plain pass."""
        x = np.asarray(batch, np.float32)
        if not self.tta:
            return self._forward(x)
        both, fmaps = self._forward(np.concatenate([x, x[:, :, ::-1]]))
        return 0.5 * (both[: len(x)] + both[len(x) :, :, ::-1]), None if fmaps is None else fmaps[: len(x)]

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) float32 in [0, 1] → (N, h, w) float32 fracture probability (h = w = 256 when fixed).

        Equal to ``model.predict(batch)[..., 1]`` within float32 round-off (tests: 1e-4).
        """
        return self.forward_features(batch)[0]

    def model_input(self, pixels: np.ndarray) -> np.ndarray:
        """One decoded image → the (1, h, w, 3) float32 batch in [0, 1] that :meth:`forward` gets for it:
        h = w = 256 when fixed; at the training scale, zero-padded to ``pad_multiple``, when native."""
        if not self.native:
            return preprocess(pixels)[None]
        return _as_channels(pad_to_multiple(native_input(pixels), self.pad_multiple)[None])

    def predict_maps(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Decoded images → (probability map, pooled features) each: the map (256, 256) when fixed,
        (h, w) at the training scale when native; the features (C,) float32, the global average
        of ``feature_layer`` over the image's part of the map (``inference.features.pooled_features``),
        None without a feature layer."""
        if not self.native:
            batch = np.empty((len(images), S, S, CONFIG.input_channels), np.float32)
            for i, p in enumerate(images):
                preprocess(p, out=batch[i])
            probs, fmaps = self.forward_features(batch)
            return [(probs[i], None if fmaps is None else pooled_features(fmaps[i], (S, S), (S, S)))
                    for i in range(len(images))]
        grays = [native_input(p) for p in images]
        padded = [pad_to_multiple(g, self.pad_multiple) for g in grays]
        out: list = [None] * len(grays)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, x in enumerate(padded):  # images of one padded size share a forward call
            groups.setdefault(x.shape, []).append(i)
        for idx in groups.values():
            batch = _as_channels(np.stack([padded[i] for i in idx]))
            probs, fmaps = self.forward_features(batch)
            for k, i in enumerate(idx):
                h, w = grays[i].shape
                feats = None if fmaps is None else pooled_features(fmaps[k], (h, w), padded[i].shape)
                out[i] = (np.ascontiguousarray(probs[k, :h, :w]), feats)
        return out

    def predict_probs(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Decoded images → one probability map each: (256, 256) when fixed, (h, w) at the training scale when native."""
        return [prob for prob, _ in self.predict_maps(images)]


def predictor_for(model, name: str, entry=None, precision: str = "auto", fold: bool = True,
                  bf16_members: tuple[str, ...] | None = None, **kwargs) -> Predictor:
    """The Predictor a shipped model is meant to run with, as its manifest entry says.

    entry: a ``inference.manifest.ModelEntry`` (or None: the seed's fixed 256² path, plain
    findings, max-probability image score). ``"inference": {"scale": "native", "tta": ...}``
    selects the whole-image native-scale twin; ``"findings"`` holds the FindingRule fields;
    ``"image_score"`` names the image-level score. ``precision``: 'auto' (bf16 only on a CPU with
    native bf16, where the entry's ``bf16_inference`` check allows it and it measures faster:
    ``create_segmentation_model.inference_precision``), 'float32' or 'mixed_bfloat16'
    (``bf16_members``: in those ensemble members only).
    ``fold``: run the twin with batch norms folded into their convs
    (``create_segmentation_model.fold_batch_norms``: same maps, faster); False keeps ``model``'s
    own weights live (a model still training, whose weights change under the Predictor).
    ``kwargs`` go to :class:`Predictor`.
    """
    # Keras builders: imported only when a model is loaded.
    from create_segmentation_model import fold_batch_norms, inference_precision, variable_size_twin

    inference = (entry.inference if entry is not None else None) or {}
    if inference.get("scale") == "native" and model.input_shape[1] is not None:
        model = variable_size_twin(model)
    if fold:
        model = fold_batch_norms(model)
    model, policy, why = inference_precision(model, entry.get("bf16_inference") if entry is not None else None,
                                             entry.sha256 if entry is not None else None, precision,
                                             members=bf16_members)
    log.info("%s: inference in %s (%s)", name, policy, why)
    rule = FindingRule(**(entry.get("findings") or {})) if entry is not None else None
    score = (entry.image_score if entry is not None else None) or "max_prob"
    if "ood" not in kwargs and entry is not None:
        # Only a check fitted for these very weights (its SHA-256): a re-shipped model has none.
        kwargs["ood"] = OodCheck.from_entry(entry.get("ood"), sha256=entry.sha256)
    return Predictor(model, name, tta=bool(inference.get("tta", False)), finding_rule=rule, image_score=score,
                     precision=policy, **kwargs)


def _predict_maps(predictor, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray | None]]:
    # Stand-ins in tests only have ``forward`` (or ``predict_probs``); they get no features.
    method = getattr(predictor, "predict_maps", None)
    if method is not None:
        return method(images)
    method = getattr(predictor, "predict_probs", None)
    probs = method(images) if method is not None else fixed_size_probs(predictor.forward, images)
    return [(p, None) for p in probs]


# --------------------------------------------------------------------------- the inference loop
@dataclass(frozen=True)
class Source:
    """One input of the loop.

    name: shown in error lines (a file name or path).
    load: () → decoded pixels, or an object with ``.pixels`` (and optionally ``.note``) such
      as ``imaging.image_io.LoadedImage``; raises ``ImageLoadError`` for a bad file.
    tag: anything the caller wants back with the outcome (a dataset record, a path).
    """

    name: str
    load: Callable[[], Any]
    tag: Any = None


@dataclass
class Outcome:
    """One input after the loop: ``result`` (and the decoded ``pixels``) or a one-line ``error``.

    image: what ``source.load`` returned (e.g. an ``imaging.image_io.LoadedImage``), None if it failed.
    features: the image's pooled features (C,) float32 when the predictor has a feature layer
      (``Predictor.feature_layer``), else None.
    """

    source: Source
    image: Any = None
    pixels: np.ndarray | None = None
    note: str | None = None
    result: PredictionResult | None = None
    error: str | None = None
    features: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def tag(self) -> Any:
        return self.source.tag


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _decode(src: Source) -> Outcome:
    """Run ``src.load``; every exception becomes the file's one-line error."""
    try:
        loaded = src.load()
    except ImageLoadError as exc:
        return Outcome(src, error=_one_line(exc))
    except MemoryError:
        return Outcome(src, error=f"{src.name}: not enough memory to decode this image")
    except Exception as exc:  # a decoder bug costs one file, never the batch
        return Outcome(src, error=_one_line(f"{src.name}: cannot be read ({type(exc).__name__}: {exc})"))
    pixels = getattr(loaded, "pixels", loaded)
    if not isinstance(pixels, np.ndarray):
        return Outcome(src, error=f"{src.name}: the decoder returned no image")
    return Outcome(src, image=loaded, pixels=pixels, note=getattr(loaded, "note", None))


def _finish(predictor, batch: list[Outcome], threshold: float) -> None:
    """Forward the decoded outcomes of ``batch`` and fill in their results (or errors)."""
    try:
        maps = _predict_maps(predictor, [o.pixels for o in batch])
    except Exception:
        if len(batch) == 1:
            raise
        # One bad image must not cost the others: retry one by one.
        for o in batch:
            _finish_one(predictor, o, threshold)
        return
    for o, (prob, feats) in zip(batch, maps, strict=True):
        _post(o, prob, threshold, predictor, feats)


def _finish_one(predictor, o: Outcome, threshold: float) -> None:
    try:
        prob, feats = _predict_maps(predictor, [o.pixels])[0]
        _post(o, prob, threshold, predictor, feats)
    except Exception as exc:
        o.error = _one_line(f"{o.name}: analysis failed ({type(exc).__name__}: {exc})")


def _post(o: Outcome, prob: np.ndarray, threshold: float, predictor=None, features: np.ndarray | None = None) -> None:
    o.features = features
    try:
        check = getattr(predictor, "ood", None)
        o.result = PredictionResult.from_prob(prob, o.pixels.shape[0], o.pixels.shape[1], threshold,
                                              rule=getattr(predictor, "finding_rule", None),
                                              image_score=getattr(predictor, "image_score", None),
                                              ood=None if check is None or features is None else check.assess(features))
    except Exception as exc:
        o.error = _one_line(f"{o.name}: analysis failed ({type(exc).__name__}: {exc})")


def iter_predictions(
    predictor,
    sources: Iterable[Source],
    threshold: float,
    batch_size: int = 8,
    workers: int = 0,
) -> Iterator[Outcome]:
    """THE inference loop: decode → preprocess → batch → forward → findings, one :class:`Outcome` per source, in order.

    ``batch_size`` decoded images go to the model together (files that fail to decode
    do not take a slot). ``workers`` > 0 decodes ahead in that many threads (Pillow,
    OpenCV and pydicom release the GIL) while the model runs; at most two batches are
    decoded ahead, so memory stays bounded. An exception while handling one file
    (decode, forward or post-processing) becomes that file's one-line ``error``; the
    other files go on.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 0 else None
    try:
        decoded: Iterator[Outcome] = _decoded(sources, pool, lookahead=2 * batch_size)
        pending: list[Outcome] = []  # in input order; yielded when their batch is done
        n_good = 0
        for o in decoded:
            pending.append(o)
            n_good += o.error is None
            if n_good >= batch_size:
                _finish_pending(predictor, pending, threshold)
                yield from pending
                pending, n_good = [], 0
        if pending:
            _finish_pending(predictor, pending, threshold)
            yield from pending
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _finish_pending(predictor, pending: list[Outcome], threshold: float) -> None:
    good = [o for o in pending if o.error is None]
    if good:
        try:
            _finish(predictor, good, threshold)
        except Exception as exc:  # a batch of one that failed
            good[0].error = _one_line(f"{good[0].name}: analysis failed ({type(exc).__name__}: {exc})")


def _decoded(sources: Iterable[Source], pool: ThreadPoolExecutor | None, lookahead: int) -> Iterator[Outcome]:
    if pool is None:
        yield from (_decode(s) for s in sources)
        return
    queue: deque = deque()
    for s in sources:
        queue.append(pool.submit(_decode, s))
        if len(queue) >= lookahead:
            yield queue.popleft().result()
    while queue:
        yield queue.popleft().result()


def predict_images(predictor, images: list[np.ndarray], threshold: float, batch_size: int = 8) -> list[PredictionResult]:
    """Decoded images (any sizes) → one result each, through :func:`iter_predictions`.

    Raises ValueError (one line) for an image the loop could not handle.
    """
    sources = [Source(f"image {i}", (lambda p=p: p)) for i, p in enumerate(images)]
    results = []
    for o in iter_predictions(predictor, sources, threshold, batch_size):
        if o.error is not None:
            raise ValueError(o.error)
        results.append(o.result)
    return results


def predict_image(predictor, pixels: np.ndarray, threshold: float) -> PredictionResult:
    """One decoded image → result at its own resolution."""
    return predict_images(predictor, [pixels], threshold, batch_size=1)[0]


def analyse_image(predictor, pixels: np.ndarray, threshold: float, **overlay_kw) -> tuple[PredictionResult, np.ndarray]:
    """The whole path for one decoded image: (result, annotated RGB uint8 (H, W, 3)).

    pixels: (H, W) or (H, W, 3), uint8 or uint16, any size. ``overlay_kw`` goes to
    :meth:`PredictionResult.overlay`.
    """
    result = predict_image(predictor, pixels, threshold)
    return result, result.overlay(pixels, **overlay_kw)


__all__ = [
    "Finding", "PredictionResult", "Predictor", "predictor_for", "native_input", "Source", "Outcome", "iter_predictions", "preprocess",
    "fixed_size_probs", "upscale_prob", "min_finding_area", "find_findings", "predict_images", "predict_image",
    "analyse_image", "result_from_prob", "result_to_dict", "display_gray", "render_overlay", "encode_png",
    "heatmap_legend", "heat_alpha", "HEAT_FLOOR", "HEAT_FULL", "REVIEW_COLOR",
]
