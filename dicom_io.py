"""DICOM decoding with pydicom, in memory: first frame, modality + VOI LUT, MONOCHROME1 inverted."""

from __future__ import annotations

import io

import numpy as np

from image_io import ImageLoadError


def load_dicom(data: bytes, name: str) -> tuple[np.ndarray, str | None]:
    """Return (uint8 grey (H, W) after windowing, note) or raise ImageLoadError."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:
        raise ImageLoadError(f"{name}: not a readable DICOM file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    if "PixelData" not in ds:
        raise ImageLoadError(f"{name}: DICOM file has no pixel data (PixelData element missing)")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        ts_name = f"{ts.name} ({ts})" if ts is not None else "unknown transfer syntax"
        raise ImageLoadError(f"{name}: cannot decode DICOM pixel data with transfer syntax {ts_name}") from exc
    notes = []
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if n_frames > 1:
        arr = arr[0]
        notes.append(f"DICOM with {n_frames} frames: only the first frame is analysed")
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and not photometric.startswith("MONOCHROME"):
        rgb = arr[..., :3].astype(np.float32)
        arr = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    else:
        arr = apply_modality_lut(arr, ds)
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            arr = apply_voi_lut(arr, ds, index=0)
    arr = np.asarray(arr, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    norm = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if photometric == "MONOCHROME1":  # 0 = white in MONOCHROME1: invert so bone is bright
        norm = 1.0 - norm
    return (norm * 255.0 + 0.5).astype(np.uint8), ("; ".join(notes) or None)
