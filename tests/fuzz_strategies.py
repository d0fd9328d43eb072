"""Hypothesis strategies that fuzz the image decoders; shared by the tests and the benchmark.

Every strategy draws a :class:`FuzzCase` (a file name, its bytes and a one-line
recipe saying how it was made) for :func:`check_case`, which runs ``load_image``
and says whether the outcome is allowed: a valid image or an ``ImageLoadError``.

- :func:`arbitrary_files`: random bytes, sometimes behind a format's magic number
  so that they reach that format's parser;
- :func:`mutated_files`: real files with bit flips, truncations, duplicated, zeroed
  or overwritten chunks (PNG chunk CRCs optionally recomputed so the damage gets
  past the CRC check into the decoder). The seeds are generated here (numpy,
  Pillow, pydicom: JPEG, PNG 8/16 bit, RGBA, palette, GIF, TIFF, BMP, DICOMs in
  several encodings), plus one FracAtlas X-ray when ``$FRACATLAS_DIR`` is set
  (read at run time, never stored);
- :func:`dicom_files`: DICOM files written byte by byte with arbitrary Rows,
  Columns, SamplesPerPixel, BitsAllocated/BitsStored/HighBit,
  PhotometricInterpretation, NumberOfFrames, PixelRepresentation, rescale and
  window values, Modality/VOI LUT sequences, palette tables, transfer syntax, and
  pixel data of the right or a wrong length.

Pixel payloads come from numpy's generator seeded by a drawn integer, not from
Hypothesis byte strings: that keeps generation fast at thousands of cases.
"""

from __future__ import annotations

import functools
import hashlib
import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

from imaging.checks import PIXEL_DTYPES, ImageLoadError
from important_variables import CONFIG, is_fracatlas_dir, resolve_data_dir

#: Largest pixel payload the DICOM strategy writes ("exact length" cases above it get a random length).
MAX_PAYLOAD = 1 << 18


@dataclass(frozen=True)
class FuzzCase:
    """name: file name passed to load_image (its extension matters); data: the file's bytes;
    recipe: how the case was made, one line, for reproducing it by hand."""

    name: str
    data: bytes
    recipe: str

    @property
    def kind(self) -> str:
        """Which strategy made it: "arbitrary", "mutated" or "dicom"."""
        return {"arbitrary": "arbitrary", "seed": "mutated", "DICOM": "dicom"}.get(self.recipe.split(" ", 1)[0], "other")

    def __repr__(self) -> str:  # Hypothesis prints this for a failing example: keep it short
        digest = hashlib.sha256(self.data).hexdigest()[:12]
        return f"FuzzCase({self.name!r}, {len(self.data)} bytes sha256 {digest}..., {self.recipe})"


# --------------------------------------------------------------------------- checking
def check_case(case: FuzzCase) -> str:
    """Run ``load_image`` on the case; return "ok" or "refused". Anything else raises.

    Allowed outcomes: an ImageLoadError whose message is one line starting with the
    file name, or pixels that pass the decoder contract (2-D or (H, W, 3), uint8 or
    uint16, within the size limits) and go through the model's preprocessing (the step
    that once failed) to finite float32 inputs in [0, 1]: (256, 256, 3) for the
    fixed-size models, (h, w) at the training scale for the native-scale ones.
    """
    from imaging.image_io import load_image
    from prediction import native_input, preprocess

    try:
        loaded = load_image(case.data, case.name)
    except ImageLoadError as exc:
        msg = str(exc)
        if "\n" in msg or not msg.startswith(f"{case.name}: "):
            raise AssertionError(f"error message is not one line naming the file: {msg!r}") from exc
        return "refused"
    px = loaded.pixels
    if not (px.ndim == 2 or (px.ndim == 3 and px.shape[2] == 3)) or px.dtype not in PIXEL_DTYPES:
        raise AssertionError(f"invalid pixels: shape {px.shape}, dtype {px.dtype}")
    if min(px.shape[:2]) < CONFIG.min_image_side or px.shape[0] * px.shape[1] > CONFIG.max_image_pixels:
        raise AssertionError(f"image size {px.shape} outside the limits")
    x = preprocess(px)
    if x.shape != (CONFIG.input_size, CONFIG.input_size, CONFIG.input_channels) or x.dtype != np.float32:
        raise AssertionError(f"model input {x.shape} {x.dtype}")
    if not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
        raise AssertionError("model input not finite or outside [0, 1]")
    g = native_input(px)  # the native-scale models' input: (h, w) at the training scale
    if g.ndim != 2 or g.dtype != np.float32 or min(g.shape) < 1 or max(g.shape) > CONFIG.native_long_side:
        raise AssertionError(f"native model input {g.shape} {g.dtype}")
    if not (np.isfinite(g).all() and g.min() >= 0.0 and g.max() <= 1.0):
        raise AssertionError("native model input not finite or outside [0, 1]")
    return "ok"


# --------------------------------------------------------------------------- seeds
def _gradient(h: int = 40, w: int = 52) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    img = ((x * 5 + y * 3) % 256).astype(np.uint8)
    img[8:20, 8:20] = 250
    return img


def _pil_bytes(img, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def dicom_bytes(pixels: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored: int | None = None,
                   signed: bool = False, frames: int = 1, transfer_syntax: str | None = None, extra: dict | None = None,
                   encapsulated: list[bytes] | None = None) -> bytes:
    """A DICOM file written by pydicom: pixels (frames*H, W[, 3]) stored as given."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["fuzz", photometric, str(pixels.shape)])
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    h, w = pixels.shape[0] // frames, pixels.shape[1]
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored = bits, bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(signed)
    if frames > 1:
        ds.NumberOfFrames = frames
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    if encapsulated is not None:
        ds.PixelData = encapsulate(encapsulated)
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = pixels.tobytes()
        ds["PixelData"].VR = "OW" if bits > 8 else "OB"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _rle_dicom() -> bytes:
    """An RLE Lossless DICOM (pydicom's own encoder, numpy only)."""
    import pydicom
    from pydicom.uid import RLELossless

    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(_gradient().astype(np.uint16) * 16, bits_stored=12)))
    ds.compress(RLELossless, encoding_plugin="pydicom")
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def seed_files() -> dict[str, bytes]:
    """Small valid files of every kind the decoders take, generated (and cached) in memory."""
    from PIL import Image
    from pydicom.uid import ExplicitVRBigEndian, JPEGBaseline8Bit

    g = _gradient()
    rgb = np.dstack([g, g[::-1], 255 - g])
    seeds = {
        "grey.jpg": _pil_bytes(Image.fromarray(g), "JPEG", quality=85),
        "rgb.jpg": _pil_bytes(Image.fromarray(rgb), "JPEG", quality=85),
        "progressive.jpg": _pil_bytes(Image.fromarray(g), "JPEG", quality=85, progressive=True),
        "grey.png": _pil_bytes(Image.fromarray(g), "PNG"),
        "grey16.png": _pil_bytes(Image.fromarray(g.astype(np.uint16) * 257), "PNG"),
        "rgba.png": _pil_bytes(Image.fromarray(np.dstack([rgb, g]), "RGBA"), "PNG"),
        "palette.png": _pil_bytes(Image.fromarray(g).convert("P"), "PNG"),
        "rgb.png": _pil_bytes(Image.fromarray(rgb), "PNG", optimize=True),
        "anim.gif": _pil_bytes(Image.fromarray(g), "GIF", save_all=True, append_images=[Image.fromarray(255 - g)]),
        "float.tiff": _pil_bytes(Image.fromarray(g.astype(np.float32) / 7.0, "F"), "TIFF"),
        "grey.bmp": _pil_bytes(Image.fromarray(g), "BMP"),
        "mono2_16.dcm": dicom_bytes(g.astype(np.uint16) * 16, bits_stored=12,
                                       extra={"WindowCenter": 2000, "WindowWidth": 3000}),
        "mono1_8.dcm": dicom_bytes(g, photometric="MONOCHROME1"),
        "signed_rescale.dcm": dicom_bytes(g.astype(np.int16) - 100, signed=True,
                                             extra={"RescaleSlope": 2, "RescaleIntercept": -1024}),
        "multiframe.dcm": dicom_bytes(np.vstack([g, 255 - g, g // 2]).astype(np.uint16), frames=3),
        "rgb.dcm": dicom_bytes(rgb, photometric="RGB"),
        "big_endian.dcm": dicom_bytes(g.astype(">u2"), transfer_syntax=ExplicitVRBigEndian),
        "jpeg_baseline.dcm": dicom_bytes(g, transfer_syntax=JPEGBaseline8Bit,
                                            encapsulated=[_pil_bytes(Image.fromarray(g), "JPEG", quality=90)]),
        "rle.dcm": _rle_dicom(),
    }
    real = _fracatlas_seed()
    if real is not None:
        seeds["fracatlas.jpg"] = real
    return seeds


def _fracatlas_seed() -> bytes | None:
    """One real FracAtlas X-ray (bytes in memory) when the data set is present, else None."""
    root = resolve_data_dir(None)
    if not is_fracatlas_dir(root):
        return None
    first = next(iter(sorted((Path(root) / "images" / "Fractured").glob("*.jpg"))), None)
    return first.read_bytes() if first is not None else None


# --------------------------------------------------------------------------- mutations
def _recrc_png(data: bytearray) -> bytearray:
    """Recompute every PNG chunk CRC, so damage inside a chunk reaches the decoder."""
    pos = 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 8 + length
        if end + 4 > len(data):
            break
        data[end : end + 4] = struct.pack(">I", zlib.crc32(bytes(data[pos + 4 : end])))
        pos = end + 4
    return data


@st.composite
def _mutation(draw, size: int) -> tuple[str, tuple[int, ...]]:
    """One mutation of a file of ``size`` bytes: (kind, positions)."""
    kind = draw(st.sampled_from(["flip", "truncate", "duplicate", "zero", "overwrite", "delete"]))
    last = max(size - 1, 0)
    a = draw(st.integers(0, last))
    if kind == "flip":
        return kind, (a, draw(st.integers(0, 7)))
    if kind == "truncate":
        return kind, (a,)
    n = draw(st.integers(1, 256))
    if kind == "duplicate":
        return kind, (a, n, draw(st.integers(0, size)))
    return kind, (a, n, draw(st.integers(0, 2**32 - 1)))


def apply_mutation(data: bytearray, kind: str, args: tuple[int, ...]) -> bytearray:
    """Apply one mutation (see :func:`_mutation`) in place; positions are clipped to the data."""
    if not data:
        return data
    a = min(args[0], len(data) - 1)
    if kind == "flip":
        data[a] ^= 1 << args[1]
    elif kind == "truncate":
        del data[a:]
    elif kind == "duplicate":
        chunk = bytes(data[a : a + args[1]])
        at = min(args[2], len(data))
        data[at:at] = chunk
    elif kind == "zero":
        data[a : a + args[1]] = bytes(len(data[a : a + args[1]]))
    elif kind == "overwrite":
        n = len(data[a : a + args[1]])
        data[a : a + n] = np.random.default_rng(args[2]).integers(0, 256, n, dtype=np.uint8).tobytes()
    elif kind == "delete":
        del data[a : a + args[1]]
    return data


@st.composite
def mutated_files(draw) -> FuzzCase:
    """A generated (or FracAtlas) seed file with 1-4 mutations."""
    seeds = seed_files()
    seed = draw(st.sampled_from(sorted(seeds)))
    data = bytearray(seeds[seed])
    steps = []
    for _ in range(draw(st.integers(1, 4))):
        kind, args = draw(_mutation(len(data)))
        apply_mutation(data, kind, args)
        steps.append(f"{kind}{args}")
    if seed.endswith(".png") and draw(st.booleans()):
        _recrc_png(data)
        steps.append("recrc")
    name = draw(st.sampled_from([seed, "upload" + Path(seed).suffix, "mislabelled.dcm"]))
    return FuzzCase(name, bytes(data), f"seed {seed}: {', '.join(steps)}")


# --------------------------------------------------------------------------- arbitrary bytes
_MAGIC = {
    "none": b"",
    "png": b"\x89PNG\r\n\x1a\n",
    "jpeg": b"\xff\xd8\xff\xe0",
    "dicom": b"\x00" * 128 + b"DICM",
    "gif": b"GIF89a",
    "tiff": b"II*\x00",
    "bmp": b"BM",
}


@st.composite
def arbitrary_files(draw) -> FuzzCase:
    """Random bytes (Hypothesis-drawn, up to 2 kB), sometimes behind a format's magic number."""
    magic = draw(st.sampled_from(sorted(_MAGIC)))
    body = draw(st.binary(max_size=2048))
    name = draw(st.sampled_from(["file.jpg", "file.png", "file.dcm", "file", "file.gif"]))
    return FuzzCase(name, _MAGIC[magic] + body, f"arbitrary bytes after magic {magic!r} ({len(body)} bytes)")


# --------------------------------------------------------------------------- DICOM from scratch
_TS = {
    "explicit_le": "1.2.840.10008.1.2.1",
    "implicit_le": "1.2.840.10008.1.2",
    "explicit_be": "1.2.840.10008.1.2.2",
    "deflated": "1.2.840.10008.1.2.1.99",
    "jpeg_baseline": "1.2.840.10008.1.2.4.50",
    "jpeg_lossless": "1.2.840.10008.1.2.4.70",
    "jpeg_ls": "1.2.840.10008.1.2.4.80",
    "jpeg2000": "1.2.840.10008.1.2.4.90",
    "rle": "1.2.840.10008.1.2.5",
    "bogus": "1.2.3.4",
}
_LONG_VRS = {b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"}
_PHOTOMETRIC = ["MONOCHROME2", "MONOCHROME1", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR", "ARGB", "CMYK", "",
                "monochrome2", "GARBAGE"]
_DS_VALUES = ["1", "0", "-1", "2", "0.5", "-1024", "4095", "1e30", "1e300", "-1e300", "NaN", "inf", "-inf", "abc", "",
              "1\\2", "3.4028235e38", "1e-45"]
_IS_VALUES = ["1", "2", "3", "0", "-1", "65535", "abc", "", "1\\2", "999999999"]


def _pad(value: bytes, fill: bytes = b" ") -> bytes:
    return value + fill if len(value) % 2 else value


def _element(group: int, elem: int, vr: bytes, value: bytes, *, explicit: bool = True, big: bool = False,
             undefined: bool = False) -> bytes:
    e = ">" if big else "<"
    tag = struct.pack(f"{e}HH", group, elem)
    length = 0xFFFFFFFF if undefined else len(value)
    if not explicit:
        return tag + struct.pack(f"{e}I", length) + value
    if vr in _LONG_VRS:
        return tag + vr + b"\0\0" + struct.pack(f"{e}I", length) + value
    return tag + vr + struct.pack(f"{e}H", min(length, 0xFFFF)) + value


def _us(v: int, big: bool) -> bytes:
    return struct.pack(">H" if big else "<H", v & 0xFFFF)


def _file_meta(ts_uid: str) -> bytes:
    """Preamble, "DICM" and the file meta group (always explicit VR little endian)."""
    elems = b"".join([
        _element(0x0002, 0x0001, b"OB", b"\x00\x01"),
        _element(0x0002, 0x0002, b"UI", _pad(b"1.2.840.10008.5.1.4.1.1.7", b"\0")),
        _element(0x0002, 0x0003, b"UI", _pad(b"1.2.3.4.5.6.7", b"\0")),
        _element(0x0002, 0x0010, b"UI", _pad(ts_uid.encode(), b"\0")),
    ])
    return b"\0" * 128 + b"DICM" + _element(0x0002, 0x0000, b"UL", struct.pack("<I", len(elems))) + elems


def _expected_bytes(rows, cols, spp, ba, frames) -> int:
    n = (rows or 0) * (cols or 0) * (spp or 1) * max(_int_or(frames, 1), 1)
    return (n + 7) // 8 if ba == 1 else n * max((ba or 16) // 8, 1)


def _int_or(text, default: int) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return default


_us_values = st.one_of(st.sampled_from([0, 1, 3, 8, 12, 16, 32, 64, 255, 65535]), st.integers(0, 65535))
_side = st.one_of(st.integers(0, 80), st.sampled_from([0, 1, 15, 16, 17, 64, 256, 4096, 7746, 65535]), st.integers(0, 65535))

#: Consistent Image Pixel headers the DICOM strategy starts from (before perturbing some fields).
_PROFILES = {
    "mono2_8": {"spp": 1, "photometric": "MONOCHROME2", "ba": 8, "bs": 8, "hb": 7, "pr": 0},
    "mono2_12of16": {"spp": 1, "photometric": "MONOCHROME2", "ba": 16, "bs": 12, "hb": 11, "pr": 0},
    "mono1_16": {"spp": 1, "photometric": "MONOCHROME1", "ba": 16, "bs": 16, "hb": 15, "pr": 0},
    "signed_16": {"spp": 1, "photometric": "MONOCHROME2", "ba": 16, "bs": 16, "hb": 15, "pr": 1},
    "mono2_32": {"spp": 1, "photometric": "MONOCHROME2", "ba": 32, "bs": 32, "hb": 31, "pr": 0},
    "mono2_1bit": {"spp": 1, "photometric": "MONOCHROME2", "ba": 1, "bs": 1, "hb": 0, "pr": 0},
    "rgb_8": {"spp": 3, "photometric": "RGB", "ba": 8, "bs": 8, "hb": 7, "pr": 0, "planar": 0},
    "rgb_16_planar": {"spp": 3, "photometric": "RGB", "ba": 16, "bs": 16, "hb": 15, "pr": 0, "planar": 1},
    "ybr_full_8": {"spp": 3, "photometric": "YBR_FULL", "ba": 8, "bs": 8, "hb": 7, "pr": 0, "planar": 0},
    "ybr_full_422": {"spp": 3, "photometric": "YBR_FULL_422", "ba": 8, "bs": 8, "hb": 7, "pr": 0, "planar": 0},
    "palette_8": {"spp": 1, "photometric": "PALETTE COLOR", "ba": 8, "bs": 8, "hb": 7, "pr": 0, "palette": True},
}
_NUMBER = st.one_of(st.integers(-5000, 70000), st.floats(-1e6, 1e6, allow_nan=False)).map(lambda v: f"{v:.6g}")

def _wild_values() -> dict[str, st.SearchStrategy]:
    """Arbitrary values per header field (None: the element is left out)."""
    return {
        "rows": _optional(_side),
        "cols": _optional(_side),
        "spp": _optional(st.one_of(st.sampled_from([1, 3, 0, 2, 4]), _us_values)),
        "photometric": _optional(st.sampled_from(_PHOTOMETRIC)),
        "planar": _optional(st.sampled_from([0, 1, 2, 65535])),
        "frames": _optional(st.one_of(st.sampled_from(_IS_VALUES), st.integers(-5, 100).map(str))),
        "ba": _optional(st.one_of(st.sampled_from([8, 16, 1, 32, 64, 12, 24, 0]), _us_values)),
        "bs": _optional(st.one_of(st.sampled_from([8, 12, 16, 1, 0, 17, 33]), _us_values)),
        "hb": _optional(st.one_of(st.sampled_from([7, 11, 15, 0, 16, 31]), _us_values)),
        "pr": _optional(st.sampled_from([0, 1, 2, 65535])),
        "wc": _optional(st.one_of(st.sampled_from(_DS_VALUES + ["40\\400"]), _NUMBER)),
        "ww": _optional(st.one_of(st.sampled_from(_DS_VALUES + ["400\\1500"]), _NUMBER)),
        "voi": _optional(st.sampled_from(["LINEAR", "SIGMOID", "LINEAR_EXACT", "", "BOGUS"])),
        "slope": _optional(st.one_of(st.sampled_from(_DS_VALUES), _NUMBER)),
        "intercept": _optional(st.one_of(st.sampled_from(_DS_VALUES), _NUMBER)),
        "palette": st.booleans(),
        "modality_lut": _optional(_lut()),
        "voi_lut": _optional(_lut()),
    }


def _lut() -> st.SearchStrategy[tuple[int, int, int, int]]:
    """A Modality/VOI LUT item: (entries, first mapped value, bits, LUTData length in bytes or -1 = as entries say)."""
    return st.tuples(st.sampled_from([0, 1, 16, 256, 4096, 65535]), st.sampled_from([0, 100, 65436, 65535]),
                     st.sampled_from([8, 12, 16, 0, 17, 32]), st.sampled_from([-1, -1, 0, 1, 511, 4096]))


def _optional(strategy):
    return st.one_of(st.none(), strategy)


def _rle_segment(plane: bytes) -> bytes:
    """PackBits (DICOM PS3.5 G.3.1) with literal runs only: valid, if not compact."""
    out = bytearray()
    for i in range(0, len(plane), 128):
        run = plane[i : i + 128]
        out.append(len(run) - 1)
        out += run
    return _pad(bytes(out), b"\0")


def _rle_frame(rows: int, cols: int, spp: int, ba: int, rng: np.random.Generator) -> bytes:
    """One RLE Lossless frame of random pixels: one segment per byte plane (most significant first)."""
    n = rows * cols
    segments = [_rle_segment(rng.integers(0, 256, n, dtype=np.uint8).tobytes()) for _ in range(spp * max(ba // 8, 1))]
    offsets, pos = [], 64
    for seg in segments:
        offsets.append(pos)
        pos += len(seg)
    header = struct.pack("<16I", len(segments), *offsets, *([0] * (15 - len(offsets))))
    return header + b"".join(segments)


@st.composite
def dicom_files(draw) -> FuzzCase:
    """A DICOM written element by element: a consistent header with 0-3 fields given arbitrary
    values, a rescale/window that may be absurd, and pixel data of the right or a wrong length."""
    ts_key = draw(st.sampled_from(["explicit_le"] * 4 + sorted(_TS)))
    # The data set's own encoding usually follows the transfer syntax, sometimes not (a damaged file).
    enc = draw(st.sampled_from(["match"] * 5 + ["explicit_le", "implicit_le", "explicit_be"]))
    if enc == "match":
        enc = {"implicit_le": "implicit_le", "explicit_be": "explicit_be"}.get(ts_key, "explicit_le")
    explicit, big = enc != "implicit_le", enc == "explicit_be"
    profile = draw(st.sampled_from(sorted(_PROFILES)))
    h = {k: None for k in _wild_values()} | {"palette": False} | dict(_PROFILES[profile])
    h["rows"] = draw(st.one_of(st.integers(16, 64), st.sampled_from([15, 16, 17])))
    h["cols"] = draw(st.one_of(st.integers(16, 64), st.sampled_from([15, 16, 17])))
    h["frames"] = draw(st.sampled_from([None, None, "1", "2", "3"]))
    if h["spp"] == 1 and draw(st.booleans()):
        h["wc"], h["ww"] = draw(_NUMBER), draw(_NUMBER)
    if h["spp"] == 1 and draw(st.booleans()):
        h["slope"], h["intercept"] = draw(_NUMBER), draw(_NUMBER)
    if h["spp"] == 1 and draw(st.integers(0, 3)) == 0:  # a lookup table instead of a linear function
        h[draw(st.sampled_from(["modality_lut", "voi_lut"]))] = (256, 0, 16, -1)
    base = dict(h)
    wild = _wild_values()
    changed = draw(st.lists(st.sampled_from(sorted(wild)), max_size=3, unique=True))
    for key in changed:
        h[key] = draw(wild[key])

    encapsulated = ts_key in ("jpeg_baseline", "jpeg_lossless", "jpeg_ls", "jpeg2000", "rle")
    payload_seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(payload_seed)
    if encapsulated:
        payload, length_kind = _encapsulated_payload(draw, ts_key, base, rng)
    else:
        exact = _expected_bytes(h["rows"], h["cols"], h["spp"], h["ba"], h["frames"])
        exact_base = _expected_bytes(base["rows"], base["cols"], base["spp"], base["ba"], base["frames"])
        length_kind = draw(st.sampled_from(["exact"] * 5 + ["exact before changes", "exact+1", "exact-1", "random", "empty"]
                                           + ["whole extra frames", "other geometry"] * 2))
        if length_kind == "other geometry":  # Rows/Columns disagree with the pixel data
            r2, c2 = draw(st.integers(1, 128)), draw(st.integers(1, 128))
            length = _expected_bytes(r2, c2, h["spp"], h["ba"], h["frames"])
        elif length_kind == "whole extra frames":  # pydicom would cut these into extra frames
            length = exact * draw(st.integers(2, 20))
        else:
            length = {"exact": exact, "exact before changes": exact_base, "exact+1": exact + 1, "exact-1": exact - 1,
                      "one more frame": 2 * exact, "empty": 0}.get(length_kind, draw(st.integers(0, 4096)))
        if not 0 <= length <= MAX_PAYLOAD:
            length_kind, length = f"{length_kind} too long, random", draw(st.integers(0, 4096))
        payload = rng.integers(0, 256, length, dtype=np.uint8).tobytes()

    meta = _file_meta(_TS[ts_key])
    data = meta + _dataset(h, payload, explicit, big, encapsulated)
    if ts_key == "deflated" and enc == "explicit_le" and draw(st.booleans()):
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        data = meta + comp.compress(data[len(meta) :]) + comp.flush()
    shown = {k: h[k] for k in changed}
    recipe = (f"DICOM ts={ts_key} encoding={enc} profile={profile} {base['rows']}x{base['cols']} frames={base['frames']} "
              f"changed={shown} pixel data {length_kind} ({len(payload)} bytes, payload seed {payload_seed})")
    return FuzzCase(draw(st.sampled_from(["fuzz.dcm", "fuzz"])), data, recipe)


def _encapsulated_payload(draw, ts_key: str, base: dict, rng: np.random.Generator) -> tuple[bytes, str]:
    """A compressed frame for the base header (JPEG from Pillow, RLE by hand) or random bytes."""
    kind = draw(st.sampled_from(["valid", "valid", "random"]))
    rows, cols = base["rows"], base["cols"]
    if kind == "valid" and ts_key == "rle" and base["ba"] in (8, 16, 32) and base["photometric"] != "YBR_FULL_422":
        return _rle_frame(rows, cols, base["spp"], base["ba"], rng), "valid RLE frame"
    if kind == "valid" and ts_key == "jpeg_baseline" and base["ba"] == 8 and base["spp"] in (1, 3):
        from PIL import Image

        arr = rng.integers(0, 256, (rows, cols, base["spp"]) if base["spp"] == 3 else (rows, cols), dtype=np.uint8)
        return _pil_bytes(Image.fromarray(arr), "JPEG", quality=80), "valid JPEG frame"
    return rng.integers(0, 256, draw(st.integers(0, 4096)), dtype=np.uint8).tobytes(), "random bytes"


def _lut_sequence(elem: int, lut: tuple[int, int, int, int], explicit: bool, big: bool) -> bytes:
    """(0028,elem) sequence of one LUT item: LUTDescriptor, then LUTData (ramp, or a wrong length)."""
    entries, first, bits, data_len = lut
    e = ">" if big else "<"
    n = (entries or 65536) * 2 if data_len < 0 else data_len
    values = (np.arange(n // 2, dtype=np.uint32) * 13 % 65536).astype(f"{e}u2").tobytes() + b"\0" * (n % 2)
    item = (_element(0x0028, 0x3002, b"US", _us(entries, big) + _us(first, big) + _us(bits, big), explicit=explicit, big=big)
            + _element(0x0028, 0x3006, b"OW", values, explicit=explicit, big=big))
    body = struct.pack(f"{e}HHI", 0xFFFE, 0xE000, len(item)) + item + struct.pack(f"{e}HHI", 0xFFFE, 0xE0DD, 0)
    return _element(0x0028, elem, b"SQ", body, explicit=explicit, big=big, undefined=True)


def _dataset(h: dict, payload: bytes, explicit: bool, big: bool, encapsulated: bool) -> bytes:
    """The data set's elements in tag order, encoded as asked (values as drawn, however odd)."""

    def el(group, elem, vr, value):
        return _element(group, elem, vr, value, explicit=explicit, big=big)

    def text(value: str) -> bytes:
        return _pad(value.encode("latin-1"))

    out = [
        el(0x0008, 0x0016, b"UI", _pad(b"1.2.840.10008.5.1.4.1.1.7", b"\0")),
        el(0x0008, 0x0018, b"UI", _pad(b"1.2.3.4.5.6.7", b"\0")),
        el(0x0008, 0x0060, b"CS", text("OT")),
    ]
    if h["spp"] is not None:
        out.append(el(0x0028, 0x0002, b"US", _us(h["spp"], big)))
    if h["photometric"] is not None:
        out.append(el(0x0028, 0x0004, b"CS", text(h["photometric"])))
    if h["planar"] is not None:
        out.append(el(0x0028, 0x0006, b"US", _us(h["planar"], big)))
    if h["frames"] is not None:
        out.append(el(0x0028, 0x0008, b"IS", text(h["frames"])))
    for elem, key in ((0x0010, "rows"), (0x0011, "cols"), (0x0100, "ba"), (0x0101, "bs"), (0x0102, "hb"), (0x0103, "pr")):
        if h[key] is not None:
            out.append(el(0x0028, elem, b"US", _us(h[key], big)))
    if h["palette"]:  # PALETTE COLOR lookup tables: 256 entries, 8 bits, random contents
        lut = np.random.default_rng(len(payload)).integers(0, 256, 256, dtype=np.uint16)
        lut_bytes = lut.astype(">u2" if big else "<u2").tobytes()
        for elem in (0x1101, 0x1102, 0x1103):
            out.append(el(0x0028, elem, b"US", _us(256, big) + _us(0, big) + _us(8, big)))
        for elem in (0x1201, 0x1202, 0x1203):
            out.append(el(0x0028, elem, b"OW", lut_bytes))
    for elem, key in ((0x1050, "wc"), (0x1051, "ww"), (0x1052, "intercept"), (0x1053, "slope"), (0x1056, "voi")):
        if h[key] is not None:
            out.append(el(0x0028, elem, b"CS" if key == "voi" else b"DS", text(h[key])))
    for elem, key in ((0x3000, "modality_lut"), (0x3010, "voi_lut")):
        if h[key] is not None:
            out.append(_lut_sequence(elem, h[key], explicit, big))
    # Palette data elements (0028,12xx) come after the window/rescale ones (0028,105x) in tag order.
    out.sort(key=lambda b: struct.unpack(">HH" if big else "<HH", b[:4]))
    if encapsulated:
        e = ">" if big else "<"
        item = struct.pack(f"{e}HHI", 0xFFFE, 0xE000, 0)  # empty basic offset table
        frag = _pad(payload, b"\0")
        item += struct.pack(f"{e}HHI", 0xFFFE, 0xE000, len(frag)) + frag
        item += struct.pack(f"{e}HHI", 0xFFFE, 0xE0DD, 0)
        out.append(_element(0x7FE0, 0x0010, b"OB", item, explicit=explicit, big=big, undefined=True))
    else:
        out.append(el(0x7FE0, 0x0010, b"OW", payload))
    return b"".join(out)
