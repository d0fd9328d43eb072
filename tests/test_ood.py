"""The "unlike the training images" check: the fit (ood), the feature layer rule and pooling
(model_features), the features out of the one inference loop, and tools/fit_ood.py end to end.

Models here are small untrained Keras models built in the test (never trained); the tool's
end-to-end test reads a few FracAtlas images (skips without the data set)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from important_variables import CONFIG
from inference.ood import OodCheck, OodReading, alarm_rate, fit_ood

C = 16


def _features(n: int, rng, shift: float = 0.0) -> np.ndarray:
    """ReLU-like non-negative features with correlated channels (what a pooled map looks like)."""
    base = rng.normal(0.0, 1.0, (n, 4)) @ rng.normal(0.0, 1.0, (4, C))
    return np.maximum(0.0, 1.0 + 0.3 * base + rng.normal(0.0, 0.1, (n, C)) + shift)


def test_fit_sets_the_threshold_at_the_false_alarm_rate_on_valid():
    rng = np.random.default_rng(0)
    mix = rng.normal(0.0, 1.0, (4, C))
    def feats(n, shift=0.0):
        return np.maximum(0.0, 1.0 + 0.3 * rng.normal(0, 1, (n, 4)) @ mix + rng.normal(0, 0.1, (n, C)) + shift)
    check = fit_ood(feats(300), feats(400), "bottleneck", false_alarm=0.05, components=4)
    assert check.info["valid_false_alarm"] <= 0.05 and check.info["n_train"] == 300 and check.info["n_valid"] == 400
    _, n, rate = alarm_rate(check, feats(2000))  # held out, same distribution: about the target
    assert n == 2000 and 0.02 <= rate <= 0.09
    assert alarm_rate(check, feats(200, shift=2.0))[2] == 1.0  # far away: always flagged
    d = check.distances(feats(500))
    assert 0.7 < np.median(d) < 1.6  # about 1 for a typical image, by construction


def test_the_check_survives_the_manifest_and_refuses_other_weights():
    rng = np.random.default_rng(1)
    check = fit_ood(_features(50, rng), _features(40, rng), "enc_out", components=5, info={"model_sha256": "ab" * 32})
    stored = json.loads(json.dumps(check.to_entry()))  # what the manifest holds
    back = OodCheck.from_entry(stored, sha256="ab" * 32)
    probe = _features(7, rng)
    assert back is not None and back.layer == "enc_out" and back.info["model_sha256"] == "ab" * 32
    np.testing.assert_allclose(back.distances(probe), check.distances(probe), rtol=1e-5)
    assert OodCheck.from_entry(stored, sha256="cd" * 32) is None  # fitted for other weights: not used
    for broken in (None, {}, {**stored, "mean": "!!"}, {**stored, "channels": C + 1}, {**stored, "variances": [0.0] * 5},
                   {**stored, "threshold": "x"}, {**stored, "transform": "sqrt"}):
        assert OodCheck.from_entry(broken) is None
    reading = back.assess(probe[0])
    assert isinstance(reading, OodReading) and reading.unlike == (reading.distance > back.threshold)


def test_fit_refuses_bad_input():
    rng = np.random.default_rng(2)
    good = _features(10, rng)
    for args in ((good[:2], good), (good, good[:, :3]), (good, good, "x", 1.5)):
        with pytest.raises(ValueError):
            fit_ood(*args) if len(args) == 4 else fit_ood(args[0], args[1], "x")


# --------------------------------------------------------------------------- the model's features
def test_feature_layer_rule_on_the_shipped_architectures():
    from create_segmentation_model import build_encoder_decoder, build_unet
    from inference.features import deepest_feature_layer

    for build in (build_unet, build_encoder_decoder):
        assert deepest_feature_layer(build()) == "bottleneck_conv2"  # fixed 256x256 input: static shapes
        assert deepest_feature_layer(build((None, None, 3))) == "bottleneck_conv2"  # size-free: probed


def test_feature_layer_rule_skips_fixed_size_branches_and_names_errors():
    import keras
    from keras import layers

    from inference.features import deepest_feature_layer, with_features

    x_in = keras.Input((None, None, 3))
    x = layers.Conv2D(4, 3, strides=2, padding="same", name="down1")(x_in)
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="deep")(x)
    se = layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)  # 1x1 at any input size
    se = layers.Conv2D(8, 1, activation="sigmoid", name="se_gate")(se)
    x = layers.Multiply(name="deep_scaled")([x, se])
    x = layers.UpSampling2D(4, name="up")(x)
    model = keras.Model(x_in, layers.Conv2D(2, 1, activation="softmax", name="output")(x))
    assert deepest_feature_layer(model) == "deep_scaled"  # the last layer at the coarsest size that follows the image
    two = with_features(model, "deep")
    prob, fmap = two(np.zeros((1, 64, 64, 3), np.float32))
    assert tuple(prob.shape) == (1, 64, 64, 2) and tuple(fmap.shape) == (1, 16, 16, 8)
    with pytest.raises(ValueError, match="no layer named"):
        with_features(model, "nope")


def test_pooled_features_leave_the_padding_out():
    from inference.features import pooled_features

    fmap = np.zeros((4, 6, 2), np.float32)
    fmap[:3, :5] = 1.0  # the image's cells; the rest is padding
    fmap[3:, :] = 100.0
    fmap[:, 5:] = 100.0
    # a 45x77 image padded to 64x96 (16 px cells): ceil(45/16) = 3 rows, ceil(77/16) = 5 columns
    np.testing.assert_allclose(pooled_features(fmap, (45, 77), (64, 96)), [1.0, 1.0])
    np.testing.assert_allclose(pooled_features(fmap, (64, 96), (64, 96)), fmap.mean(axis=(0, 1)))


def _tiny_unet(input_shape=(None, None, 3)):
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    x_in = keras.Input(input_shape, name="image")
    a = layers.Conv2D(4, 3, padding="same", activation="relu", name="enc1_conv")(x_in)
    b = layers.MaxPooling2D(2, name="enc1_pool")(a)
    b = layers.Conv2D(8, 3, padding="same", activation="relu", name="bottleneck_conv")(b)
    u = layers.UpSampling2D(2, name="up")(b)
    u = layers.Concatenate(name="concat")([u, a])
    return keras.Model(x_in, layers.Conv2D(2, 1, activation="softmax", name="output")(u), name="tiny")


@pytest.mark.parametrize("shape", [(None, None, 3), (256, 256, 3)], ids=["native", "fixed"])
def test_features_come_out_of_the_inference_loop_without_changing_the_maps(shape):
    from prediction import Predictor, Source, iter_predictions

    model = _tiny_unet(shape)
    plain = Predictor(model, "tiny")
    with_feats = Predictor(model, "tiny", feature_layer="bottleneck_conv")
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (120, 90), np.uint8), rng.integers(0, 256, (64, 200), np.uint8)]
    sources = [Source(f"im{i}", (lambda im=im: im)) for i, im in enumerate(images)]
    a = list(iter_predictions(plain, sources, 0.5, batch_size=2))
    b = list(iter_predictions(with_feats, sources, 0.5, batch_size=2))
    for oa, ob in zip(a, b, strict=True):
        np.testing.assert_allclose(oa.result.prob, ob.result.prob, atol=1e-6)
        assert oa.features is None and ob.features.shape == (8,) and np.all(np.isfinite(ob.features))
        assert oa.result.ood is None and ob.result.ood is None  # features, but no fitted check
    feats = np.stack([o.features for o in b])
    check = fit_ood(np.concatenate([feats] * 3) + rng.normal(0, 0.01, (6, 8)), feats, "bottleneck_conv", components=2)
    checked = Predictor(model, "tiny", ood=check)
    assert checked.feature_layer == "bottleneck_conv"
    outs = list(iter_predictions(checked, sources, 0.5, batch_size=2))
    assert all(isinstance(o.result.ood, OodReading) for o in outs)
    assert outs[0].result.to_dict("im0", "tiny")["ood_distance"] == pytest.approx(outs[0].result.ood.distance, abs=1e-4)
    assert outs[0].result.with_threshold(0.3).ood is outs[0].result.ood  # a new threshold keeps the reading


# --------------------------------------------------------------------------- tools/fit_ood.py
def test_fit_ood_tool_writes_the_check_into_any_models_entry(tmp_path, data_dir, capsys):
    from inference.manifest import model_entry, read_manifest, sha256_file, write_manifest
    from prediction import predictor_for

    sys.path.insert(0, str(CONFIG.repo_root / "tools"))
    import fit_ood

    saved = tmp_path / "Saved_model"
    saved.mkdir()
    model = _tiny_unet()
    model.save(saved / "some_new_model.keras")
    write_manifest({"models": {"some_new_model": {"file": "some_new_model.keras",
                                                  "sha256": sha256_file(saved / "some_new_model.keras")}}},
                   saved / "manifest.json")
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    import cv2

    for i in range(3):
        cv2.imwrite(str(pictures / f"p{i}.png"), np.random.default_rng(i).integers(0, 256, (80, 90, 3), np.uint8))
    (pictures / "notes.txt").write_text("not an image")
    report = tmp_path / "r.json"
    argv = ["--model", "some_new_model", "--limit", "8", "--valid-limit", "3", "--components", "3", "--data", str(data_dir),
            "--saved-model-dir", str(saved), "--check", f"pictures={pictures}", "--report", str(report)]
    assert fit_ood.main(argv) == 0
    out = capsys.readouterr().out
    assert "some_new_model" in out and "pictures" in out and "written to models.some_new_model.ood" in out
    figures = json.loads(report.read_text())["figures"]
    assert figures["train"]["images"] <= 8 and figures["valid"]["images"] <= 6 and figures["pictures"]["images"] == 3
    stored = read_manifest(saved / "manifest.json")["models"]["some_new_model"]["ood"]
    assert stored["layer"] == "bottleneck_conv" and stored["model_sha256"] == sha256_file(saved / "some_new_model.keras")
    assert stored["command"].startswith("python tools/fit_ood.py --model some_new_model --limit 8") and "/" not in stored["command"].split("fit_ood.py")[1]
    assert set(stored["checks"]) == {"valid", "pictures"} and stored["sources"] == ["FracAtlas"]
    entry = model_entry("some_new_model", read_manifest(saved / "manifest.json"))
    predictor = predictor_for(model, "some_new_model", entry)
    assert predictor.ood is not None and predictor.feature_layer == "bottleneck_conv"
    # Usage errors: one line, exit 2.
    assert fit_ood.main(["--model", "nope", "--data", str(data_dir), "--saved-model-dir", str(saved)]) == 2
    assert fit_ood.main(argv[:-4] + ["--check", "pictures"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no model 'nope'" in err[0] and "LABEL=DIR" in err[1]


def test_fit_ood_on_both_sources_for_a_model_trained_on_both(tmp_path, data_dir, yolo8_dir, monkeypatch, capsys):
    """--second-source: fitted on both sources' train images, the level set on both valid parts, reported per source."""
    from inference.manifest import read_manifest, sha256_file, write_manifest

    sys.path.insert(0, str(CONFIG.repo_root / "tools"))
    import fit_ood

    monkeypatch.setenv(CONFIG.yolo8_env_var, str(yolo8_dir))
    saved = tmp_path / "Saved_model"
    saved.mkdir()
    _tiny_unet().save(saved / "both.keras")
    write_manifest({"models": {"both": {"file": "both.keras", "sha256": sha256_file(saved / "both.keras")}}}, saved / "manifest.json")
    report = tmp_path / "r.json"
    assert fit_ood.main(["--model", "both", "--limit", "6", "--second-source", "5", "--valid-limit", "3", "--components", "3",
                         "--data", str(data_dir), "--saved-model-dir", str(saved), "--report", str(report)]) == 0
    figures = json.loads(report.read_text())["figures"]
    assert figures["train BoneFractureYolo8"]["images"] == 5 and figures["valid BoneFractureYolo8"]["images"] > 50
    stored = read_manifest(saved / "manifest.json")["models"]["both"]["ood"]
    assert "BoneFractureYolo8 train part: 5 originals" in stored["fitted_on"]
    assert "BoneFractureYolo8 valid part" in stored["threshold_on"] and "--second-source 5" in stored["command"]
    assert set(stored["checks"]) == {"valid", "valid BoneFractureYolo8"}
    assert stored["sources"] == ["FracAtlas", "BoneFractureYolo8"]
    # The level is the 95 % quantile of both valid parts together: at most 5 % of them (+ one image) warn.
    flagged = figures["valid"]["alarms"] + figures["valid BoneFractureYolo8"]["alarms"]
    assert flagged <= 0.05 * (figures["valid"]["images"] + figures["valid BoneFractureYolo8"]["images"]) + 1


def test_one_per_original_keeps_one_file_per_roboflow_original(tmp_path):
    sys.path.insert(0, str(CONFIG.repo_root / "tools"))
    import fit_ood

    names = ["elbow-1_jpg.rf.aa11.jpg", "elbow-1_jpg.rf.bb22.jpg", "wrist_png.rf.cc33.jpg", "plain.png"]
    kept = fit_ood.one_per_original([tmp_path / n for n in names])
    assert [p.name for p in kept] == ["elbow-1_jpg.rf.aa11.jpg", "wrist_png.rf.cc33.jpg", "plain.png"]
