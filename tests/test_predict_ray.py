"""predict.py --engine ray (batch_ray) on a local 2-CPU Ray: the local engine's records, PNGs and
probability maps, a corrupt file's one error line in the summary, a re-run that skips finished
files. Without Ray: the resume rule, the one-line errors.

The Ray tests share one Ray for the module (its start-up costs seconds) and skip when Ray is
not installed, except under CI (REQUIRE_RAY=1, set by .ci/run), where they fail instead.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import predict
from cli import batch_ray
from important_variables import DEFAULT_MODEL
from inference.manifest import ModelEntry, ModelIntegrityError, sha256_file

pytestmark = pytest.mark.slow  # starts a local Ray cluster

N_GOOD = 6  # the real X-rays of the conftest's real_xray_paths


def _require_ray():
    try:
        import ray.data  # noqa: F401
    except ImportError as exc:
        reason = f"Ray is not installed ({exc}; pip install -r requirements-ray.txt)"
        if os.environ.get("REQUIRE_RAY") == "1":
            pytest.fail(f"Ray is required under CI (REQUIRE_RAY=1): {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray with 2 CPUs for the whole module (the engine reuses a running Ray)."""
    _require_ray()
    import ray

    batch_ray.connect(num_cpus=2, progress=False)
    yield ray
    ray.shutdown()


def _main(argv: list[str]) -> tuple[int, str]:
    """predict.main in this process; (exit status, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = predict.main(argv)
    return rc, err.getvalue()


@pytest.fixture(scope="module")
def archive(tmp_path_factory, real_xray_paths):
    """6 real X-rays (one in a sub-folder) + one truncated JPEG."""
    d = tmp_path_factory.mktemp("archive")
    (d / "sub").mkdir()
    for k, p in enumerate(real_xray_paths[:N_GOOD]):
        shutil.copy(p, (d / "sub" if k == 2 else d) / p.name)
    (d / "broken.jpg").write_bytes(real_xray_paths[0].read_bytes()[:3000])
    return d


@pytest.fixture(scope="module")
def both_engines(local_ray, archive, tmp_path_factory):
    """The same command through the local engine and through Ray; their outputs and stderr."""
    out = tmp_path_factory.mktemp("out")
    runs = {}
    for engine in ("local", "ray"):
        rc, err = _main([str(archive), "--out", str(out / engine), "--json", str(out / f"{engine}.json"), "--no-progress",
                         "--engine", engine])
        runs[engine] = {"rc": rc, "err": err, "out": out / engine, "records": json.loads((out / f"{engine}.json").read_text())}
    return runs


def test_ray_gives_the_local_engines_records_and_pngs(both_engines):
    local, ray_ = both_engines["local"], both_engines["ray"]
    assert local["rc"] == ray_["rc"] == 1  # one file failed
    assert ray_["records"] == local["records"]  # findings, scores, readings, errors, in input order
    assert len(local["records"]) == N_GOOD + 1
    pngs = sorted(p.name for p in local["out"].iterdir())
    assert len(pngs) == 2 * N_GOOD
    assert sorted(p.name for p in ray_["out"].iterdir()) == sorted([*pngs, batch_ray.SUMMARY_NAME])
    for name in pngs:  # the same pixels, the same encoding
        assert (ray_["out"] / name).read_bytes() == (local["out"] / name).read_bytes(), name


def test_corrupt_file_is_one_error_line_in_the_summary(both_engines, shipped_model_path):
    ray_ = both_engines["ray"]
    lines = [json.loads(t) for t in (ray_["out"] / batch_ray.SUMMARY_NAME).read_text().splitlines()]
    assert [line["file"] for line in lines] == [r["file"] for r in ray_["records"]]
    bad = [line for line in lines if line["error"] is not None]
    assert len(bad) == 1 and bad[0]["file"].endswith("broken.jpg")
    local_bad = next(r for r in both_engines["local"]["records"] if r["error"] is not None)
    assert bad[0]["error"] == local_bad["error"] and "truncated" in bad[0]["error"]
    assert f"error: {bad[0]['error']}" in ray_["err"]
    assert "1 failed" in ray_["err"] and "Traceback" not in ray_["err"]
    sha = sha256_file(shipped_model_path(DEFAULT_MODEL))  # no --model: the default
    assert {line["model_sha256"] for line in lines} == {sha}
    assert all(line["output_stem"] for line in lines if line["error"] is None)


def test_second_run_skips_finished_files(both_engines, archive, tmp_path):
    """A copy of the first run's output folder, one PNG deleted: that file and the broken one run
    again, the other five are skipped (their PNGs untouched); the summary keeps one line per file."""
    out = tmp_path / "again"
    shutil.copytree(both_engines["ray"]["out"], out)
    lines = [json.loads(t) for t in (out / batch_ray.SUMMARY_NAME).read_text().splitlines()]
    redo = next(line for line in lines if line["error"] is None)["output_stem"]
    lost = out / f"{redo}_mask.png"
    lost.unlink()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png") if not p.name.startswith(f"{redo}_")}
    rc, err = _main([str(archive), "--out", str(out), "--json", str(tmp_path / "again.json"), "--no-progress", "--engine", "ray"])
    assert rc == 1
    assert f"ray engine: 1 done, 1 failed, {N_GOOD - 1} skipped" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png") if p.name in before} == before
    assert lost.read_bytes() == (both_engines["local"]["out"] / lost.name).read_bytes()
    assert json.loads((tmp_path / "again.json").read_text()) == both_engines["local"]["records"]
    again = (out / batch_ray.SUMMARY_NAME).read_text().splitlines()
    assert len(again) == N_GOOD + 1 and sum('"error": null' not in t for t in again) == 1


def test_probability_maps_match_the_local_engine(local_ray, real_xray_paths):
    """Through two actors (blocks of two files), each map equals the local engine's."""
    from imaging.image_io import read_image_file
    from prediction import Source, iter_predictions

    files = real_xray_paths[:N_GOOD]
    choice = predict.resolve_model("unet", None, False)
    model = batch_ray.BatchModel(choice.name, str(choice.path.resolve()), choice.sha256, choice.entry)
    items = [{"index": i, "file": str(f), "path": str(f), "stem": f.stem} for i, f in enumerate(files)]
    ds = batch_ray.predict_dataset(items, model, choice.threshold, None, None, files_per_block=2, with_prob=True)
    rows = {int(r["index"]): r for r in ds.iter_rows()}
    assert sorted(rows) == list(range(N_GOOD))
    predictor = predict.load_predictor(choice)
    sources = [Source(str(f), (lambda f=f: read_image_file(f, name=str(f)))) for f in files]
    for i, o in enumerate(iter_predictions(predictor, sources, choice.threshold)):
        prob = batch_ray.prob_from_npy(rows[i]["prob"])
        assert prob.dtype == np.float32 and prob.shape == o.result.prob.shape == o.pixels.shape[:2]
        np.testing.assert_allclose(prob, o.result.prob, rtol=0, atol=1e-6)
        line = json.loads(str(rows[i]["line"]))
        assert line["findings"] == [f.to_dict() for f in o.result.findings]


# --------------------------------------------------------------------------- without Ray
def _model(entry: dict | None = None) -> batch_ray.BatchModel:
    return batch_ray.BatchModel("unet", "/models/unet.keras", "a" * 64, ModelEntry("unet", entry or {"threshold": 0.5}))


def test_resume_rule(tmp_path):
    """Skipped only when done without error by the same model file, entry, threshold and stem, PNGs present."""
    model = _model()
    for stem in ("a", "b"):
        for suffix in batch_ray.OUTPUT_SUFFIXES:
            (tmp_path / f"{stem}{suffix}").write_bytes(b"png")
    good = {"model": "unet", "threshold": 0.5, "error": None, "model_sha256": model.sha256,
            "entry_sha256": model.entry_sha256}
    summary = tmp_path / batch_ray.SUMMARY_NAME
    summary.write_text("".join(json.dumps(line) + "\n" for line in [
        {**good, "file": "a.jpg", "output_stem": "a", "error": "a.jpg: cannot be read"},  # failed first ...
        {**good, "file": "a.jpg", "output_stem": "a"},  # ... then done: the last line wins
        {**good, "file": "b.jpg", "output_stem": "b"},
        {**good, "file": "c.jpg", "output_stem": "c"},  # its PNGs are missing
    ]) + '{"file": "d.jpg", "mod')  # cut off by an interruption
    earlier = batch_ray.read_summary(summary)
    assert list(earlier) == ["a.jpg", "b.jpg", "c.jpg"]
    files, stems = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], ["a", "b", "c", "d"]
    assert set(batch_ray.finished_earlier(earlier, files, stems, model, 0.5, tmp_path)) == {0, 1}
    assert batch_ray.finished_earlier(earlier, files, ["a", "b-2", "c", "d"], model, 0.5, tmp_path).keys() == {0}
    assert not batch_ray.finished_earlier(earlier, files, stems, model, 0.6, tmp_path)  # another threshold
    assert not batch_ray.finished_earlier(earlier, files, stems, model, 0.5, None)  # the earlier run wrote PNGs, this one none
    other_file = batch_ray.BatchModel("unet", model.path, "b" * 64, model.entry)
    assert not batch_ray.finished_earlier(earlier, files, stems, other_file, 0.5, tmp_path)
    recalibrated = _model({"threshold": 0.5, "calibration": {"method": "isotonic"}})
    assert not batch_ray.finished_earlier(earlier, files, stems, recalibrated, 0.5, tmp_path)


def test_summary_rewrite_keeps_other_files_one_line_each(tmp_path):
    path = tmp_path / "s.jsonl"
    earlier = {"x.jpg": {"file": "x.jpg", "n": 1}, "a.jpg": {"file": "a.jpg", "n": 1}}
    batch_ray.rewrite_summary(path, earlier, [{"file": "a.jpg", "n": 2}, {"file": "b.jpg", "n": 2}])
    assert [json.loads(t) for t in path.read_text().splitlines()] == [
        {"file": "x.jpg", "n": 1}, {"file": "a.jpg", "n": 2}, {"file": "b.jpg", "n": 2}]


def test_without_ray_one_line_error(real_xray_paths, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    rc, err = _main([str(real_xray_paths[0]), "--engine", "ray", "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("predict.py: error: --engine ray needs Ray")
    assert "requirements-ray.txt" in err and not (tmp_path / "out" / batch_ray.SUMMARY_NAME).exists()


@pytest.mark.parametrize("option", [["--address", "head:6379"], ["--summary", "s.jsonl"], ["--actor-cpus", "2"]])
def test_ray_options_need_the_ray_engine(option, real_xray_paths):
    with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(io.StringIO()) as err:
        predict.main([str(real_xray_paths[0]), *option])
    assert exc.value.code == 2 and f"{option[0]} needs --engine ray" in err.getvalue()


def test_an_actor_refuses_a_model_file_that_differs_from_the_checked_one(tmp_path, shipped_model_path):
    """A node whose copy of the model is not the file the driver checked: the actor does not start,
    and the job's one line names the node and the hash mismatch."""
    real = shipped_model_path("unet")
    copy = tmp_path / real.name
    data = bytearray(real.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    model = batch_ray.BatchModel("unet", str(copy), sha256_file(real), None)
    with pytest.raises(ModelIntegrityError) as refused:
        batch_ray.PredictBatches(model, 0.5, None, None)
    assert "on node" in str(refused.value) and "does not match" in str(refused.value)
    try:  # as Ray hands it back: the actor's exception wrapped in another
        raise RuntimeError("actor died") from refused.value
    except RuntimeError as wrapped:
        line = batch_ray._job_error(wrapped, Path("s.jsonl"))
    assert line.startswith("model refused on node") and "\n" not in line
