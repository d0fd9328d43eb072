"""Generate the bad-input corpus (nothing in it is stored in git).

``build_corpus(directory)`` writes every file and returns one :class:`Case` per
file: what must happen when it is loaded ("ok" or "error") and a substring that
the error message (for "error") or the note (for "ok", when not None) must
contain. ``python tests/make_bad_corpus.py`` writes into ``tests/data/bad/``
(git-ignored) for looking at the files by hand.

All files are small: the 30000x30000 "decompression bomb" is a 1-bit grey PNG
whose rows of zeros are compressed by zlib in a stream (~110 kB on disk, 900
megapixels when decoded).
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

BOMB_SIDE = 30_000


@dataclass(frozen=True)
class Case:
    """file: name inside the corpus folder; expected: "ok" or "error";
    match: substring of the error (error) / of the note (ok; None = no note expected);
    behaviour: one line for the README table."""

    file: str
    expected: str
    match: str | None
    behaviour: str


def _gradient(h: int = 96, w: int = 128) -> np.ndarray:
    """(h, w) uint8 diagonal gradient with a bright square: a stand-in X-ray."""
    y, x = np.mgrid[0:h, 0:w]
    img = ((x + y) * 200 // (h + w)).astype(np.uint8)
    img[10:30, 10:30] = 255
    return img


def grey16() -> np.ndarray:
    """(96, 128) uint16 using values that 8 bits cannot hold (low byte = column)."""
    g = _gradient().astype(np.uint32)
    return (g * 256 + np.arange(g.shape[1], dtype=np.uint32)[None, :]).astype(np.uint16)


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def write_png_bomb(path: Path, side: int = BOMB_SIDE) -> None:
    """A valid side x side 1-bit grey PNG of zeros, streamed row by row through zlib."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte 0 + packed bits
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(side)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr))
        fh.write(_png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b""))


def _png_with_bad_crc(img: np.ndarray) -> bytes:
    """A PNG whose IDAT data has one byte flipped (its stored CRC no longer matches)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    i = data.index(b"IDAT") + 4 + 10  # inside the compressed pixel data
    data[i] ^= 0xFF
    return bytes(data)


def _jpeg(img: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def _dicom(path: Path, frames: np.ndarray | None, *, photometric: str = "MONOCHROME2", bits_stored: int = 16,
           window: tuple[float, float] | None = None, transfer_syntax=None, encapsulated: bytes | None = None) -> None:
    """Write a small DX DICOM file. frames: (F, H, W) uint16 or None (no PixelData)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientName = "Corpus^Synthetic"
    ds.PatientID = "0"
    shape = frames.shape if frames is not None else (1, 64, 64)
    ds.Rows, ds.Columns = int(shape[1]), int(shape[2])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if shape[0] > 1:
        ds.NumberOfFrames = int(shape[0])
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if encapsulated is not None:
        ds.PixelData = encapsulate([encapsulated])
        ds["PixelData"].VR = "OB"
    elif frames is not None:
        ds.PixelData = frames.astype("<u2").tobytes()
        ds["PixelData"].VR = "OW"
    ds.save_as(path, enforce_file_format=True)


def build_corpus(directory: Path | str) -> list[Case]:
    """Write the corpus into ``directory`` (created) and return its cases."""
    from pydicom.uid import JPEGLSLossless

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    g = _gradient()
    cases: list[Case] = []

    def add(file: str, expected: str, match: str | None, behaviour: str, data: bytes | None = None) -> None:
        if data is not None:
            (d / file).write_bytes(data)
        cases.append(Case(file, expected, match, behaviour))

    add("empty.jpg", "error", "empty file", "error: empty file (0 bytes)", b"")
    add("text_named.jpg", "error", "not a recognised image format", "error: not a recognised image format",
        b"This is a text file, not a JPEG.\n" * 20)
    jpeg = _jpeg(np.random.default_rng(0).integers(0, 255, (256, 256), dtype=np.uint8))
    add("truncated.jpg", "error", "truncated", "error: truncated image file", jpeg[: len(jpeg) * 2 // 3])
    add("bad_crc.png", "error", "CRC mismatch", "error: corrupt PNG (CRC mismatch in chunk 'IDAT')", _png_with_bad_crc(g))
    buf = io.BytesIO()
    Image.new("L", (1, 1), 128).save(buf, "PNG")
    add("one_pixel.png", "error", "too small", "error: 1x1 px, too small (at least 16 px a side)", buf.getvalue())
    write_png_bomb(d / "bomb_30000x30000.png")
    add("bomb_30000x30000.png", "error", "over the limit of 60,000,000 pixels",
        "error: 30000x30000 px over the 60,000,000-pixel limit, refused before decoding")

    rgba = np.dstack([g, g, g, np.linspace(0, 255, g.shape[1], dtype=np.uint8)[None, :].repeat(g.shape[0], 0)])
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    add("rgba.png", "ok", None, "works: alpha dropped, grey from RGB", buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(g).convert("P").save(buf, "PNG")
    add("palette.png", "ok", None, "works: palette expanded to RGB", buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(g).convert("CMYK").save(buf, "JPEG", quality=95)
    add("cmyk.jpg", "ok", None, "works: CMYK converted to RGB", buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(grey16()).save(buf, "PNG")
    add("grey16.png", "ok", None, "works: 16-bit grey kept as uint16", buf.getvalue())

    # EXIF orientation 6 ("rotate 90° clockwise to view"): stored 128 wide x 96 high with
    # the bright square at the stored top-left; upright it is 96 wide x 128 high, square top-right.
    exif = Image.Exif()
    exif[0x0112] = 6
    add("exif_orientation6.jpg", "ok", None, "works: rotated upright (96x128), marker top-right", _jpeg(g, exif=exif))

    frames = [Image.fromarray(g)] + [Image.fromarray(np.full_like(g, v)) for v in (40, 80)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    add("animated.gif", "ok", "only the first frame", "works: first of 3 frames, noted", buf.getvalue())
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:])
    add("multipage.tiff", "ok", "only the first frame", "works: first of 3 pages, noted", buf.getvalue())

    # DICOM. MONOCHROME1: stored 0 is white. Left half 0 → must come out bright.
    m1 = np.zeros((1, 64, 64), np.uint16)
    m1[:, :, 32:] = 4000
    _dicom(d / "mono1.dcm", m1, photometric="MONOCHROME1", bits_stored=12)
    add("mono1.dcm", "ok", None, "works: MONOCHROME1 inverted (stored 0 shown white)")
    ramp = np.linspace(0, 65535, 64).astype(np.uint16)[None, None, :].repeat(64, 1)
    _dicom(d / "mono2_16bit_window.dcm", ramp, window=(30000, 10000))
    add("mono2_16bit_window.dcm", "ok", None, "works: 16-bit MONOCHROME2, window 30000/10000 applied")
    mf = np.stack([m1[0], np.full((64, 64), 1000, np.uint16), np.full((64, 64), 3000, np.uint16)])
    _dicom(d / "multiframe.dcm", mf, bits_stored=12)
    add("multiframe.dcm", "ok", "only the first frame", "works: first of 3 frames, noted")
    _dicom(d / "no_pixeldata.dcm", None)
    add("no_pixeldata.dcm", "error", "no pixel data", "error: DICOM without PixelData")
    _dicom(d / "jpegls.dcm", m1, transfer_syntax=JPEGLSLossless, encapsulated=b"\xff\xd8\xff\xf7" + b"\x00" * 64 + b"\xff\xd9")
    add("jpegls.dcm", "error", "JPEG-LS Lossless", "error: cannot decode transfer syntax JPEG-LS Lossless (named)")
    buf = io.BytesIO()
    Image.fromarray(g).save(buf, "PNG")
    add("png_named.dcm", "ok", "not a DICOM file", "works: read as PNG, noted that it is not DICOM", buf.getvalue())
    return cases


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "data" / "bad"
    for c in build_corpus(out):
        sys.stdout.write(f"{c.file:28s} {c.expected:5s} {c.behaviour}\n")
    sys.stdout.write(f"written to {out}\n")
