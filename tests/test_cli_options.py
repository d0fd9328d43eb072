"""Readings on the command line: every option documented with its default, predict.py's
"status" and summary lines, and evaluate.py changing the manifest only with --write-manifest."""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from important_variables import CONFIG, DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]


class _Captured(Exception):
    def __init__(self, parser):
        self.parser = parser


def _parser_of(module_name: str) -> argparse.ArgumentParser:
    """The parser a CLI builds (``build_parser()``, else caught inside its ``parse_args``)."""
    import importlib

    module = importlib.import_module(module_name)
    if hasattr(module, "build_parser"):
        return module.build_parser()

    def capture(self, *a, **k):
        raise _Captured(self)

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = capture
    try:
        module.parse_args([])
    except _Captured as c:
        return c.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError(f"{module_name}: no parser found")


@pytest.mark.parametrize("cli", ["predict", "evaluate", "train"])
def test_every_option_has_help_that_shows_its_default(cli):
    parser = _parser_of(cli)
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue  # -h, and deliberately hidden benchmark switches
        assert action.help, f"{cli}: {action.option_strings or action.dest} has no help text"
        if action.option_strings and not action.required:
            text = formatter._expand_help(action)
            assert "default" in text.lower(), f"{cli} {action.option_strings[0]}: help does not say its default: {text!r}"


# --------------------------------------------------------------------------- predict.py
def test_predict_json_has_status_and_stdout_one_line_per_file(tmp_path, real_xray_paths, capsys):
    import predict
    from inference.manifest import model_entry
    from inference.reading import BORDERLINE, FINDING, NO_FINDING, STATUSES, borderline_margin

    files = [str(p) for p in real_xray_paths[:2]] + [str(tmp_path / "broken.jpg")]
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    js = tmp_path / "r.json"
    assert predict.main([*files, "--json", str(js), "--no-progress"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    records = json.loads(js.read_text())
    assert len(lines) == len(records) == 3  # one summary line per file, nothing else on stdout
    entry = model_entry(DEFAULT_MODEL).data  # no --model: the default
    margin = borderline_margin(entry)
    for line, r in zip(lines, records, strict=True):
        assert line.startswith(r["file"] + ": ")
        if r["error"] is not None:
            assert r["status"] is None and "error" in line
            continue
        # The app's words: the line is the file and its reading, never an all-clear.
        assert r["status"] in STATUSES and line == f"{r['file']}: {r['reading']}"
        assert "clean" not in line.lower() and "no fracture" not in line.lower()
        expected = FINDING if r["findings"] else BORDERLINE if r["fracture_score"] >= r["threshold"] - margin else NO_FINDING
        assert r["status"] == expected and r["borderline_margin"] == pytest.approx(margin)
        calibrated = isinstance(entry.get("calibration"), dict)
        assert (r["fracture_likelihood"] is not None) == calibrated
        assert ("not calibrated" in line) == (not calibrated)


def test_predict_json_to_stdout_stays_pure_json(real_xray_paths, capsys):
    import predict

    assert predict.main([str(real_xray_paths[0]), "--json", "-", "--no-progress"]) == 0
    records = json.loads(capsys.readouterr().out)  # no summary line mixed into the JSON
    assert records[0]["status"] in ("finding", "borderline", "no_finding")


# --------------------------------------------------------------------------- evaluate.py
def test_write_manifest_needs_choose_threshold(capsys, tmp_path):
    import evaluate

    assert evaluate.main(["--model", "unet", "--split", "valid", "--write-manifest", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--choose-threshold" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("write", [False, True])
def test_choose_threshold_changes_the_manifest_only_with_write_manifest(write, tmp_path, monkeypatch, data_dir):
    """The evaluation itself is replaced by a stand-in that 'chooses' 0.35: this tests the CLI's rule."""
    import create_segmentation_model
    import evaluate

    saved = tmp_path / "Saved_model"
    saved.mkdir()
    shutil.copy(CONFIG.manifest_path, saved / "manifest.json")
    (saved / "unet.keras").write_bytes(b"stand-in weights")
    before = (saved / "manifest.json").read_text()
    report = {
        "threshold": 0.35, "threshold_source": "chosen on valid by evaluate.py --choose-threshold (test)",
        "threshold_choice": {"chosen": 0.35, "value": 0.5}, "split": "valid", "model_sha256": "x" * 64,
        "date": "2026-11-29T00:00:00+00:00", "counts": {"fractured_images": 82, "negative_images": 318},
    }
    monkeypatch.setattr(evaluate, "CONFIG", replace(CONFIG, saved_model_dir=saved))
    monkeypatch.setattr(create_segmentation_model, "load_named_model", lambda name: object())
    monkeypatch.setattr(evaluate, "predictor_for", lambda model, name, entry=None: None)
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: SimpleNamespace(report=report))
    monkeypatch.setattr(evaluate, "write_report", lambda ev, out: [])
    monkeypatch.setattr(evaluate, "markdown_table", lambda reports: "")
    argv = ["--model", "unet", "--split", "valid", "--choose-threshold", "--data", str(data_dir), "--out", str(tmp_path)]
    assert evaluate.main(argv + (["--write-manifest"] if write else [])) == 0
    after = json.loads((saved / "manifest.json").read_text())
    if write:
        assert after["models"]["unet"]["threshold"] == 0.35
        assert after["models"]["encoder_decoder"] == json.loads(before)["models"]["encoder_decoder"]
    else:
        assert (saved / "manifest.json").read_text() == before
