"""Images in and out: decoding uploads and files (PNG/JPEG/…, DICOM) with one-line errors, the
decoder limits, the overlay drawing and PNG encoding, and the DICOM export. No model, no UI."""
