"""The ensemble: its builder averages its members exactly, the tool writes it from the shipped members, and the
shipped ensemble was written from the member files shipped now."""

import json
import shutil
import sys

import numpy as np
import pytest

from create_segmentation_model import build_model, fold_batch_norms, member_prefix
from important_variables import CONFIG, ENSEMBLE_MEMBERS, PAD_MULTIPLES
from training.ensemble import copy_member_weights, members_current

RNG = np.random.default_rng(7)
sys.path.insert(0, str(CONFIG.repo_root / "tools"))  # the tools are scripts, not a package


def _members(input_shape=(None, None, 3)):
    """Member models with random weights (their batch norms moved off the identity, as trained ones are)."""
    members = {}
    for name in ENSEMBLE_MEMBERS:
        model = build_model(name, input_shape)
        model.set_weights([w + RNG.normal(0, 0.05, w.shape).astype(np.float32) if w.ndim == 1 else w
                           for w in model.get_weights()])
        members[name] = model
    return members


def test_weights_sum_to_one_and_pad_multiple_fits_every_member():
    assert sum(ENSEMBLE_MEMBERS.values()) == pytest.approx(1.0)
    assert all(PAD_MULTIPLES["ensemble"] % PAD_MULTIPLES[m] == 0 for m in ENSEMBLE_MEMBERS)


def test_output_is_the_weighted_average_of_the_members():
    members = _members()
    ensemble = build_model("ensemble", (None, None, 3))
    copy_member_weights(ensemble, members)
    x = RNG.random((2, 96, 128, 3), dtype=np.float32)
    expected = sum(w * np.asarray(members[m](x, training=False)) for m, w in ENSEMBLE_MEMBERS.items())
    got = np.asarray(ensemble(x, training=False))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)  # still a softmax
    folded = fold_batch_norms(ensemble)  # flat graph: the members' batch norms fold too
    assert len(folded.layers) < len(ensemble.layers) or any(type(la).__name__ == "FoldedAway" for la in folded.layers)
    # Folding reorders float32 arithmetic (a correct fold differs by ~1e-5 on a few pixels on some CPUs).
    np.testing.assert_allclose(np.asarray(folded(x, training=False)), expected, rtol=0, atol=1e-4)


def test_every_member_layer_is_prefixed_and_a_wrong_member_set_is_refused():
    ensemble = build_model("ensemble")
    names = [layer.name for layer in ensemble.layers[1:-1]]
    assert all(any(n.startswith(member_prefix(m)) for m in ENSEMBLE_MEMBERS) for n in names)
    with pytest.raises(ValueError, match="not the ensemble's"):
        copy_member_weights(ensemble, {"unet": build_model("unet")})


def test_shipped_ensemble_was_written_from_the_shipped_members():
    """Re-shipping a member without ``python tools/build_ensemble.py`` fails here."""
    entry = json.loads(CONFIG.manifest_path.read_text())["models"]["ensemble"]
    assert members_current(entry), "the ensemble's members are not the shipped files: run tools/build_ensemble.py"
    assert {m: r["weight"] for m, r in entry["members"].items()} == dict(ENSEMBLE_MEMBERS)


def test_members_current_sees_a_changed_member(tmp_path):
    for name in ENSEMBLE_MEMBERS:
        (tmp_path / CONFIG.model_files[name]).write_bytes(name.encode())
    from training.ensemble import members_record

    entry = {"members": members_record(tmp_path)}
    assert members_current(entry, tmp_path)
    (tmp_path / CONFIG.model_files[next(iter(ENSEMBLE_MEMBERS))]).write_bytes(b"re-shipped")
    assert not members_current(entry, tmp_path)
    assert not members_current({}, tmp_path)


@pytest.mark.slow
def test_tool_writes_the_ensemble_from_the_members(tmp_path):
    """tools/build_ensemble.py on a copy of the shipped members: a verified file whose map is the members' average."""
    import keras
    from build_ensemble import main

    from create_segmentation_model import load_segmentation_model

    for name in ENSEMBLE_MEMBERS:
        shutil.copy(CONFIG.model_path(name), tmp_path)
    manifest = json.loads(CONFIG.manifest_path.read_text())
    manifest["models"] = {m: manifest["models"][m] for m in ENSEMBLE_MEMBERS}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert main(["--out-dir", str(tmp_path)]) == 0
    entry = json.loads((tmp_path / "manifest.json").read_text())["models"]["ensemble"]
    assert members_current(entry, tmp_path) and entry["params"] == 5_382_020
    assert entry["threshold_source"].startswith("default")
    ensemble = load_segmentation_model(tmp_path / "ensemble.keras")  # verified against the manifest written
    x = RNG.random((1, 256, 256, 3), dtype=np.float32)
    expected = sum(w * np.asarray(keras.saving.load_model(tmp_path / CONFIG.model_files[m], compile=False)(x))
                   for m, w in ENSEMBLE_MEMBERS.items())
    np.testing.assert_allclose(np.asarray(ensemble(x)), expected, atol=1e-5)


def test_tool_refuses_a_missing_member_in_one_line(tmp_path, capsys):
    from build_ensemble import main

    (tmp_path / "manifest.json").write_text(json.dumps({"models": {}}))
    assert main(["--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("build_ensemble.py: error:")


def test_sweep_grid_covers_the_simplex_one_model_rows_first():
    sys.path.insert(0, str(CONFIG.repo_root / "benchmarks"))
    from ensemble_sweep import weight_grid

    grid = weight_grid(3, 0.25)
    assert len(grid) == 15 and len(set(grid)) == 15
    assert all(sum(w) == pytest.approx(1.0) for w in grid)
    assert grid[:3] == [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]
    assert (0.0, 0.25, 0.75) in grid
    with pytest.raises(ValueError, match="must divide 1"):
        weight_grid(2, 0.3)
