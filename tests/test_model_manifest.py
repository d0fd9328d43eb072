"""model_manifest: one reader/writer of Saved_model/manifest.json, one threshold fallback, one trust rule."""

from __future__ import annotations

import json

import pytest

from important_variables import CONFIG, MODEL_NAMES
from inference import manifest as mm


def _write(path, models):
    path.write_text(json.dumps({"models": models}), encoding="utf-8")


def test_threshold_falls_back_by_one_rule():
    assert mm.model_threshold("unet", {"models": {"unet": {"threshold": 0.37}}}) == 0.37
    for bad in ({}, {"models": {"unet": {"threshold": "x"}}}, {"models": {"unet": {"threshold": 1.5}}},
                {"models": {"unet": {"threshold": float("nan")}}}, {"models": {"unet": None}}, {"models": []}):
        assert mm.model_threshold("unet", bad) == CONFIG.default_threshold, bad
    assert mm.model_entry("unet", {}).threshold_source.startswith("default")
    assert mm.model_entry("unet", {"models": {"unet": {"threshold": 0.4, "threshold_source": "s"}}}).threshold_source == "manifest: s"


def test_getters_for_keys_other_tools_add():
    e = mm.model_entry("unet", {"models": {"unet": {"borderline_margin": 0.1, "calibration": {"kind": "platt"},
                                                     "image_score": "max_prob", "inference": {"scale": "native"}}}})
    assert e.borderline_margin == 0.1 and e.calibration == {"kind": "platt"}
    assert e.image_score == "max_prob" and e.inference == {"scale": "native"}
    empty = mm.model_entry("unet", {})
    assert (empty.borderline_margin, empty.calibration, empty.image_score, empty.inference) == (None, None, None, None)


def test_update_entry_keeps_unknown_keys_and_other_models(tmp_path):
    path = tmp_path / "manifest.json"
    _write(path, {"unet": {"file": "unet.keras", "calibration": {"a": 1}}, "encoder_decoder": {"file": "e.keras"}})
    mm.update_entry("unet", {"threshold": 0.42}, path)
    data = json.loads(path.read_text())["models"]
    assert data["unet"] == {"file": "unet.keras", "calibration": {"a": 1}, "threshold": 0.42}
    assert data["encoder_decoder"] == {"file": "e.keras"}
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, no temp file left
    with pytest.raises(KeyError):
        mm.update_entry("other", {"threshold": 0.3}, path, create=False)
    # drop: keys about replaced weights go, the rest stays
    mm.update_entry("unet", {"sha256": "ab"}, path, drop=("threshold", "absent"))
    assert json.loads(path.read_text())["models"]["unet"] == {"file": "unet.keras", "calibration": {"a": 1}, "sha256": "ab"}


def test_unreadable_manifest_is_a_one_line_error(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text("{not json")
    with pytest.raises(mm.ManifestError) as exc:
        mm.read_manifest(path)
    assert len(str(exc.value).splitlines()) == 1
    assert mm.read_manifest_or_empty(path) == {}
    assert mm.read_manifest(tmp_path / "absent.json") == {}


def test_one_trust_rule(tmp_path):
    weights = tmp_path / "m.keras"
    weights.write_bytes(b"weights")
    # Unlisted: refused unless the caller allows unverified files.
    with pytest.raises(mm.ModelIntegrityError, match="refusing unverified weights"):
        mm.verify_model_file(weights)
    unverified = mm.verify_model_file(weights, allow_unverified=True)
    assert not unverified.verified and unverified.sha256 == mm.sha256_file(weights)
    # Listed with the right hash: accepted, with its entry.
    _write(tmp_path / "manifest.json", {"mine": {"file": "m.keras", "sha256": mm.sha256_file(weights), "threshold": 0.3}})
    ok = mm.verify_model_file(weights)
    assert ok.verified and ok.entry.name == "mine" and ok.entry.threshold == 0.3
    # Listed, file changed: refused even when unverified files are allowed.
    weights.write_bytes(b"weights, modified")
    for allow in (False, True):
        with pytest.raises(mm.ModelIntegrityError, match="does not match the manifest"):
            mm.verify_model_file(weights, allow_unverified=allow)
    with pytest.raises(mm.ModelIntegrityError, match="not found"):
        mm.verify_model_file(tmp_path / "absent.keras", allow_unverified=True)


def test_shipped_manifest_lists_every_model():
    for name in MODEL_NAMES:
        e = mm.model_entry(name)
        assert e.listed and e.file == CONFIG.model_path(name).name and len(e.sha256) == 64
