"""The batch CLI predict.py (in-process via main(), plus one real process)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

import predict
from important_variables import CONFIG, DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def xray_folder(tmp_path, real_xray_paths):
    """3 real X-rays (one in a sub-folder) + 1 broken file + 1 file that is not an image type."""
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    for p in real_xray_paths[:2]:
        shutil.copy(p, d / p.name)
    shutil.copy(real_xray_paths[3], d / "sub" / real_xray_paths[3].name)
    (d / "broken.jpg").write_bytes(real_xray_paths[4].read_bytes()[:3000])
    (d / "notes.txt").write_text("ignored: not an image extension")
    return d


def test_folder_three_xrays_one_broken(xray_folder, tmp_path, capsys):
    out, js, cs = tmp_path / "out", tmp_path / "r.json", tmp_path / "r.csv"
    rc = predict.main([str(xray_folder), "--out", str(out), "--json", str(js), "--csv", str(cs), "--no-progress"])
    assert rc == 1
    records = json.loads(js.read_text())
    assert len(records) == 4
    ok = [r for r in records if r["error"] is None]
    bad = [r for r in records if r["error"] is not None]
    assert len(ok) == 3 and len(bad) == 1
    assert bad[0]["file"].endswith("broken.jpg") and "truncated" in bad[0]["error"]
    assert "broken.jpg" in capsys.readouterr().err
    from create_segmentation_model import read_manifest

    entry = read_manifest()["models"][DEFAULT_MODEL]  # no --model: the default
    manifest_threshold = entry["threshold"]
    rule = entry.get("findings") or {}
    # A max-scored finding peaks at or above the threshold; a mean-scored one is at least its grow level.
    floor = manifest_threshold * (min(1.0, rule.get("low_ratio", 1.0)) if rule.get("score") == "mean" else 1.0)
    for r in ok:
        assert r["model"] == DEFAULT_MODEL and r["threshold"] == pytest.approx(manifest_threshold)
        assert set(r) >= {"file", "model", "width", "height", "fracture_score", "findings", "error"}
        stem = Path(r["file"]).stem
        ann = cv2.imread(str(out / f"{stem}_annotated.png"))
        mask = cv2.imread(str(out / f"{stem}_mask.png"), cv2.IMREAD_UNCHANGED)
        assert ann.shape == (r["height"], r["width"], 3)
        assert mask.shape == (r["height"], r["width"])
        for f in r["findings"]:
            x0, y0, x1, y1 = f["box"]
            assert 0 <= x0 < x1 <= r["width"] and 0 <= y0 < y1 <= r["height"]
            assert floor - 1e-4 <= f["score"] <= r["fracture_score"]
    assert not list(out.glob("broken*"))
    rows = list(csv.DictReader(cs.open()))
    assert len(rows) == 4 and [r["file"] for r in rows] == [r["file"] for r in records]


def test_all_good_exit_0_threshold_and_stdout(real_xray_paths, capsys):
    rc = predict.main([str(real_xray_paths[0]), "--model", "encoder_decoder", "--threshold", "0.3", "--no-progress"])
    assert rc == 0
    records = json.loads(capsys.readouterr().out)  # no --out/--json/--csv: JSON on stdout
    assert len(records) == 1 and records[0]["threshold"] == 0.3 and records[0]["model"] == "encoder_decoder"


@pytest.mark.parametrize(
    "argv",
    [["/nonexistent/x.jpg"], ["{img}", "--threshold", "1.5"], ["{img}", "--model", "resnet"], ["{empty}"]],
    ids=["missing-input", "bad-threshold", "unknown-model", "no-images"],
)
def test_usage_errors_exit_2(argv, real_xray_paths, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = [a.format(img=real_xray_paths[0], empty=tmp_path / "empty") for a in argv]
    try:
        code = predict.main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == 2
    assert capsys.readouterr().err.strip()


def _copy_model(tmp_path: Path, name: str, flip: int | None = None, truncate: bool = False) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    dst = d / CONFIG.model_path(name).name
    data = bytearray(CONFIG.model_path(name).read_bytes())
    if flip is not None:
        data[flip] ^= 0x01
    if truncate:
        data = data[: len(data) // 2]
    dst.write_bytes(bytes(data))
    shutil.copy(CONFIG.manifest_path, d / "manifest.json")
    return dst


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_modified_model_file_refused_exit_2(how, tmp_path, real_xray_paths):
    """A one-byte change (or a cut) in a copy of the weights: refused, exit 2, clear message."""
    size = CONFIG.model_path("unet").stat().st_size
    model = _copy_model(tmp_path, "unet", flip=size // 2 if how == "flip" else None, truncate=how == "truncate")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "predict.py"), str(real_xray_paths[0]), "--model-file", str(model), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert "unet.keras" in proc.stderr and "does not match the manifest" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_intact_copy_loads_and_unlisted_file_refused(tmp_path, real_xray_paths, capsys):
    model = _copy_model(tmp_path, "encoder_decoder")
    assert predict.main([str(real_xray_paths[0]), "--model-file", str(model), "--json", str(tmp_path / "a.json"),
                         "--no-progress"]) == 0
    renamed = model.with_name("mine.keras")
    model.rename(renamed)
    assert predict.main([str(real_xray_paths[0]), "--model-file", str(renamed), "--no-progress"]) == 2
    assert "refusing unverified weights" in capsys.readouterr().err
    assert predict.main([str(real_xray_paths[0]), "--model-file", str(renamed), "--allow-unverified",
                         "--json", str(tmp_path / "b.json"), "--no-progress"]) == 0


def test_output_stems_disambiguate():
    assert predict.output_stems([Path("a/x.jpg"), Path("b/x.jpg"), Path("y.png"), Path("c/x.dcm")]) == ["x", "x-2", "y", "x-3"]


def test_a_file_failing_in_the_model_costs_only_that_file(tmp_path):
    """An exception while handling one file (here: in the forward pass) becomes that
    file's one-line error; the other files get their results and their PNGs."""
    import cv2
    import numpy as np

    class FailsOnBlack:
        def forward(self, batch):
            if (batch.reshape(len(batch), -1).max(axis=1) == 0).any():
                raise RuntimeError("simulated model failure")
            return np.asarray(batch, np.float32)[..., 0]

    good = np.zeros((300, 280), np.uint8)
    good[100:150, 80:200] = 255
    files = [tmp_path / "black.png", tmp_path / "good.png", tmp_path / "good2.png"]
    cv2.imwrite(str(files[0]), np.zeros((300, 280), np.uint8))
    cv2.imwrite(str(files[1]), good)
    cv2.imwrite(str(files[2]), good)
    out = tmp_path / "out"
    out.mkdir()
    records = predict.run(files, FailsOnBlack(), "unet", 0.5, out, batch_size=8, progress=False)
    assert [r["file"] for r in records] == [str(f) for f in files]
    assert records[0]["error"].startswith(f"{files[0]}: analysis failed (RuntimeError") and records[0]["findings"] == []
    assert records[1]["error"] is None and len(records[1]["findings"]) == 1 and records[2]["error"] is None
    assert sorted(p.name for p in out.iterdir()) == ["good2_annotated.png", "good2_mask.png", "good_annotated.png", "good_mask.png"]


class SquareModel:
    """Stand-in forward pass: a 24x24 square of score ``peak`` in the middle of a 256x256 map."""

    def __init__(self, peak: float):
        self.peak = peak

    def forward(self, batch):
        import numpy as np

        prob = np.full((len(batch), 256, 256), 0.02, np.float32)
        prob[:, 116:140, 116:140] = self.peak
        return prob


def test_borderline_review_box_is_drawn_in_the_png_and_given_in_the_json(tmp_path):
    """The app's dashed review box, in predict.py's annotated PNG, and its spot in the JSON."""
    import numpy as np

    from imaging.rendering import REVIEW_COLOR

    img = tmp_path / "near.png"
    cv2.imwrite(str(img), np.full((300, 300), 90, np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    entry = {"threshold": 0.8, "borderline_margin": 0.1}
    rec = predict.run([img], SquareModel(0.75), "unet", 0.8, out, progress=False, entry=entry)[0]
    assert rec["status"] == "borderline" and rec["findings"] == []
    x0, y0, x1, y1 = rec["review_box"]  # the square, 256-px map → 300-px image: 136..164
    assert 130 <= x0 <= 140 and 160 <= x1 <= 170 and 130 <= y0 <= 140 and 160 <= y1 <= 170
    assert rec["reading"].startswith("Borderline: no region reached threshold 0.80")
    ann = cv2.cvtColor(cv2.imread(str(out / "near_annotated.png")), cv2.COLOR_BGR2RGB)
    amber = np.all(ann == REVIEW_COLOR, axis=-1)
    ys, xs = np.nonzero(amber)
    assert amber.sum() > 40 and xs.min() < x0 and xs.max() >= x1 - 1 and ys.min() < y0  # drawn around the spot
    # At least 12 % of the long side across, so it is not a speck on screen, and labelled.
    assert xs.max() - xs.min() >= 0.12 * 300 and ys.max() - ys.min() >= 0.12 * 300
    # Far below the threshold: no finding, no box, and the words say what the model misses.
    rec = predict.run([img], SquareModel(0.3), "unet", 0.8, out, progress=False, entry=entry)[0]
    assert rec["status"] == "no_finding" and rec["review_box"] is None
    assert rec["reading"].startswith("No finding at threshold 0.80") and "does not rule a fracture out" in rec["reading"]
    ann = cv2.cvtColor(cv2.imread(str(out / "near_annotated.png")), cv2.COLOR_BGR2RGB)
    assert not np.all(ann == REVIEW_COLOR, axis=-1).any()


def test_folder_mode_reads_bmp_webp_tiff_gif_and_names_what_it_skips(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    d = tmp_path / "mixed"
    d.mkdir()
    gray = np.zeros((120, 100), np.uint8)
    gray[40:80, 30:70] = 200
    for ext, fmt in ((".bmp", "BMP"), (".webp", "WEBP"), (".tif", "TIFF"), (".tiff", "TIFF"), (".gif", "GIF"),
                     (".png", "PNG")):
        Image.fromarray(gray).save(d / f"x{ext}", format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    (d / "notes.txt").write_text("not an image")
    (d / "table.csv").write_text("a,b")
    (d / "README").write_text("no extension")
    lines = []
    files = predict.collect_inputs([str(d)], on_skipped=lines.append)
    assert sorted(p.suffix for p in files) == [".bmp", ".gif", ".png", ".tif", ".tiff", ".webp"]
    assert lines == ["skipped 3 files in the folders that are not of a type it reads (.csv 1, .txt 1, no extension 1); "
                     "name a file on the command line to try it anyway"]
    records = predict.run(files, SquareModel(0.95), "unet", 0.5, None, progress=False)
    assert all(r["error"] is None and len(r["findings"]) == 1 for r in records), records
    # Through main(): the one skip line on stderr, every image read.
    js = tmp_path / "r.json"
    assert predict.main([str(d), "--json", str(js), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "predict.py: skipped 3 files" in err and len([x for x in err.splitlines() if "skipped" in x]) == 1
    assert len(json.loads(js.read_text())) == 6
