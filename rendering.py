"""Drawing a prediction: display grey levels, the annotated overlay, PNG bytes. No UI, no model.

The one place that encodes PNGs (the app's downloads, ``predict.py``'s files).

Shapes and ranges: pixels (H, W) or (H, W, 3), uint8 or uint16 (see image_io);
overlays RGB uint8 (H, W, 3); masks uint8 (H, W) in {0, 255}.
"""

from __future__ import annotations

import cv2
import numpy as np

from image_io import to_model_gray


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


def render_overlay(
    pixels: np.ndarray,
    result,  # prediction.PredictionResult (duck-typed: .mask(), .findings, .prob)
    opacity: float = 0.35,
    show_heatmap: bool = False,
    window: tuple[float, float] | None = None,
) -> np.ndarray:
    """Annotated RGB uint8 (H, W, 3): filled mask, outline, numbered boxes (and optional heatmap)."""
    gray = display_gray(pixels, *(window or (None, None)))
    rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    h, w = gray.shape
    if show_heatmap:
        heat = cv2.applyColorMap((result.prob * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
        rgb = cv2.addWeighted(rgb, 1.0 - opacity, heat, opacity, 0)
    mask = result.mask() if result.findings else None
    if mask is not None:
        # Tint towards red, kept only inside the mask: written in place through the
        # mask (no full-size np.where result).
        red = np.zeros_like(rgb)
        red[..., 0] = 255
        blended = cv2.addWeighted(rgb, 1.0 - opacity, red, opacity, 0)
        np.copyto(rgb, blended, where=(mask > 0)[..., None])
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        thick = max(1, round(max(h, w) / 400))
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
    return rgb


def encode_png(image: np.ndarray, compression: int | None = None) -> bytes:
    """RGB (H, W, 3) or grey (H, W) uint8 → PNG bytes, in memory.

    ``compression`` 0-9 (None: OpenCV's default, 3). ``predict.py`` uses 1: about 3x
    faster to write than 3, files about 10 % larger.
    """
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [] if compression is None else [cv2.IMWRITE_PNG_COMPRESSION, int(compression)]
    ok, buf = cv2.imencode(".png", image, params)
    if not ok:  # cv2 only fails here on an impossible shape/dtype; say so rather than send junk
        raise ValueError(f"cannot encode an array of shape {image.shape} and dtype {image.dtype} as PNG")
    return buf.tobytes()
