"""DICOM Secondary Capture export: read back with pydicom (synthetic images, no data set)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from imaging.dicom_export import DicomExportError, is_dicom, secondary_capture


def source_dicom(rows: int = 8, cols: int = 6, **extra) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Doe^Jane", "P-0042", "19800101", "F"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyID, ds.AccessionNumber, ds.StudyDate = "S1", "ACC9", "20260101"
    ds.Modality = "DX"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(rows * cols, dtype=np.uint16) % 4096).reshape(rows, cols).tobytes()
    for k, v in extra.items():
        setattr(ds, k, v)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_secondary_capture_reads_back_with_identifiers_new_series_and_findings():
    src_bytes = source_dicom()
    src = pydicom.dcmread(io.BytesIO(src_bytes))
    rng = np.random.default_rng(0)
    overlay = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    text = "U-Net, threshold 0.80: 1 finding. #1 box (3, 4, 10, 12) score 0.91. Fracture likelihood ≈ 62 %."
    out = secondary_capture(src_bytes, overlay, text, "Fracture marks: U-Net, threshold 0.80")
    assert is_dicom(out)
    ds = pydicom.dcmread(io.BytesIO(out))
    assert ds.SOPClassUID == SecondaryCaptureImageStorage and ds.file_meta.MediaStorageSOPClassUID == SecondaryCaptureImageStorage
    for k in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
              "AccessionNumber", "StudyDate"):
        assert ds.data_element(k).value == src.data_element(k).value, k
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID and ds.SOPInstanceUID != src.SOPInstanceUID
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert ds.ImageComments == text  # UTF-8 (≈) survives
    assert ds.BurnedInAnnotation == "YES" and ds.Modality == "OT"
    np.testing.assert_array_equal(ds.pixel_array, overlay)


def test_export_refuses_a_non_dicom_or_a_study_less_source():
    overlay = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(DicomExportError):
        secondary_capture(b"\xff\xd8\xff\xe0 not dicom", overlay, "", "x")
    no_study = source_dicom()
    ds = pydicom.dcmread(io.BytesIO(no_study))
    del ds.StudyInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(DicomExportError, match="StudyInstanceUID"):
        secondary_capture(buf.getvalue(), overlay, "", "x")
    with pytest.raises(ValueError, match="RGB uint8"):
        secondary_capture(source_dicom(), np.zeros((4, 4), np.uint8), "", "x")
