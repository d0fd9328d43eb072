"""The annotated result as a DICOM Secondary Capture, in memory, so it can go back to a PACS.

The new object joins the uploaded image's study: patient and study identifiers are
copied from the source DICOM, it gets a new series and instance (new UIDs), the
annotated RGB overlay as pixel data (``BurnedInAnnotation`` YES) and the findings as
text in ``ImageComments``. The source image is referenced in ``SourceImageSequence``.
Nothing is written to disk: bytes in, bytes out.

Shapes: ``overlay`` is RGB uint8 (H, W, 3).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np

#: Patient / study attributes copied from the source so the result files into the same study.
COPIED = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "StudyInstanceUID", "StudyID", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName",
    "StudyDescription", "BodyPartExamined", "Laterality",
)
#: Series number of the added series: high, so PACS viewers list it after the acquired ones.
SERIES_NUMBER = 9901
#: ImageComments is LT: at most 10240 characters.
MAX_COMMENT = 10240


class DicomExportError(ValueError):
    """The source is not a DICOM we can attach a result to (message is one line)."""


def is_dicom(data: bytes) -> bool:
    """True for a DICOM Part 10 file (the "DICM" marker after the 128-byte preamble)."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def _set_rgb_pixels(ds, overlay: np.ndarray) -> None:
    """The image pixel module of ``ds`` for an RGB uint8 (H, W, 3) ``overlay``."""
    h, w, _ = overlay.shape
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0  # R, G, B interleaved per pixel: numpy's (H, W, 3) order
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(overlay).tobytes()


def secondary_capture(source: bytes, overlay: np.ndarray, findings_text: str, series_description: str) -> bytes:
    """A Secondary Capture Image Storage object (explicit VR little endian) as bytes.

    source: the uploaded DICOM file's bytes (only its header is read).
    overlay: the annotated image, RGB uint8 (H, W, 3).
    findings_text: what was found, one paragraph (stored in ImageComments).
    series_description: e.g. "Fracture marks: U-Net, threshold 0.80".
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    if overlay.dtype != np.uint8 or overlay.ndim != 3 or overlay.shape[2] != 3:
        raise ValueError(f"overlay must be RGB uint8 (H, W, 3), got {overlay.dtype} {overlay.shape}")
    try:
        src = pydicom.dcmread(io.BytesIO(source), stop_before_pixels=True, force=not is_dicom(source))
    except Exception as exc:
        raise DicomExportError(f"the source is not a readable DICOM file ({type(exc).__name__})") from exc
    if "StudyInstanceUID" not in src:
        raise DicomExportError("the source DICOM has no StudyInstanceUID, so the result cannot join its study")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: findings text and copied names keep their characters
    for keyword in COPIED:
        if keyword in src:
            setattr(ds, keyword, src.data_element(keyword).value)
    now = datetime.now(UTC)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = SERIES_NUMBER
    ds.InstanceNumber = 1
    ds.SeriesDescription = series_description[:64]
    ds.Modality = "OT"
    ds.ConversionType = "WSD"  # workstation: a derived picture, not an acquisition
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.SeriesDate, ds.SeriesTime = ds.ContentDate, ds.ContentTime
    ds.BurnedInAnnotation = "YES"
    ds.DerivationDescription = "Fracture regions marked by a segmentation model; not a diagnosis."[:1024]
    ds.ImageComments = findings_text[:MAX_COMMENT]
    if "SOPInstanceUID" in src and "SOPClassUID" in src:
        ref = pydicom.Dataset()
        ref.ReferencedSOPClassUID = src.SOPClassUID
        ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
        ds.SourceImageSequence = Sequence([ref])
    _set_rgb_pixels(ds, overlay)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


__all__ = ["COPIED", "DicomExportError", "is_dicom", "secondary_capture"]
