"""Every decoder output is a valid image or an ImageLoadError, never another exception.

Property tests (Hypothesis) over ``imaging.image_io.load_image`` with the strategies of
``tests/fuzz_strategies.py`` (shared with ``benchmarks/fuzz_decoders.py``, which runs
thousands of cases and measures time and memory per file), and the regression
tests for the exact bug: a DICOM whose Rows/Columns disagree with its pixel data.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from PIL import Image

from imaging.checks import ImageLoadError, check_pixels
from imaging.image_io import load_image
from important_variables import CONFIG
from tests.fuzz_strategies import FuzzCase, arbitrary_files, check_case, dicom_files, mutated_files, seed_files

ROOT = Path(__file__).resolve().parents[1]
# pydicom and Pillow warn about every odd file the fuzzer makes; the outcome is what is checked.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# Per-file time and memory are the benchmark's job; here only the outcome counts, so no
# deadline (a loaded CI machine must not turn a slow case into a failure).
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _check(case: FuzzCase) -> None:
    if len(case.data) <= 8192:  # printed with the falsifying example only
        note(f"reproduce: load_image(base64.b64decode({base64.b64encode(case.data).decode()!r}), {case.name!r})")
    check_case(case)


@pytest.mark.slow
@settings(FUZZ, max_examples=150)
@given(arbitrary_files())
def test_arbitrary_bytes(case):
    _check(case)


@pytest.mark.slow
@settings(FUZZ, max_examples=250)
@given(mutated_files())
def test_mutated_real_files(case):
    _check(case)


@pytest.mark.slow
@settings(FUZZ, max_examples=300)
@given(dicom_files())
def test_dicom_header_and_pixel_data(case):
    _check(case)


def test_every_seed_file_decodes():
    """The unmutated seeds are valid files: a refusal here would make the fuzzing blind."""
    for name, data in seed_files().items():
        assert check_case(FuzzCase(name, data, "seed")) == "ok", name


# --------------------------------------------------------------------------- a DICOM whose header and pixel data disagree
def _dicom_rows_columns_disagree(rows: int = 16, cols: int = 16, data_side: int = 64) -> bytes:
    """A 16-bit DICOM that says rows x cols but holds a data_side x data_side image."""
    from tests.fuzz_strategies import dicom_bytes

    pixels = (np.arange(data_side * data_side, dtype=np.uint16) * 7).reshape(data_side, data_side)
    good = dicom_bytes(pixels, bits_stored=16)
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(good))
    ds.Rows, ds.Columns = rows, cols
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_dicom_rows_columns_disagreeing_with_pixel_data_refused():
    data = _dicom_rows_columns_disagree()
    with pytest.raises(ImageLoadError) as err:
        load_image(data, "mismatch.dcm")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("mismatch.dcm: "), msg
    assert "header and pixel data disagree" in msg and "512 bytes" in msg and "8,192" in msg, msg


def test_dicom_one_row_short_refused_not_sheared():
    """64x63 declared for 64x64 data: less than one extra frame, still a misread image."""
    with pytest.raises(ImageLoadError, match="header and pixel data disagree"):
        load_image(_dicom_rows_columns_disagree(64, 63), "short.dcm")


def test_genuine_multiframe_gives_first_frame_with_note():
    from tests.fuzz_strategies import dicom_bytes

    frames = np.vstack([np.full((20, 24), v, np.uint16) for v in (0, 1000, 3000)])
    frames[:20, :12] = 4000
    loaded = load_image(dicom_bytes(frames, frames=3), "three.dcm")
    assert loaded.pixels.shape == (20, 24) and loaded.note and "3 frames" in loaded.note
    assert loaded.pixels[:, :12].min() == 255 and loaded.pixels[:, 12:].max() == 0  # frame 0 only


@pytest.mark.slow
def test_predict_cli_bad_dicom_next_to_a_valid_file(tmp_path):
    """predict.py: the valid file gets its result, the bad DICOM a one-line error, JSON written, exit 1."""
    bad = tmp_path / "mismatch.dcm"
    bad.write_bytes(_dicom_rows_columns_disagree())
    good = tmp_path / "good.png"
    y, x = np.mgrid[0:96, 0:128]
    Image.fromarray(((x + y) * 255 // 224).astype(np.uint8)).save(good)
    out_json = tmp_path / "r.json"
    cmd = [sys.executable, str(ROOT / "predict.py"), str(bad), str(good), "--model", "encoder_decoder",
           "--json", str(out_json), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    records = {Path(r["file"]).name: r for r in json.loads(out_json.read_text())}
    assert records["good.png"]["error"] is None and records["good.png"]["width"] == 128
    err = records["mismatch.dcm"]["error"]
    assert err and "\n" not in err and "header and pixel data disagree" in err, err
    assert [line for line in proc.stderr.splitlines() if "mismatch.dcm" in line and line.startswith("error: ")]


# --------------------------------------------------------------------------- the decoder contract
@pytest.mark.parametrize(
    ("pixels", "needle"),
    [
        (np.zeros((4, 32, 32), np.uint8), "shape 4x32x32"),
        (np.zeros((2, 32, 32, 3), np.uint8), "shape 2x32x32x3"),
        (np.zeros((32, 32, 4), np.uint8), "shape 32x32x4"),
        (np.zeros((32, 32, 1), np.uint8), "shape 32x32x1"),
        (np.zeros(1024, np.uint8), "shape 1024"),
        (np.zeros((32, 32), np.float32), "type float32"),
        (np.zeros((32, 32), np.int16), "type int16"),
        (np.zeros((32, 32), bool), "type bool"),
        (np.zeros((8, 300), np.uint8), "too small"),
        ([[0] * 32] * 32, "no pixel array"),
    ],
)
def test_check_pixels_refuses(pixels, needle):
    with pytest.raises(ImageLoadError) as err:
        check_pixels(pixels, "x.png")
    assert str(err.value).startswith("x.png: ") and needle in str(err.value)


def test_check_pixels_refuses_too_many_pixels(monkeypatch):
    from imaging import checks

    monkeypatch.setattr(checks, "CONFIG", type("C", (), {"min_image_side": 16, "max_image_pixels": 1000})())
    with pytest.raises(ImageLoadError, match="over the limit of 1,000 pixels"):
        check_pixels(np.zeros((40, 40), np.uint8), "big.png")


@pytest.mark.parametrize("shape_dtype", [((20, 30), np.uint8), ((20, 30), np.uint16), ((20, 30, 3), np.uint8)])
def test_check_pixels_passes_valid_arrays_unchanged(shape_dtype):
    arr = np.zeros(*shape_dtype)
    assert check_pixels(arr, "ok.png") is arr


def test_float_tiff_with_nan_refused():
    arr = np.ones((20, 20), np.float32)
    arr[3, 3] = np.nan
    buf = io.BytesIO()
    Image.fromarray(arr, "F").save(buf, "TIFF")
    with pytest.raises(ImageLoadError, match="NaN or infinite"):
        load_image(buf.getvalue(), "nan.tiff")


def test_float_tiff_full_float32_range_stretched():
    arr = np.zeros((20, 20), np.float32)
    arr[0, 0], arr[0, 1] = -3e38, 3e38  # arr - min overflows float32
    buf = io.BytesIO()
    Image.fromarray(arr, "F").save(buf, "TIFF")
    px = load_image(buf.getvalue(), "wide.tiff").pixels
    assert px.dtype == np.uint16 and px[0, 0] == 0 and px[0, 1] == 65535 and 32000 < px[5, 5] < 33500


@pytest.mark.parametrize(("slope", "intercept"), [("NaN", "0"), ("1e300", "0"), ("1", "inf"), ("3e38", "3e38")])
def test_dicom_rescale_not_finite_refused(slope, intercept):
    from tests.fuzz_strategies import dicom_bytes

    data = dicom_bytes(np.full((20, 20), 60000, np.uint16), extra={"RescaleSlope": slope, "RescaleIntercept": intercept})
    with pytest.raises(ImageLoadError, match="rescale"):
        load_image(data, "rescale.dcm")


@pytest.mark.parametrize(("center", "width"), [("NaN", "100"), ("100", "0"), ("100", "-5"), ("1e300", "10")])
def test_dicom_unusable_window_ignored_with_note(center, width):
    from tests.fuzz_strategies import dicom_bytes

    ramp = np.tile(np.arange(20, dtype=np.uint16) * 100, (20, 1))
    loaded = load_image(dicom_bytes(ramp, extra={"WindowCenter": center, "WindowWidth": width}), "w.dcm")
    assert loaded.note and "display window is unusable" in loaded.note
    assert loaded.pixels[0, 0] == 0 and loaded.pixels[0, -1] == 255  # the image's own range


def test_file_over_the_upload_limit_refused_before_reading(tmp_path, monkeypatch):
    from imaging.image_io import read_image_file

    big = tmp_path / "big.png"
    with open(big, "wb") as fh:
        fh.truncate(CONFIG.max_upload_mb * 2**20 + 1)  # sparse: nothing written
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("the file was read"))
    with pytest.raises(ImageLoadError, match=f"over the {CONFIG.max_upload_mb} MB limit"):
        read_image_file(big)


# --------------------------------------------------------------------------- import rules
PACKAGES = ("cli", "evaluation", "fracture", "imaging", "inference", "training", "ui")


def _project_modules() -> dict[str, Path]:
    files = list(ROOT.glob("*.py")) + [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in files}


def test_no_module_imports_another_modules_private_names():
    modules = _project_modules()
    bad = []
    for mod, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module in modules and node.module != mod:
                bad += [f"{mod} imports {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not bad, bad
