"""Decoding of user and data-set images into pixel arrays, in memory only.

``load_image(data, name)`` turns the bytes of a JPEG, PNG (8/16 bit, grey, RGB,
RGBA, palette), other Pillow formats or a DICOM file (``dicom_io``) into a numpy
array and raises :class:`ImageLoadError` with a one-line message naming the file
and the problem for anything it cannot read faithfully. Whatever the decoder, the
array passes ``imaging.checks.check_pixels`` ((H, W) or (H, W, 3), uint8 or uint16,
within the size limits) before anyone else sees it. ``to_model_gray`` and
``resize_for_model`` give the model's view of a decoded image; training and
inference both go through them, so they see the same pixels.

Nothing is ever written to disk here.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps

from imaging.checks import ImageLoadError, check_pixels, one_line, refuse_too_large, refuse_too_many_bytes
from imaging.dicom_io import load_dicom  # light: pydicom itself is imported only when a DICOM comes
from important_variables import CONFIG

# ImageLoadError is defined in image_checks (shared with dicom_io) and offered here too:
# callers import the decoder's error from the decoder.
__all__ = ["ImageLoadError", "LoadedImage", "load_image", "read_image_file", "resize_for_model", "to_model_gray"]

log = logging.getLogger(__name__)

# Never accept half-decoded data: a truncated JPEG must fail, not give grey rows.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image.

    pixels: (H, W) grey or (H, W, 3) RGB; dtype uint8 or uint16 (full range used as is).
    note: a one-line remark for the user (e.g. "first of 3 frames"), or None.
    """

    pixels: np.ndarray
    note: str | None = None

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def _is_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_png(data: bytes, name: str) -> None:
    """Walk a PNG's chunks: refuse a bomb from IHDR alone and any chunk with a wrong CRC.

    Pillow checks the CRC of the header chunks but not of IDAT, so a corrupted pixel
    chunk could otherwise decode into wrong pixels without a word. zlib.crc32 runs
    at memory speed, so this costs well under a millisecond for an X-ray-sized file.
    """
    pos, end = len(_PNG_SIGNATURE), len(data)
    first = True
    while pos + 8 <= end:
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        body_end = pos + 8 + length
        if body_end + 4 > end:
            raise ImageLoadError(f"{name}: truncated PNG file (chunk {ctype.decode('latin-1')!r} runs past the end)")
        if first:
            if ctype != b"IHDR" or length < 8:
                raise ImageLoadError(f"{name}: broken PNG file (no IHDR header chunk)")
            width, height = struct.unpack(">II", data[pos + 8 : pos + 16])
            refuse_too_large(name, width, height)
            first = False
        (stored,) = struct.unpack(">I", data[body_end : body_end + 4])
        if zlib.crc32(data[pos + 4 : body_end]) != stored:
            raise ImageLoadError(f"{name}: corrupt PNG file (CRC mismatch in chunk {ctype.decode('latin-1')!r})")
        if ctype == b"IEND":
            return
        pos = body_end + 4
    raise ImageLoadError(f"{name}: truncated PNG file (no IEND chunk)")


def load_image(data: bytes, name: str, *, exif_orientation: bool = True) -> LoadedImage:
    """Decode ``data`` (the whole file's bytes); ``name`` is used in error messages only.

    ``exif_orientation`` False keeps the stored pixel grid (the data set's annotations
    refer to it); True, for users, turns the image upright first. The pixels always
    pass :func:`image_checks.check_pixels`: (H, W) or (H, W, 3), uint8 or uint16, of a
    sane size; anything else raises ImageLoadError, and no other exception escapes.
    """
    if not data:
        raise ImageLoadError(f"{name}: empty file (0 bytes)")
    refuse_too_many_bytes(name, len(data))
    if data.startswith(_PNG_SIGNATURE):
        _check_png(data, name)
    if _is_dicom(data):
        pixels, note = load_dicom(data, name)
    elif name.lower().endswith(".dcm"):
        pixels, note = _load_dcm_named(data, name)
    else:
        pixels, note = _load_pillow(data, name, exif_orientation)
    return LoadedImage(pixels=check_pixels(pixels, name), note=note)


def _load_dcm_named(data: bytes, name: str) -> tuple[np.ndarray, str | None]:
    """A ``.dcm`` file without the DICM preamble: an ordinary image that lies about its
    extension (read it, say so), else a preamble-less DICOM (read it with pydicom)."""
    try:
        pixels, note = _load_pillow(data, name)
    except ImageLoadError as pil_err:
        try:
            return load_dicom(data, name, force=True)
        except ImageLoadError:
            raise pil_err from None
    fmt_note = "not a DICOM file despite its .dcm name; read as an ordinary image"
    return pixels, "; ".join(n for n in (note, fmt_note) if n)


def _load_pillow(data: bytes, name: str, exif_orientation: bool = True) -> tuple[np.ndarray, str | None]:
    note = None
    try:
        with warnings.catch_warnings():
            # Pillow warns (instead of raising) between 1x and 2x its own limit; we check ourselves.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            refuse_too_large(name, w, h)
            n_frames = getattr(im, "n_frames", 1)
            if n_frames > 1:
                im.seek(0)
                note = f"{im.format} with {n_frames} frames: only the first frame is analysed"
            im.load()
            # EXIF orientation (phone photos of a light box): rotate upright so that
            # boxes are given in the coordinates the user sees.
            if exif_orientation:
                im = ImageOps.exif_transpose(im)
            # Inside the try: a mode conversion can fail on a damaged file too.
            pixels = _pil_to_array(im, name)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as exc:
        # Only reached above 2x Pillow's own limit, which is above ours: Image.open
        # itself refused, before any pixel was decoded.
        raise ImageLoadError(
            f"{name}: image is over the limit of {CONFIG.max_image_pixels:,} pixels; refused before decoding"
        ) from exc
    except MemoryError:
        raise  # not the file's fault alone: callers report it as such
    except OSError as exc:
        msg = one_line(exc)
        if "truncated" in msg.lower() or "premature end" in msg.lower():
            raise ImageLoadError(f"{name}: truncated image file, cannot be decoded completely") from exc
        if "cannot identify image file" in msg:
            raise ImageLoadError(f"{name}: not a recognised image format (JPEG, PNG or DICOM expected)") from exc
        raise ImageLoadError(f"{name}: cannot decode image ({msg})") from exc
    except Exception as exc:  # Pillow raises many types (SyntaxError for a bad PNG chunk, ...)
        raise ImageLoadError(f"{name}: cannot decode image ({one_line(exc)})") from exc
    return pixels, note


def _pil_to_array(im: Image.Image, name: str) -> np.ndarray:
    """Pillow image → (H, W) grey or (H, W, 3) RGB array, uint8 or uint16 (one copy)."""
    mode = im.mode
    # np.array (not asarray + copy): one copy out of Pillow's buffer, writable.
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.array(im, dtype=np.uint16)
    if mode in ("I", "F"):
        # 32-bit int / float images (some TIFFs): stretched to the full uint16 range.
        arr = np.asarray(im, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise ImageLoadError(f"{name}: image holds NaN or infinite pixel values")
        lo, hi = float(arr.min()), float(arr.max())
        if hi <= lo:
            return np.zeros(arr.shape, np.uint16)
        # float64: arr - lo can overflow float32 when the values span most of its range.
        return ((arr.astype(np.float64) - lo) * (65535.0 / (hi - lo)) + 0.5).astype(np.uint16)
    if mode == "L":
        return np.array(im, dtype=np.uint8)
    if mode in ("1", "LA", "La"):
        return np.array(im.convert("L"), dtype=np.uint8)
    if mode == "RGB":
        return np.array(im, dtype=np.uint8)
    # RGBA, P, PA, CMYK, YCbCr, LAB, HSV...: to RGB. Alpha is dropped: X-ray
    # pixels carry their meaning in intensity, transparency has none.
    return np.array(im.convert("RGB"), dtype=np.uint8)


def to_model_gray(pixels: np.ndarray) -> np.ndarray:
    """Grey float32 in [0, 1], shape (H, W), from a LoadedImage's pixels (uint8/uint16, grey/RGB)."""
    arr = pixels
    if arr.ndim == 3:
        if arr.shape[2] == 1:
            arr = arr[..., 0]
        else:
            # cv2 takes uint8/uint16 directly and keeps the dtype.
            arr = cv2.cvtColor(np.ascontiguousarray(arr[..., :3]), cv2.COLOR_RGB2GRAY)
    if arr.dtype in (np.uint8, np.uint16):
        # Divided in place: one full-size float32 array instead of two (240 MB each at
        # the 60-megapixel limit). Same float32 division, so the same values, bit for bit.
        out = arr.astype(np.float32)
        out /= np.float32(255.0 if arr.dtype == np.uint8 else 65535.0)
        return out
    arr = arr.astype(np.float32)
    return np.clip(arr, 0.0, 1.0)


def resize_for_model(gray: np.ndarray, size: int = CONFIG.input_size) -> np.ndarray:
    """Resize a (H, W) image to (size, size) with area averaging (the aspect ratio is not kept)."""
    h, w = gray.shape[:2]
    interp = cv2.INTER_AREA if (h >= size and w >= size) else cv2.INTER_LINEAR
    return cv2.resize(gray, (size, size), interpolation=interp)


def native_scale(height: int, width: int, long_side: int = CONFIG.native_long_side) -> float:
    """Factor (<= 1) that brings a (height, width) image to the models' training scale.

    The models are trained and run at the images' own pixel scale (most FracAtlas
    X-rays are 373x454); only images whose long side exceeds ``long_side`` are shrunk.
    """
    return min(1.0, long_side / float(max(height, width, 1)))


def to_native_gray(gray: np.ndarray, long_side: int = CONFIG.native_long_side) -> np.ndarray:
    """(H, W) grey (any dtype) → (h, w), same dtype, at the training scale (area averaging when shrinking)."""
    h, w = gray.shape[:2]
    s = native_scale(h, w, long_side)
    if s >= 1.0:
        return gray
    return cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def pad_to_multiple(x: np.ndarray, multiple: int = CONFIG.pad_multiple) -> np.ndarray:
    """Zero-pad the two leading axes of ``x`` (H, W, ...) at the bottom/right up to multiples of ``multiple``.

    The U-Net pools 4 times, so a whole image goes through it at a size divisible by 16;
    the padding is black, as the border of the training crops.
    """
    h, w = x.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return x
    return np.pad(x, [(0, ph), (0, pw)] + [(0, 0)] * (x.ndim - 2))


def read_image_file(path, name: str | None = None, *, exif_orientation: bool = True) -> LoadedImage:
    """Read a file from disk (data set, CLI) and decode it; errors name the file."""
    path = Path(path)
    name = name or path.name
    try:
        # Size first: a huge file is refused without being read into memory.
        refuse_too_many_bytes(name, path.stat().st_size)
        data = path.read_bytes()
    except OSError as exc:
        raise ImageLoadError(f"{name}: cannot read file ({exc.strerror or exc})") from exc
    return load_image(data, name, exif_orientation=exif_orientation)
