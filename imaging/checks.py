"""What every decoder may hand on, and the one error it raises otherwise.

The decoders (``image_io`` for Pillow formats, ``dicom_io`` for DICOM) both end in
:func:`check_pixels`, so whatever a file claims, the rest of the pipeline
(``to_model_gray``, ``resize_for_model``, the overlay) only ever sees:

- shape (H, W) grey or (H, W, 3) colour (RGB order). Decoders turn anything else
  into one of these or refuse: alpha is dropped (X-ray meaning is in intensity),
  palette/CMYK/YCbCr become RGB, a multi-frame file gives its first frame only when
  the file is consistent about how many frames it holds (see ``dicom_io``);
- dtype uint8 or uint16 (integers: every value is finite by construction);
- at least ``CONFIG.min_image_side`` pixels a side and at most
  ``CONFIG.max_image_pixels`` pixels.

This module imports nothing from the decoders, so they can both use it without
importing each other.
"""

from __future__ import annotations

import numpy as np

from important_variables import CONFIG

#: The dtypes a decoded image may have (``to_model_gray`` scales each to [0, 1]).
PIXEL_DTYPES: tuple[np.dtype, ...] = (np.dtype(np.uint8), np.dtype(np.uint16))


class ImageLoadError(ValueError):
    """The file cannot be used; ``str(err)`` is one line naming the file and the cause."""


def one_line(exc: BaseException) -> str:
    """First line of an exception's text, or its type name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(": ") if text else type(exc).__name__


def max_file_bytes() -> int:
    """Largest file accepted, in bytes: the app's upload limit, so the CLI and the app agree."""
    return CONFIG.max_upload_mb * 2**20


def refuse_too_many_bytes(name: str, n_bytes: int) -> None:
    """Raise ImageLoadError when a file is over ``CONFIG.max_upload_mb``."""
    if n_bytes > max_file_bytes():
        raise ImageLoadError(f"{name}: file is {n_bytes / 2**20:.1f} MB, over the {CONFIG.max_upload_mb} MB limit")


def refuse_too_large(name: str, width: int, height: int) -> None:
    """Raise ImageLoadError when a header's size is over the pixel limit (call before decoding)."""
    if width * height > CONFIG.max_image_pixels:
        raise ImageLoadError(
            f"{name}: {width}x{height} px is over the limit of {CONFIG.max_image_pixels:,} pixels; refused before decoding"
        )


def check_pixels(pixels: object, name: str) -> np.ndarray:
    """Return ``pixels`` unchanged when it is a valid decoded image, else raise ImageLoadError.

    Valid: a numpy array of shape (H, W) or (H, W, 3), dtype uint8 or uint16, with
    ``min(H, W) >= CONFIG.min_image_side`` and ``H * W <= CONFIG.max_image_pixels``.
    A decoder that hands on anything else has misread the file (e.g. a DICOM whose
    Rows/Columns disagree with its pixel data), and the file is refused here rather
    than failing later inside OpenCV or the model.
    """
    if not isinstance(pixels, np.ndarray):
        raise ImageLoadError(f"{name}: the decoder returned no pixel array ({type(pixels).__name__})")
    shape = "x".join(str(n) for n in pixels.shape)
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)):
        raise ImageLoadError(
            f"{name}: decoded pixel data has shape {shape}, not a single grey or RGB image (H x W or H x W x 3)"
        )
    if pixels.dtype not in PIXEL_DTYPES:
        raise ImageLoadError(f"{name}: decoded pixel data has type {pixels.dtype}, not 8- or 16-bit unsigned integers")
    h, w = pixels.shape[:2]
    if min(h, w) < CONFIG.min_image_side:
        raise ImageLoadError(
            f"{name}: image is {w}x{h} px, too small to be an X-ray (at least {CONFIG.min_image_side} px a side)"
        )
    if h * w > CONFIG.max_image_pixels:
        raise ImageLoadError(f"{name}: image is {w}x{h} px, over the limit of {CONFIG.max_image_pixels:,} pixels")
    return pixels
