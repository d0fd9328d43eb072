"""Drawing a prediction: display grey levels, the annotated overlay, PNG bytes. No UI, no model.

The one place that encodes PNGs (the app's downloads, ``predict.py``'s files).

Shapes and ranges: pixels (H, W) or (H, W, 3), uint8 or uint16 (see image_io);
overlays RGB uint8 (H, W, 3); masks uint8 (H, W) in {0, 255}.
"""

from __future__ import annotations

import cv2
import numpy as np

from imaging.image_io import to_model_gray


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


#: The borderline mark is at least this share of the image's long side across (a 12-px spot of a
#: 454-px X-ray would be a dozen screen pixels), centred on the spot, and labelled REVIEW_LABEL.
REVIEW_MIN_SHARE = 0.12
REVIEW_LABEL = "review"


def review_frame(box: tuple[int, int, int, int], height: int, width: int, thick: int) -> tuple[int, int, int, int]:
    """The drawn frame (x0, y0, x1, y1), inclusive corners, of a review spot ``box`` (x1/y1 exclusive):
    the spot plus a margin, grown about its centre to at least REVIEW_MIN_SHARE of the long side,
    kept inside the image."""
    x0, y0, x1, y1 = box
    pad = 3 * thick  # around the spot, not on it: the bone under it stays visible
    side = int(round(REVIEW_MIN_SHARE * max(height, width)))
    (x0, x1), (y0, y1) = (_grown(x0 - pad, x1 - 1 + pad, side, width), _grown(y0 - pad, y1 - 1 + pad, side, height))
    return x0, y0, x1, y1


def _grown(a: int, b: int, side: int, size: int) -> tuple[int, int]:
    """[a, b] (inclusive) grown about its centre to at least ``side`` pixels, shifted (not cut) to fit in [0, size - 1]."""
    grow = max(0, side - (b - a))
    a, b = a - grow // 2, b + grow - grow // 2
    if a < 0:
        a, b = 0, b - a
    if b > size - 1:
        a, b = max(0, a - (b - (size - 1))), size - 1
    return a, b


def _label(rgb: np.ndarray, text: str, x: int, y_top: int, y_bottom: int, color, thick: int) -> None:
    """``text`` on a black plate just above ``y_top`` (or below ``y_bottom`` when there is no room)."""
    h, w = rgb.shape[:2]
    scale = max(0.4, max(h, w) / 900)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    ty = y_top - 4 if y_top - th - base - 4 > 0 else min(h - 1 - base, y_bottom + th + 4)
    x = min(max(0, x), max(0, w - tw - 4))
    cv2.rectangle(rgb, (x, ty - th - base), (x + tw + 4, ty + base), (0, 0, 0), -1)
    cv2.putText(rgb, text, (x + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


def _dashed_rect(rgb: np.ndarray, box: tuple[int, int, int, int], color, thick: int) -> None:
    """The review frame of ``box`` (see :func:`review_frame`), dashed, in place (OpenCV has no dashed
    line; a few dozen dashes, not a pixel loop), labelled REVIEW_LABEL."""
    x0, y0, x1, y1 = review_frame(box, rgb.shape[0], rgb.shape[1], thick)
    dash = max(4, 4 * thick)
    for (ax, ay), (bx, by) in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        length = max(abs(bx - ax), abs(by - ay))
        for start in range(0, length + 1, 2 * dash):
            end = min(length, start + dash)
            p = (ax + (bx - ax) * start // max(1, length), ay + (by - ay) * start // max(1, length))
            q = (ax + (bx - ax) * end // max(1, length), ay + (by - ay) * end // max(1, length))
            cv2.line(rgb, p, q, color, thick, cv2.LINE_8)  # crisp: the exact amber, easy to spot
    _label(rgb, REVIEW_LABEL, x0, y0, y1, color, thick)


def render_overlay(
    pixels: np.ndarray,
    result,  # results.PredictionResult (duck-typed: .mask(), .findings, .prob)
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
    review_thick = max(2, thick)  # the borderline frame is never a hairline
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
        _dashed_rect(rgb, review_box, REVIEW_COLOR, review_thick)
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
