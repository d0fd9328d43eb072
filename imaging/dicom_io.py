"""DICOM decoding with pydicom, in memory: header checks, first frame, modality + VOI LUT.

Output: (H, W) uint8 grey, 0 = black, bone bright (MONOCHROME1 is inverted). The
window recorded in the file (WindowCenter/WindowWidth, DICOM PS3.3 C.11.2.1.2
linear function) maps to the full 0..255 range; without one (or with an unusable
one, noted) the frame's own min..max does. Colour files (RGB, YBR, PALETTE COLOR)
become grey with OpenCV's luma weights, then min..max.

The header is checked before any pixel is decoded, so that a damaged file is
refused with its reason instead of being misread:

- Rows and Columns at least 1 and Rows x Columns within ``CONFIG.max_image_pixels``;
- SamplesPerPixel 1 for MONOCHROME1/2 and PALETTE COLOR, 3 for RGB and YBR_*; other
  PhotometricInterpretations (ARGB, CMYK, HSV: retired from the standard) are refused;
- BitsAllocated 1, 8, 16, 32 or 64; BitsStored between 1 and BitsAllocated;
- NumberOfFrames at least 1 (empty or 0 reads as 1, as pydicom does);
- uncompressed pixel data exactly as long as Rows x Columns x SamplesPerPixel x
  BitsAllocated x NumberOfFrames gives (plus the one padding byte of odd lengths).
  A file whose Rows/Columns disagree with its pixel data is refused: pydicom would
  otherwise hand on a stack of wrongly-cut "frames". Only a multi-frame file that
  says so (NumberOfFrames > 1) and whose length agrees gives its first frame, with a note;
- compressed pixel data: the first frame must decode to the header's shape.
"""

from __future__ import annotations

import io

import numpy as np

from imaging.checks import ImageLoadError, one_line, refuse_too_large

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_PARTIAL_422", "YBR_ICT", "YBR_RCT")
_BITS_ALLOCATED = (1, 8, 16, 32, 64)
_F32_MAX = float(np.finfo(np.float32).max)


def _first_value(value) -> float:
    """WindowCenter/Width may be multi-valued (several presets): the first one is the default."""
    try:
        return float(value[0])
    except (TypeError, IndexError):
        return float(value)


def _int_attr(ds, keyword: str, default: int | None = None) -> int | None:
    """An integer header value; ``default`` when absent or empty. Malformed values raise."""
    value = ds.get(keyword, None)
    return default if value is None or value == "" else int(value)


def _header(ds, name: str) -> dict:
    """Read and check the Image Pixel header (see the module docstring); raises ImageLoadError."""
    try:
        rows, cols = _int_attr(ds, "Rows", 0), _int_attr(ds, "Columns", 0)
        spp = _int_attr(ds, "SamplesPerPixel", 1)
        bits_allocated = _int_attr(ds, "BitsAllocated", None)
        bits_stored = _int_attr(ds, "BitsStored", bits_allocated)
        n_frames = _int_attr(ds, "NumberOfFrames", 1) or 1  # 0 → 1, as pydicom reads it
        photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    except Exception as exc:  # pydicom converts values lazily: a damaged element raises here
        raise ImageLoadError(f"{name}: malformed DICOM image header ({one_line(exc)})") from exc
    if rows < 1 or cols < 1:
        raise ImageLoadError(f"{name}: DICOM header gives no image size (Rows {rows}, Columns {cols})")
    refuse_too_large(name, cols, rows)
    if n_frames < 1:
        raise ImageLoadError(f"{name}: DICOM header gives NumberOfFrames {n_frames}")
    if photometric in _MONOCHROME or photometric == "PALETTE COLOR":
        want_spp = 1
    elif photometric in _COLOUR:
        want_spp = 3
    else:
        raise ImageLoadError(f"{name}: unsupported DICOM PhotometricInterpretation {photometric or '(missing)'!r}")
    if spp != want_spp:
        raise ImageLoadError(f"{name}: DICOM header disagrees with itself: SamplesPerPixel {spp} for {photometric}")
    if bits_allocated not in _BITS_ALLOCATED:
        raise ImageLoadError(f"{name}: unsupported DICOM BitsAllocated {bits_allocated}")
    if bits_stored is None or not 1 <= bits_stored <= bits_allocated:
        raise ImageLoadError(f"{name}: DICOM BitsStored {bits_stored} does not fit BitsAllocated {bits_allocated}")
    return {"rows": rows, "cols": cols, "spp": spp, "bits_allocated": bits_allocated, "n_frames": n_frames,
            "photometric": photometric}


def _check_native_length(ds, h: dict, name: str) -> None:
    """Uncompressed data: the PixelData length must be what the header says (see module docstring)."""
    n_values = h["rows"] * h["cols"] * h["spp"] * h["n_frames"]
    if h["bits_allocated"] == 1:
        expected = (n_values + 7) // 8
    else:
        expected = n_values * h["bits_allocated"] // 8
    if h["photometric"] == "YBR_FULL_422":  # two chroma samples per two pixels (PS3.5 8.2.1)
        expected = expected // 3 * 2
    actual = len(ds.PixelData or b"")  # an empty element reads as None
    if actual not in (expected, expected + 1):  # + the odd-length padding byte
        frames = f" x {h['n_frames']} frames" if h["n_frames"] > 1 else ""
        raise ImageLoadError(
            f"{name}: DICOM header and pixel data disagree: {h['rows']} rows x {h['cols']} columns x "
            f"{h['spp']} samples x {h['bits_allocated']} bits{frames} need {expected:,} bytes, the file holds {actual:,}"
        )


def _decode_first_frame(ds, h: dict, name: str) -> np.ndarray:
    """The first frame as pydicom gives it: (rows, cols) or (rows, cols, 3) (YBR converted to RGB)."""
    from pydicom.pixels import pixel_array

    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        if ts is not None and not ts.is_encapsulated:
            _check_native_length(ds, h, name)
        # index=0 decodes the first frame only (a 500-frame CT does not become 500 arrays).
        arr = pixel_array(ds, index=0)
    except (ImageLoadError, MemoryError):
        raise
    except Exception as exc:  # pydicom and its plugins raise many types for damaged data
        ts_name = f"{ts.name} ({ts})" if ts is not None else "unknown transfer syntax"
        raise ImageLoadError(
            f"{name}: cannot decode DICOM pixel data with transfer syntax {ts_name} ({one_line(exc)})"
        ) from exc
    want = (h["rows"], h["cols"]) + ((3,) if h["spp"] == 3 else ())
    if arr.shape != want:
        raise ImageLoadError(
            f"{name}: DICOM pixel data decodes to shape {'x'.join(map(str, arr.shape))}, "
            f"the header says {'x'.join(map(str, want))}"
        )
    return arr


def _rescale(arr: np.ndarray, ds, name: str) -> np.ndarray:
    """Stored values → modality values (e.g. Hounsfield units), float32, finite, as a new array."""
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        try:
            out = apply_modality_lut(arr, ds).astype(np.float32)
        except MemoryError:
            raise
        except Exception as exc:
            raise ImageLoadError(f"{name}: unusable DICOM Modality LUT ({one_line(exc)})") from exc
    else:
        # As pydicom: the linear rescale applies when both values are given (non-empty).
        slope, intercept = 1.0, 0.0
        try:
            if ds.get("RescaleSlope", None) not in (None, "") and ds.get("RescaleIntercept", None) not in (None, ""):
                slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        except Exception as exc:
            raise ImageLoadError(f"{name}: malformed DICOM RescaleSlope/RescaleIntercept ({one_line(exc)})") from exc
        if not (abs(slope) <= _F32_MAX and abs(intercept) <= _F32_MAX):  # also False for NaN
            raise ImageLoadError(f"{name}: unusable DICOM rescale (RescaleSlope {slope}, RescaleIntercept {intercept})")
        # float32 in place: half the memory of pydicom's float64 for a large image.
        out = arr.astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused just below
            if slope != 1.0:
                out *= np.float32(slope)
            if intercept != 0.0:
                out += np.float32(intercept)
    if not np.isfinite(out).all():
        raise ImageLoadError(f"{name}: DICOM pixel values are not finite after the modality rescale")
    return out


def _linear_window(arr: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM linear VOI function, in place on float32 ``arr`` → [0, 1] (PS3.3 C.11.2.1.2.1)."""
    with np.errstate(over="ignore"):  # a far-off window saturates to 0 or 1, which is its meaning
        arr -= np.float32(center - 0.5)
        arr /= np.float32(width - 1.0 if width > 1.0 else 1.0)
        arr += np.float32(0.5)
    return np.clip(arr, 0.0, 1.0, out=arr)


def _minmax(arr: np.ndarray) -> np.ndarray:
    """float32 ``arr`` (overwritten) stretched to [0, 1] by its own min..max."""
    lo, hi = float(arr.min()), float(arr.max())
    if not hi > lo:
        arr[...] = 0.0
        return arr
    with np.errstate(over="ignore"):  # values spanning most of float32's range: saturate, then clip
        arr -= np.float32(lo)
        arr *= np.float32(1.0 / (hi - lo))
    return np.clip(arr, 0.0, 1.0, out=arr)


def _window(ds) -> tuple[float, float] | None | str:
    """The file's linear window (center, width), None when it has none, or why it is unusable."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    try:
        center, width = _first_value(ds.WindowCenter), _first_value(ds.WindowWidth)
    except Exception as exc:
        return f"malformed ({one_line(exc)})"
    if not (abs(center) <= _F32_MAX and 1.0 <= width <= _F32_MAX):  # PS3.3: width >= 1; False for NaN
        return f"center {center}, width {width}"
    return center, width


def _grey_to_unit(arr: np.ndarray, ds, photometric: str, name: str, notes: list[str]) -> np.ndarray:
    """Monochrome stored values → float32 in [0, 1]: rescale, then the file's window or min..max."""
    from pydicom.pixels import apply_voi_lut

    arr = _rescale(arr, ds, name)
    voi_function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    window = _window(ds) if voi_function in ("LINEAR", "LINEAR_EXACT") else None
    if isinstance(window, tuple):
        norm = _linear_window(arr, *window)
    elif isinstance(window, str):
        notes.append(f"the file's display window is unusable ({window}): shown with the image's own range")
        norm = _minmax(arr)
    elif "VOILUTSequence" in ds or (voi_function == "SIGMOID" and "WindowCenter" in ds):
        try:
            norm = _minmax(np.asarray(apply_voi_lut(arr, ds, index=0), dtype=np.float32))
        except MemoryError:
            raise
        except Exception as exc:
            notes.append(f"the file's VOI LUT is unusable ({one_line(exc)}): shown with the image's own range")
            norm = _minmax(arr)
    else:
        norm = _minmax(arr)
    if photometric == "MONOCHROME1":  # 0 = white in MONOCHROME1: invert so bone is bright
        np.subtract(1.0, norm, out=norm)
    return norm


def _colour_to_grey(arr: np.ndarray, ds, photometric: str, name: str) -> np.ndarray:
    """RGB (H, W, 3), or PALETTE COLOR indices (H, W), → float32 grey in [0, 1] by min..max."""
    import cv2

    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            arr = apply_color_lut(arr, ds)
        except MemoryError:
            raise
        except Exception as exc:
            raise ImageLoadError(f"{name}: unusable DICOM palette colour table ({one_line(exc)})") from exc
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ImageLoadError(f"{name}: DICOM palette colour table gives shape {'x'.join(map(str, arr.shape))}")
    if arr.dtype not in (np.uint8, np.uint16):
        arr = arr.astype(np.float32)  # cv2 takes uint8, uint16 and float32
    grey = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2GRAY)
    return _minmax(grey.astype(np.float32))


def load_dicom(data: bytes, name: str, force: bool = False) -> tuple[np.ndarray, str | None]:
    """Return (uint8 grey (H, W) after windowing, note) or raise ImageLoadError.

    ``force`` reads files without the 128-byte preamble + "DICM" (pydicom's force=True).
    """
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=force)
        has_pixels, has_rows = "PixelData" in ds, "Rows" in ds
    except MemoryError:
        raise
    except Exception as exc:
        raise ImageLoadError(f"{name}: not a readable DICOM file ({one_line(exc)})") from exc
    if not has_pixels:
        if force and not has_rows:  # force=True "reads" almost anything: it was not DICOM
            raise ImageLoadError(f"{name}: not a recognised image format (JPEG, PNG or DICOM expected)")
        raise ImageLoadError(f"{name}: DICOM file has no pixel data (PixelData element missing)")
    h = _header(ds, name)
    arr = _decode_first_frame(ds, h, name)
    notes = []
    if h["n_frames"] > 1:
        notes.append(f"DICOM with {h['n_frames']} frames: only the first frame is analysed")
    if h["spp"] == 3 or h["photometric"] == "PALETTE COLOR":
        norm = _colour_to_grey(arr, ds, h["photometric"], name)
    else:
        norm = _grey_to_unit(arr, ds, h["photometric"], name, notes)
    del arr
    # Belt and braces: every step above keeps values finite, but a NaN cast to uint8 is
    # silently 0, so check before the cast rather than trust it.
    if not np.isfinite(norm).all():
        raise ImageLoadError(f"{name}: DICOM pixel values are not finite after windowing")
    norm *= np.float32(255.0)
    norm += np.float32(0.5)
    return norm.astype(np.uint8), ("; ".join(notes) or None)
