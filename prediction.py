"""Image → probability map → findings → overlay. Pure numpy/OpenCV/TensorFlow, no UI.

Shared by the app, ``predict.py`` and ``evaluate.py`` so that all three see the
same numbers. Pixel work is vectorised (OpenCV / numpy); the only Python loop
runs over connected regions, never over pixels.

Shapes and ranges:
- decoded image ("pixels"): (H, W) or (H, W, 3), uint8 or uint16 (see image_io).
- model input: (N, 256, 256, 3) float32 in [0, 1] (grey replicated to 3 channels).
- probability map: (H, W) float32 in [0, 1], fracture channel, at the image's size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from image_io import resize_for_model, to_model_gray
from important_variables import CONFIG

S = CONFIG.input_size


@dataclass(frozen=True)
class Finding:
    """One connected region of ``prob >= threshold``.

    index: 1-based number shown on the overlay, findings sorted by score (highest first).
    box: (x0, y0, x1, y1) in original pixels, x1/y1 exclusive.
    score: the region's maximum probability, in [threshold, 1].
    area_px: region size in original pixels.
    """

    index: int
    box: tuple[int, int, int, int]
    score: float
    area_px: int

    def to_dict(self) -> dict:
        return {"box": list(self.box), "score": round(float(self.score), 4), "area_px": int(self.area_px)}


@dataclass
class PredictionResult:
    """Output for one image. prob: (H, W) float32 in [0, 1] at the image's own size."""

    prob: np.ndarray
    threshold: float
    findings: list[Finding] = field(default_factory=list)

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

    def mask(self) -> np.ndarray:
        """Binary mask (H, W) uint8 in {0, 255}: the pixels of the findings.

        That is ``prob >= threshold`` without the specks below the minimum finding
        area, so the mask, the outline and the numbered boxes always agree.
        """
        n, labels, stats, _ = cv2.connectedComponentsWithStats((self.prob >= self.threshold).view(np.uint8), connectivity=8)
        keep = np.zeros(n, np.uint8)
        keep[1:][stats[1:, cv2.CC_STAT_AREA] >= min_finding_area(self.height, self.width)] = 255
        return keep[labels]

    def with_threshold(self, threshold: float) -> PredictionResult:
        """Same probability map, findings recomputed at another threshold (no model call)."""
        return PredictionResult(self.prob, threshold, find_findings(self.prob, threshold))


# --------------------------------------------------------------------------- model side
def preprocess(pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Decoded image → model input (256, 256, 3) float32 in [0, 1].

    ``out``, when given, is a (256, 256, 3) float32 view to fill (a slot of a batch
    array), which saves the stacking copy when the CLI assembles batches.
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


class Predictor:
    """A loaded model behind a compiled forward pass with a fixed input signature.

    ``forward`` is safe to call from several threads at once (Streamlit sessions
    share one cached Predictor): tracing happens once, in the constructor, and the
    compiled function holds no per-call Python state.
    """

    def __init__(self, model, name: str = "model", jit_compile: bool = False, warmup: bool = True):
        import tensorflow as tf

        self.model = model
        self.name = name
        spec = tf.TensorSpec([None, S, S, CONFIG.input_channels], tf.float32)

        @tf.function(input_signature=[spec], jit_compile=jit_compile, reduce_retracing=True)
        def _forward(x):
            return model(x, training=False)[..., CONFIG.fracture_channel]

        self._forward = _forward
        if warmup:
            self.forward(np.zeros((1, S, S, CONFIG.input_channels), np.float32))

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """(N, 256, 256, 3) float32 in [0, 1] → (N, 256, 256) float32 fracture probability.

        Equal to ``model.predict(batch)[..., 1]`` within float32 round-off (tests: 1e-4).
        """
        return self._forward(np.asarray(batch, np.float32)).numpy()


# --------------------------------------------------------------------------- findings
def upscale_prob(prob256: np.ndarray, height: int, width: int) -> np.ndarray:
    """(256, 256) probability → (height, width), bilinear, clipped to [0, 1]."""
    if prob256.shape == (height, width):
        return prob256.astype(np.float32, copy=False)
    # Bilinear weights are convex, so the result stays in [0, 1]: no clip pass needed.
    return cv2.resize(prob256.astype(np.float32, copy=False), (width, height), interpolation=cv2.INTER_LINEAR)


def min_finding_area(height: int, width: int) -> int:
    """Smallest region kept as a finding, in pixels of a (height, width) image: the
    configured minimum at model resolution, scaled by the image's area."""
    return max(1, int(round(CONFIG.min_finding_area_px * (height * width) / (S * S))))


def find_findings(prob: np.ndarray, threshold: float, min_area_px: int | None = None) -> list[Finding]:
    """Connected regions (8-connectivity) of ``prob >= threshold``, highest score first.

    prob: (H, W) float in [0, 1]. Regions smaller than ``min_area_px`` (default: the
    configured minimum at model resolution, scaled to this image's size) are dropped.
    """
    if min_area_px is None:
        min_area_px = min_finding_area(*prob.shape)
    binary = (prob >= threshold).view(np.uint8)  # bool → uint8 without a copy
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    found = []
    # The loop runs over regions (a handful), never over pixels; each region's max
    # is taken inside its own box only.
    for lab in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[lab])
        if area < min_area_px:
            continue
        region = labels[y : y + bh, x : x + bw] == lab
        score = float(prob[y : y + bh, x : x + bw][region].max())
        found.append((score, (x, y, x + bw, y + bh), area))
    found.sort(key=lambda t: -t[0])
    return [Finding(i + 1, box, score, area) for i, (score, box, area) in enumerate(found)]


def predict_images(predictor: Predictor, images: list[np.ndarray], threshold: float, batch_size: int = 8) -> list[PredictionResult]:
    """Run the model on decoded images (any sizes), in batches; one result per image."""
    results: list[PredictionResult] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        batch = np.empty((len(chunk), S, S, CONFIG.input_channels), np.float32)
        for i, p in enumerate(chunk):
            preprocess(p, out=batch[i])
        probs = predictor.forward(batch)
        results.extend(result_from_prob(p256, pixels.shape[0], pixels.shape[1], threshold) for pixels, p256 in zip(chunk, probs, strict=True))
    return results


def result_from_prob(prob256: np.ndarray, height: int, width: int, threshold: float) -> PredictionResult:
    """(256, 256) model probability → result at the image's (height, width), findings included."""
    prob = upscale_prob(prob256, height, width)
    return PredictionResult(prob, threshold, find_findings(prob, threshold))


def predict_image(predictor: Predictor, pixels: np.ndarray, threshold: float) -> PredictionResult:
    """One decoded image → result at its own resolution."""
    return predict_images(predictor, [pixels], threshold, batch_size=1)[0]


def analyse_image(predictor: Predictor, pixels: np.ndarray, threshold: float, **overlay_kw) -> tuple[PredictionResult, np.ndarray]:
    """The whole path for one decoded image: (result, annotated RGB uint8 (H, W, 3)).

    pixels: (H, W) or (H, W, 3), uint8 or uint16, any size. ``overlay_kw`` goes to
    :func:`render_overlay`.
    """
    result = predict_image(predictor, pixels, threshold)
    return result, render_overlay(pixels, result, **overlay_kw)


# --------------------------------------------------------------------------- display
def display_gray(pixels: np.ndarray, center: float | None = None, width: float | None = None) -> np.ndarray:
    """Grey uint8 (H, W) for display, with an optional window (center/width in [0, 1] units).

    For an unwindowed 2-D uint8 input the input array itself is returned (no copy):
    treat the result as read-only.
    """
    windowed = center is not None and width is not None and width > 0
    if not windowed and pixels.dtype == np.uint8:
        # Same numbers as the float path below (round(p / 255 * 255) == p), without the
        # two full-size float32 temporaries.
        if pixels.ndim == 2:
            return pixels
        if pixels.shape[2] == 1:
            return pixels[..., 0]
        return cv2.cvtColor(np.ascontiguousarray(pixels[..., :3]), cv2.COLOR_RGB2GRAY)
    gray = to_model_gray(pixels)
    if windowed:
        gray = np.clip((gray - (center - width / 2.0)) / width, 0.0, 1.0)
    return (gray * 255.0 + 0.5).astype(np.uint8)


#: Heatmap opacity ramps up from 0 at HEAT_FLOOR to full at HEAT_FULL: low scores leave
#: the X-ray untouched instead of washing it out in the colour map's low end.
HEAT_FLOOR, HEAT_FULL = 0.1, 0.5
HEAT_COLORMAP = cv2.COLORMAP_TURBO
REVIEW_COLOR = (245, 184, 46)  # RGB amber (the theme's primary colour): "review this area"


def _heat_rgb(values: np.ndarray) -> np.ndarray:
    """Scores (any shape) in [0, 1] → RGB uint8 colours of the heatmap (shape + (3,))."""
    u8 = np.clip(values * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(u8.reshape(-1, 1), HEAT_COLORMAP)[:, 0, ::-1].reshape(*values.shape, 3)


def heat_alpha(prob: np.ndarray, opacity: float) -> np.ndarray:
    """Per-pixel heatmap opacity, float32 in [0, opacity]: 0 below HEAT_FLOOR, ``opacity`` from HEAT_FULL."""
    return np.float32(opacity) * np.clip((prob - HEAT_FLOOR) / (HEAT_FULL - HEAT_FLOOR), 0.0, 1.0).astype(np.float32)


def heatmap_legend(width: int = 600, height: int = 54) -> np.ndarray:
    """The heatmap's colour legend, RGB uint8 (height, width, 3): the colours over a mid-grey
    background at full opacity, with the transparency ramp and ticks at 0, 0.25, 0.5, 0.75, 1."""
    bar_h, pad = height // 2, 12
    xs = np.linspace(0.0, 1.0, width - 2 * pad, dtype=np.float32)
    img = np.full((height, width, 3), 14, np.uint8)
    grey = np.full((bar_h, xs.size, 3), 128, np.float32)
    alpha = heat_alpha(xs, 1.0)[None, :, None]
    img[2 : 2 + bar_h, pad : pad + xs.size] = (grey * (1 - alpha) + _heat_rgb(xs)[None] * alpha + 0.5).astype(np.uint8)
    for v in (0.0, HEAT_FLOOR, 0.25, HEAT_FULL, 0.75, 1.0):
        x = pad + int(round(v * (xs.size - 1)))
        cv2.line(img, (x, 2 + bar_h), (x, 6 + bar_h), (230, 230, 230), 1)
        if v in (0.0, 0.25, 0.5, 0.75, 1.0):
            label = f"{v:g}"
            (tw, _), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
            cv2.putText(img, label, (min(max(0, x - tw // 2), width - tw), height - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (230, 230, 230), 1, cv2.LINE_AA)
    return img


def _dashed_rect(rgb: np.ndarray, box: tuple[int, int, int, int], color, thick: int) -> None:
    """A dashed rectangle in place (OpenCV has none); a few dozen dashes, not a pixel loop."""
    x0, y0, x1, y1 = box
    pad = 3 * thick  # around the spot, not on it: the bone under it stays visible
    x0, y0 = max(0, x0 - pad), max(0, y0 - pad)
    x1, y1 = min(rgb.shape[1] - 1, x1 - 1 + pad), min(rgb.shape[0] - 1, y1 - 1 + pad)
    dash = max(4, 4 * thick)
    for (ax, ay), (bx, by) in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        length = max(abs(bx - ax), abs(by - ay))
        for start in range(0, length + 1, 2 * dash):
            end = min(length, start + dash)
            p = (ax + (bx - ax) * start // max(1, length), ay + (by - ay) * start // max(1, length))
            q = (ax + (bx - ax) * end // max(1, length), ay + (by - ay) * end // max(1, length))
            cv2.line(rgb, p, q, color, thick, cv2.LINE_8)  # crisp: the exact amber, easy to spot


def render_overlay(
    pixels: np.ndarray,
    result: PredictionResult,
    opacity: float = 0.35,
    show_heatmap: bool = False,
    window: tuple[float, float] | None = None,
    outline_only: bool = False,
    review_box: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Annotated RGB uint8 (H, W, 3): filled mask (or its outline only), outline, numbered boxes,
    an optional heatmap (transparent where the score is low) and an optional dashed
    amber ``review_box`` (x0, y0, x1, y1), the spot of a borderline result."""
    gray = display_gray(pixels, *(window or (None, None)))
    rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    h, w = gray.shape
    thick = max(1, round(max(h, w) / 400))
    if show_heatmap:
        alpha = heat_alpha(result.prob, opacity)[..., None]
        rgb = (rgb * (1.0 - alpha) + _heat_rgb(result.prob) * alpha + 0.5).astype(np.uint8)
    mask = result.mask() if result.findings else None
    if mask is not None:
        if not outline_only:
            # Tint towards red, kept only inside the mask: written in place through the
            # mask (no full-size np.where result).
            red = np.zeros_like(rgb)
            red[..., 0] = 255
            blended = cv2.addWeighted(rgb, 1.0 - opacity, red, opacity, 0)
            np.copyto(rgb, blended, where=(mask > 0)[..., None])
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(rgb, contours, -1, (255, 220, 0), thick)
        for f in result.findings:
            x0, y0, x1, y1 = f.box
            cv2.rectangle(rgb, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 255), thick)
            scale = max(0.4, max(h, w) / 900)
            label = f"{f.index}"
            (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
            ty = y0 - 4 if y0 - th - 4 > 0 else min(h - 1, y1 + th + 4)
            cv2.rectangle(rgb, (x0, ty - th - base), (x0 + tw + 4, ty + base), (0, 0, 0), -1)
            cv2.putText(rgb, label, (x0 + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 255, 255), thick, cv2.LINE_AA)
    if review_box is not None:
        _dashed_rect(rgb, review_box, REVIEW_COLOR, thick)
    return rgb


def result_to_dict(result: PredictionResult | None, file: str, model: str, error: str | None = None) -> dict:
    """The findings JSON object (schema shared by the app's download and ``predict.py --json``)."""
    if result is None:
        return {"file": file, "model": model, "width": None, "height": None, "threshold": None,
                "fracture_score": None, "findings": [], "error": error}
    return {
        "file": file,
        "model": model,
        "width": result.width,
        "height": result.height,
        "threshold": round(float(result.threshold), 4),
        "fracture_score": round(result.fracture_score, 4),
        "findings": [f.to_dict() for f in result.findings],
        "error": error,
    }


__all__ = [
    "Finding", "PredictionResult", "Predictor", "preprocess", "upscale_prob", "find_findings",
    "predict_images", "predict_image", "analyse_image", "result_from_prob", "display_gray", "render_overlay", "result_to_dict",
    "heatmap_legend", "heat_alpha",
]
