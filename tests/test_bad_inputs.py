"""The generated bad-input corpus through imaging.image_io.load_image and predict.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imaging.image_io import ImageLoadError, load_image, read_image_file
from tests.make_bad_corpus import build_corpus

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    return d, {c.file: c for c in build_corpus(d)}


def _load(d: Path, file: str):
    return load_image((d / file).read_bytes(), file)


def test_corpus_covers_the_issue_list(corpus):
    _, cases = corpus
    assert len(cases) == 19
    assert (corpus[0] / "bomb_30000x30000.png").stat().st_size < 200_000  # cheap on disk


def test_every_case_behaves_as_expected(corpus):
    d, cases = corpus
    for c in cases.values():
        if c.expected == "error":
            with pytest.raises(ImageLoadError) as err:
                _load(d, c.file)
            msg = str(err.value)
            assert "\n" not in msg, c.file
            assert msg.startswith(f"{c.file}: "), msg  # names the file
            assert c.match in msg, (c.file, msg)  # and the cause
        else:
            loaded = _load(d, c.file)
            assert loaded.pixels.dtype in (np.uint8, np.uint16), c.file
            assert min(loaded.pixels.shape[:2]) >= 16, c.file
            if c.match is None:
                assert loaded.note is None, (c.file, loaded.note)
            else:
                assert loaded.note and c.match in loaded.note, (c.file, loaded.note)


def test_bomb_refused_before_decoding(corpus, monkeypatch):
    d, _ = corpus
    import PIL.ImageFile

    def no_decoding(*a, **k):  # any pixel decoding would be a failure
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageLoadError, match="60,000,000 pixels; refused before decoding"):
        _load(d, "bomb_30000x30000.png")


def test_colour_modes_give_the_right_grey(corpus):
    from imaging.image_io import to_model_gray
    from tests.make_bad_corpus import _gradient, grey16

    d, _ = corpus
    ref = _gradient().astype(np.float32) / 255.0
    for file, tol in (("rgba.png", 1 / 255), ("palette.png", 2 / 255), ("cmyk.jpg", 6 / 255), ("animated.gif", 2 / 255)):
        gray = to_model_gray(_load(d, file).pixels)
        assert gray.shape == ref.shape
        assert np.abs(gray - ref).mean() <= tol, file
    g16 = _load(d, "grey16.png").pixels
    assert g16.dtype == np.uint16 and np.array_equal(g16, grey16())  # all 16 bits kept


def test_exif_orientation_rotated_upright(corpus):
    d, _ = corpus
    px = _load(d, "exif_orientation6.jpg").pixels
    assert px.shape[:2] == (128, 96)  # stored 128x96 (w x h) → upright 96 wide, 128 high
    # Stored top-left square (rows 10-30, cols 10-30) → upright top-right corner.
    assert px[10:30, 96 - 30 : 96 - 10].mean() > 240
    assert px[10:30, 10:30].mean() < 120


def test_exif_finding_box_upright(corpus):
    from prediction import predict_image
    from tests.test_prediction import BrightnessPredictor

    d, _ = corpus
    px = _load(d, "exif_orientation6.jpg").pixels
    res = predict_image(BrightnessPredictor(), px, 0.95)
    x0, y0, x1, y1 = res.findings[0].box
    assert 60 <= x0 and x1 <= 96 and y0 <= 14 and y1 <= 34  # the top-right square


def test_dicom_photometric_and_window(corpus):
    d, _ = corpus
    m1 = _load(d, "mono1.dcm").pixels
    assert m1[:, :32].min() == 255 and m1[:, 32:].max() == 0  # stored 0 shown white
    w = _load(d, "mono2_16bit_window.dcm").pixels[0].astype(int)
    ramp = np.linspace(0, 65535, 64)
    assert (w[ramp < 25000] == 0).all() and (w[ramp > 35000] == 255).all()
    mid = (ramp > 27000) & (ramp < 33000)
    assert np.all(np.diff(w[mid]) > 0)  # linear inside the window
    mf = _load(d, "multiframe.dcm")
    assert mf.pixels[:, :32].max() == 0 and mf.pixels[:, 32:].min() == 255  # frame 0, not 1 or 2


def test_real_truncated_fracatlas_jpegs(data_dir):
    """The 59 truncated JPEGs of the release: refused with a one-line "truncated" error.

    Candidates are the files without the end-of-image marker in their last 512 bytes
    (87); 28 of them only lack the marker after complete pixel data and decode fine.
    """
    refused = []
    for p in sorted((data_dir / "images" / "Non_fractured").glob("*.jpg")):
        with open(p, "rb") as fh:
            fh.seek(-512, os.SEEK_END)
            if b"\xff\xd9" in fh.read():
                continue
        try:
            loaded = read_image_file(p)
        except ImageLoadError as exc:
            msg = str(exc)
            assert msg.startswith(f"{p.name}: ") and "truncated" in msg and "\n" not in msg, msg
            refused.append(p.name)
        else:
            assert loaded.pixels.shape[:2] in ((454, 373), (373, 454)), p.name
    assert len(refused) == 59
    assert "IMG0004028.jpg" in refused


@pytest.mark.slow
def test_predict_cli_on_corpus(corpus, real_xray_paths, tmp_path):
    """predict.py: an error object per bad file, the good ones processed, exit code 1."""
    d, cases = corpus
    real = real_xray_paths[0]
    out_json = tmp_path / "r.json"
    # The corpus folder is recursed (only .jpg .jpeg .png .dcm); the GIF/TIFF are named.
    cmd = [sys.executable, str(ROOT / "predict.py"), str(d), str(d / "animated.gif"), str(d / "multipage.tiff"), str(real),
           "--model", "encoder_decoder", "--json", str(out_json), "--out", str(tmp_path / "png"), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 1, proc.stderr[-2000:]
    records = {Path(r["file"]).name: r for r in json.loads(out_json.read_text())}
    assert set(records) == set(cases) | {real.name}
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    for c in cases.values():
        r = records[c.file]
        if c.expected == "error":
            assert r["error"] and c.match in r["error"] and "\n" not in r["error"], r
            assert r["findings"] == [] and r["width"] is None
            assert any(c.file in line for line in errors), c.file
        else:
            assert r["error"] is None and r["width"] >= 16, r
            assert (tmp_path / "png" / f"{Path(c.file).stem}_annotated.png").is_file()
    assert records[real.name]["error"] is None
    assert len(errors) == sum(c.expected == "error" for c in cases.values())
