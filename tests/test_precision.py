"""Inference precision: the bf16 twin of a model, the rule that picks bf16 or float32 for the
Predictor, and tools/check_bf16.py (valid metrics under both, written into the manifest).

Models here are small or untrained; the CPU's bf16 flags and the forward timer are replaced
where a rule is tested, so the tests mean the same on a CPU with and without native bf16.
The tool's end-to-end test reads a few FracAtlas images (skips without the data set)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import create_segmentation_model as csm
from important_variables import CONFIG

SHA = "ab" * 32


def _tiny(name: str = "tiny"):
    import keras

    x = keras.Input((None, None, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(x)
    h = keras.layers.BatchNormalization(name="bn")(h)
    y = keras.layers.Conv2D(2, 1, activation="softmax", name="out")(h)
    return keras.Model(x, y, name=name)


def _computes_bf16(model) -> bool:
    return any(layer.compute_dtype == "bfloat16" for layer in model.layers)


def _allowed(sha: str = SHA, delta: float = 0.001) -> dict:
    return {"model_sha256": sha, "allowed": True, "max_delta": delta, "native_bf16": ["avx512_bf16"]}


def _bf16_twice_as_fast(model) -> float:
    return 0.5 if _computes_bf16(model) else 1.0


def test_precision_twin_keeps_weights_and_maps_computing_in_bf16():
    model = csm.build_model("unet", input_shape=(None, None, 3))
    twin = csm.precision_twin(model, "mixed_bfloat16")
    assert twin.name == model.name and twin.input_shape == model.input_shape
    assert _computes_bf16(twin) and not _computes_bf16(model)
    for a, b in zip(model.get_weights(), twin.get_weights(), strict=True):
        assert b.dtype == np.float32 and np.array_equal(a, b)  # variables stay float32
    x = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    p32 = np.asarray(model.predict_on_batch(x), np.float32)
    p16 = np.asarray(twin.predict_on_batch(x), np.float32)
    diff = np.abs(p32 - p16).max()
    assert 0 < diff < 0.05  # bf16 round-off: close, yet really another computation


@pytest.mark.parametrize(("flags", "check", "timer", "expected"), [
    (set(), _allowed(), _bf16_twice_as_fast, "float32"),  # emulated bf16: never, whatever the check
    ({"avx512_bf16"}, None, _bf16_twice_as_fast, "float32"),  # not checked on valid
    ({"avx512_bf16"}, _allowed(sha="cd" * 32), _bf16_twice_as_fast, "float32"),  # checked for other weights
    ({"avx512_bf16"}, _allowed(delta=0.02), _bf16_twice_as_fast, "float32"),  # metrics moved too much
    ({"avx512_bf16"}, {**_allowed(), "allowed": False}, _bf16_twice_as_fast, "float32"),
    ({"avx512_bf16"}, {**_allowed(), "native_bf16": []}, _bf16_twice_as_fast, "float32"),  # checked emulated
    ({"avx512_bf16"}, {k: v for k, v in _allowed().items() if k != "native_bf16"}, _bf16_twice_as_fast, "float32"),
    ({"avx512_bf16"}, _allowed(), lambda m: 1.0, "float32"),  # checked, but not faster here
    ({"avx512_bf16"}, _allowed(), _bf16_twice_as_fast, "mixed_bfloat16"),
    ({"amx_bf16"}, _allowed(), _bf16_twice_as_fast, "mixed_bfloat16"),
])
def test_auto_precision_needs_native_bf16_a_valid_check_and_a_measured_gain(monkeypatch, flags, check, timer, expected):
    monkeypatch.setattr(csm, "cpu_bf16_flags", lambda cpuinfo=None: flags)
    model = _tiny()
    run, policy, why = csm.inference_precision(model, check, SHA, "auto", timer=timer)
    assert policy == expected and why
    assert (run is model) == (expected == "float32")
    assert _computes_bf16(run) == (expected == "mixed_bfloat16")


def test_requested_precision_is_obeyed_and_unknown_refused(monkeypatch):
    monkeypatch.setattr(csm, "cpu_bf16_flags", lambda cpuinfo=None: set())
    model = _tiny()
    run, policy, _ = csm.inference_precision(model, None, None, "mixed_bfloat16")
    assert policy == "mixed_bfloat16" and _computes_bf16(run)
    assert csm.inference_precision(model, _allowed(), SHA, "float32")[0] is model
    with pytest.raises(ValueError, match="unknown precision"):
        csm.inference_precision(model, None, None, "float16")


def test_predictor_for_runs_bf16_only_where_the_entry_allows_it(monkeypatch):
    from inference.manifest import ModelEntry
    from prediction import predictor_for

    monkeypatch.setattr(csm, "cpu_bf16_flags", lambda cpuinfo=None: {"avx512_bf16"})
    monkeypatch.setattr(csm, "time_forward", _bf16_twice_as_fast)
    entry = ModelEntry("tiny", {"file": "tiny.keras", "sha256": SHA, "bf16_inference": _allowed()})
    unchecked = ModelEntry("tiny", {"file": "tiny.keras", "sha256": SHA})
    model = _tiny()
    fast = predictor_for(model, "tiny", entry, warmup=False)
    plain = predictor_for(model, "tiny", unchecked, warmup=False)
    assert fast.precision == "mixed_bfloat16" and _computes_bf16(fast.model)
    assert plain.precision == "float32" and plain.model is model
    x = np.random.default_rng(1).random((1, 32, 48, 3), dtype=np.float32)
    a, b = plain.forward(x), fast.forward(x)
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape == (1, 32, 48)
    np.testing.assert_allclose(a, b, atol=0.05)


def test_compare_allows_only_a_whole_split_within_the_tolerance():
    sys.path.insert(0, str(CONFIG.repo_root / "tools"))
    import check_bf16

    same = {"f1": 0.4, "dice_mean": 0.3, "roc_auc": 0.8}
    near = {"f1": 0.402, "dice_mean": 0.299, "roc_auc": 0.8}
    far = {"f1": 0.4, "dice_mean": 0.3, "roc_auc": 0.79}
    assert check_bf16.compare({"float32": same, "mixed_bfloat16": near}, full_split=True)["allowed"] is True
    assert check_bf16.compare({"float32": same, "mixed_bfloat16": near}, full_split=False)["allowed"] is False
    # Emulated bf16 rounds differently from the native kernels: its check never allows bf16.
    assert check_bf16.compare({"float32": same, "mixed_bfloat16": near}, full_split=True, native=False)["allowed"] is False
    verdict = check_bf16.compare({"float32": same, "mixed_bfloat16": far}, full_split=True)
    assert verdict["allowed"] is False and verdict["max_delta"] == pytest.approx(0.01)
    assert verdict["deltas"]["roc_auc"] == pytest.approx(0.01)


def test_check_bf16_tool_scores_both_precisions_and_writes_the_check(tmp_path, data_dir, capsys):
    from inference.manifest import read_manifest, sha256_file, write_manifest

    sys.path.insert(0, str(CONFIG.repo_root / "tools"))
    import check_bf16

    saved = tmp_path / "Saved_model"
    saved.mkdir()
    _tiny("some_model").save(saved / "some_model.keras")
    sha = sha256_file(saved / "some_model.keras")
    write_manifest({"models": {"some_model": {"file": "some_model.keras", "sha256": sha, "threshold": 0.5}}},
                   saved / "manifest.json")
    report = tmp_path / "r.json"
    argv = ["--model", "some_model", "--limit", "2", "--data", str(data_dir), "--saved-model-dir", str(saved),
            "--report", str(report)]
    assert check_bf16.main(argv) == 0
    out = capsys.readouterr().out
    assert "float32" in out and "mixed_bfloat16" in out and "not allowed" in out and "limited check" in out
    stored = read_manifest(saved / "manifest.json")["models"]["some_model"]["bf16_inference"]
    assert stored == json.loads(report.read_text())
    assert stored["model_sha256"] == sha and stored["allowed"] is False  # a limited check never allows bf16
    assert set(stored["metrics"]) == {"float32", "mixed_bfloat16"} and set(stored["deltas"]) == {"f1", "dice_mean", "roc_auc"}
    assert stored["command"] == "python tools/check_bf16.py --model some_model --limit 2"
    assert stored["native_bf16"] == sorted(csm.cpu_bf16_flags())
    assert check_bf16.main(["--model", "nope", "--data", str(data_dir), "--saved-model-dir", str(saved)]) == 2
    assert "no model 'nope'" in capsys.readouterr().err


def test_a_refused_check_says_why_in_words(monkeypatch):
    from inference.manifest import bf16_check_refusal

    assert bf16_check_refusal(_allowed(), SHA) is None
    assert "not checked" in bf16_check_refusal(None, SHA)
    assert "not checked" in bf16_check_refusal(_allowed(sha="cd" * 32), SHA)
    assert "emulated" in bf16_check_refusal({**_allowed(), "native_bf16": []}, SHA)
    assert "0.0167" in bf16_check_refusal({**_allowed(delta=0.0167), "allowed": False}, SHA)
    assert "not allowed" in bf16_check_refusal({**_allowed(), "allowed": False}, SHA)
    # The Predictor's log line carries the same reason.
    monkeypatch.setattr(csm, "cpu_bf16_flags", lambda cpuinfo=None: {"avx512_bf16"})
    _, policy, why = csm.inference_precision(_tiny(), {**_allowed(delta=0.0167), "allowed": False}, SHA, "auto")
    assert policy == "float32" and why.startswith("bf16 changed the valid metrics by 0.0167")


def _tiny_ensemble():
    """Two prefixed members on one input, as ``build_ensemble`` lays them out."""
    import keras

    x = keras.Input((None, None, 3))
    parts = []
    for member in ("lite0_unet", "encoder_decoder"):
        p = csm.member_prefix(member)
        h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name=p + "c1")(x)
        parts.append(keras.layers.Conv2D(2, 1, activation="softmax", name=p + "out")(h))
    return keras.Model(x, keras.layers.Average(name="output", dtype="float32")(parts), name="ensemble")


def test_a_member_check_runs_bf16_in_those_members_only(monkeypatch):
    from inference.manifest import bf16_check_refusal

    monkeypatch.setattr(csm, "cpu_bf16_flags", lambda cpuinfo=None: {"amx_bf16"})
    model = _tiny_ensemble()
    check = {**_allowed(), "members": ["encoder_decoder"]}
    run, policy, _ = csm.inference_precision(model, check, SHA, "auto", timer=_bf16_twice_as_fast)
    assert policy == "mixed_bfloat16 (encoder_decoder only)"
    dtypes = {layer.name: layer.compute_dtype for layer in run.layers if "__" in layer.name}
    assert {n: d for n, d in dtypes.items() if n.startswith("encoder_decoder__")} == {
        "encoder_decoder__c1": "bfloat16", "encoder_decoder__out": "bfloat16"}
    assert all(d == "float32" for n, d in dtypes.items() if n.startswith("lite0_unet__"))
    x = np.random.default_rng(2).random((1, 16, 24, 3), dtype=np.float32)
    a, b = np.asarray(model(x), np.float32), np.asarray(run(x), np.float32)
    assert 0 < np.abs(a - b).max() < 0.05
    # Requested with members, and a member the model lacks.
    _, named, _ = csm.inference_precision(model, None, None, "mixed_bfloat16", members=["lite0_unet"])
    assert named == "mixed_bfloat16 (lite0_unet only)"
    with pytest.raises(ValueError, match="no layers of member"):
        csm.precision_twin(_tiny(), "mixed_bfloat16", ["encoder_decoder"])
    # A check naming something else is refused, with the reason.
    assert "not ensemble members" in bf16_check_refusal({**_allowed(), "members": ["resnet"]}, SHA)
    assert "not ensemble members" in bf16_check_refusal({**_allowed(), "members": []}, SHA)
    assert bf16_check_refusal(check, SHA) is None


def test_the_model_card_names_the_members_a_check_allows():
    from inference.model_card import _bf16_words

    words = _bf16_words({"sha256": SHA, "bf16_inference": {**_allowed(), "members": ["encoder_decoder"]}})
    assert "encoder-decoder only (the rest float32)" in words
    assert "only" not in _bf16_words({"sha256": SHA, "bf16_inference": _allowed()})


def test_check_bf16_members_only_for_the_ensemble(tmp_path, capsys):
    sys.path.insert(0, str(CONFIG.repo_root / "tools"))
    import check_bf16

    assert check_bf16.main(["--model", "unet", "--members", "encoder_decoder", "--saved-model-dir", str(tmp_path)]) == 2
    assert "not the ensemble" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        check_bf16.main(["--model", "ensemble", "--members", "resnet"])
    assert exited.value.code == 2
