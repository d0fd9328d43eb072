"""DICOM decoding with pydicom, in memory: first frame, modality + VOI LUT, MONOCHROME1 inverted.

Output: (H, W) uint8 grey, 0 = black, bone bright (MONOCHROME1 is inverted). The
window recorded in the file (WindowCenter/WindowWidth, DICOM PS3.3 C.11.2.1.2
linear function) maps to the full 0..255 range; without one the frame's own
min..max does. Only the first frame of a multi-frame file is decoded.
"""

from __future__ import annotations

import io

import numpy as np

from image_io import ImageLoadError, _one_line, _refuse_too_large


def _first_value(value) -> float:
    """WindowCenter/Width may be multi-valued (several presets): the first one is the default."""
    try:
        return float(value[0])
    except (TypeError, IndexError):
        return float(value)


def _linear_window(arr: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM linear VOI function → float32 in [0, 1] (PS3.3 C.11.2.1.2.1)."""
    width = max(width, 1.0)
    out = (arr.astype(np.float32) - (center - 0.5)) / (width - 1.0 if width > 1.0 else 1.0) + 0.5
    return np.clip(out, 0.0, 1.0)


def _minmax(arr: np.ndarray) -> np.ndarray:
    arr = arr.astype(np.float32, copy=False)
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def load_dicom(data: bytes, name: str, force: bool = False) -> tuple[np.ndarray, str | None]:
    """Return (uint8 grey (H, W) after windowing, note) or raise ImageLoadError.

    ``force`` reads files without the 128-byte preamble + "DICM" (pydicom's force=True).
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=force)
    except Exception as exc:
        raise ImageLoadError(f"{name}: not a readable DICOM file ({_one_line(exc)})") from exc
    if "PixelData" not in ds:
        if force and "Rows" not in ds:  # force=True "reads" almost anything: it was not DICOM
            raise ImageLoadError(f"{name}: not a recognised image format (JPEG, PNG or DICOM expected)")
        raise ImageLoadError(f"{name}: DICOM file has no pixel data (PixelData element missing)")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    _refuse_too_large(name, cols, rows)
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        # index=0 decodes the first frame only (a 500-frame CT does not become 500 arrays).
        arr = pixel_array(ds, index=0) if n_frames > 1 else ds.pixel_array
    except Exception as exc:
        ts_name = f"{ts.name} ({ts})" if ts is not None else "unknown transfer syntax"
        raise ImageLoadError(
            f"{name}: cannot decode DICOM pixel data with transfer syntax {ts_name} ({_one_line(exc)})"
        ) from exc
    notes = []
    if n_frames > 1:
        notes.append(f"DICOM with {n_frames} frames: only the first frame is analysed")
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and not photometric.startswith("MONOCHROME"):
        # Colour DICOM (secondary capture): pydicom returns RGB; luma weights as OpenCV's.
        rgb = arr[..., :3].astype(np.float32)
        norm = _minmax(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))
    else:
        arr = apply_modality_lut(arr, ds)  # stored values → e.g. Hounsfield / linear units
        if "WindowCenter" in ds and "WindowWidth" in ds and str(ds.get("VOILUTFunction", "LINEAR")).upper() == "LINEAR":
            norm = _linear_window(arr, _first_value(ds.WindowCenter), _first_value(ds.WindowWidth))
        elif "WindowCenter" in ds or "VOILUTSequence" in ds:
            norm = _minmax(apply_voi_lut(arr, ds, index=0))  # SIGMOID window or a LUT table
        else:
            norm = _minmax(arr)
        if photometric == "MONOCHROME1":  # 0 = white in MONOCHROME1: invert so bone is bright
            norm = 1.0 - norm
    return (norm * 255.0 + 0.5).astype(np.uint8), ("; ".join(notes) or None)
