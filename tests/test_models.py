"""The architectures: exact parameter counts, shapes, save/load with the custom loss."""

import subprocess
import sys

import numpy as np
import pytest

from create_segmentation_model import (
    ModelIntegrityError,
    build_encoder_decoder,
    build_model,
    build_unet,
    load_segmentation_model,
    sha256_file,
)
from important_variables import CONFIG, MODEL_NAMES, PAD_MULTIPLES

#: Exact parameter counts; the ensemble's is its members' sum (no layer of its own has weights).
PARAMS = {"unet": 1_941_122, "encoder_decoder": 1_554_498, "lite0_unet": 3_827_522, "ensemble": 5_382_020}


def _load_in_fresh_process(path) -> str:
    """Load ``path`` with plain ``keras.saving.load_model`` (safe mode, compiled) in a new
    interpreter that has only imported ``utils``; returns "<loss name> <params>"."""
    code = (
        f"import sys; sys.path.insert(0, {str(CONFIG.repo_root)!r})\n"
        "import keras, utils\n"
        f"m = keras.saving.load_model({str(path)!r}, safe_mode=True)\n"
        "print(getattr(m.loss, '__name__', m.loss), m.count_params())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_encoder_decoder_parameter_count_and_shape():
    m = build_encoder_decoder()
    assert m.count_params() == 1_554_498
    assert m.input_shape == (None, 256, 256, 3)
    assert m.output_shape == (None, 256, 256, 2)
    assert not any("concat" in layer.name for layer in m.layers)  # no skip connections


def test_unet_parameter_count_and_shape():
    m = build_unet()
    assert m.count_params() == 1_941_122
    assert m.output_shape == (None, 256, 256, 2)
    assert sum("concat" in layer.name for layer in m.layers) == 4


def test_output_is_softmax_over_two_channels():
    m = build_unet()
    x = np.random.default_rng(0).random((1, 256, 256, 3), dtype=np.float32)
    y = np.asarray(m(x, training=False))
    assert y.shape == (1, 256, 256, 2)
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)


def test_unknown_model_name_is_rejected():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet")


def test_lite0_unet_parameter_count_skips_and_size_free_input():
    from create_segmentation_model import build_lite0_unet, lite_skip_blocks

    m = build_lite0_unet()
    assert m.count_params() == 3_827_522
    assert m.output_shape == (None, 256, 256, 2)
    assert lite_skip_blocks("lite0") == (0, 2, 4, 10, 15)
    assert sum(layer.name.endswith("_concat") for layer in m.layers) == len(lite_skip_blocks("lite0")) - 1
    assert not any(type(layer).__name__ == "SqueezeExcitation" or "_se_" in layer.name for layer in m.layers)
    twin = build_model("lite0_unet", input_shape=(None, None, 3))
    twin.set_weights(m.get_weights())
    x = np.random.default_rng(1).random((1, 256, 256, 3), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(twin(x)), np.asarray(m(x)), atol=1e-5)
    # Any multiple of the net's stride works whole (32 = 2 ** 5 stride-2 steps), as native prediction needs.
    assert PAD_MULTIPLES["lite0_unet"] == 32
    assert tuple(twin(np.zeros((1, 480, 352, 3), np.float32)).shape) == (1, 480, 352, 2)


def test_lite2_unet_is_the_wider_deeper_encoder_under_the_same_decoder():
    from create_segmentation_model import LITE_DECODER_FILTERS, build_lite2_unet, lite_skip_blocks

    m = build_lite2_unet((None, None, 3))
    assert m.name == "lite2_unet" and m.count_params() == 5_293_394
    # Skips at 1/2 ... 1/32: the last block of each resolution, 16/24/48/120/352 channels.
    assert lite_skip_blocks("lite2") == (0, 3, 6, 14, 20)
    concats = [layer for layer in m.layers if layer.name.endswith("_concat")]
    assert [c.input[1].shape[-1] for c in concats] == [120, 48, 24, 16]
    assert [m.get_layer(f"dec{i + 1}_conv2").filters for i in range(len(LITE_DECODER_FILTERS))] == list(LITE_DECODER_FILTERS)
    assert PAD_MULTIPLES["lite2_unet"] == 32
    assert tuple(m(np.zeros((1, 480, 352, 3), np.float32)).shape) == (1, 480, 352, 2)


def test_the_predictor_pads_each_model_to_its_own_stride():
    from prediction import Predictor

    twin = build_model("lite0_unet", input_shape=(None, None, 3))
    p = Predictor(twin, "lite0_unet", warmup=False)
    assert p.pad_multiple == 32
    (prob,) = p.predict_probs([np.full((373, 454), 120, np.uint8)])  # 373 is not a multiple of 32
    assert prob.shape == (373, 454) and np.isfinite(prob).all()


def _with_trained_like_batch_norms(model, seed: int = 3):
    """Give every BatchNormalization non-trivial statistics (fresh ones fold to the identity)."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.normal(0, 0.3, n), rng.uniform(0.2, 2.0, n)])
    return model


def test_folding_batch_norms_keeps_the_outputs_and_drops_the_norms():
    import keras

    from create_segmentation_model import FoldedAway, fold_batch_norms

    model = _with_trained_like_batch_norms(build_model("lite0_unet", input_shape=(None, None, 3)))
    folded = fold_batch_norms(model)
    bns = [layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    assert all(isinstance(folded.get_layer(n), FoldedAway) for n in bns)
    assert folded.get_layer("block3_dw").use_bias and folded.get_layer("dec1_conv1").use_bias
    x = np.random.default_rng(1).random((2, 96, 160, 3), dtype=np.float32)
    # Folding reorders float32 arithmetic through ~40 layers, so a correct fold differs by ~1e-5 on some
    # pixels; a wrong one (a missed shift, epsilon or scale) moves probabilities by far more than 1e-4.
    np.testing.assert_allclose(np.asarray(folded(x)), np.asarray(model(x)), rtol=0, atol=1e-4)
    # The twin owns copies: changing the source afterwards does not reach it.
    before = np.asarray(folded(x))
    model.get_layer("stem").set_weights([w * 0 for w in model.get_layer("stem").get_weights()])
    np.testing.assert_array_equal(np.asarray(folded(x)), before)


def test_models_without_batch_norms_are_not_cloned():
    from create_segmentation_model import fold_batch_norms

    for name in ("unet", "encoder_decoder"):
        model = build_model(name)
        assert fold_batch_norms(model) is model


def test_predictor_for_folds_unless_told_to_keep_the_model_live():
    from prediction import predictor_for

    model = _with_trained_like_batch_norms(build_model("lite0_unet", input_shape=(None, None, 3)))
    assert predictor_for(model, "lite0_unet", precision="float32").model is not model
    live = predictor_for(model, "lite0_unet", precision="float32", fold=False)
    assert live.model is model


def test_no_lambda_layers():
    for name in MODEL_NAMES:
        assert not any(type(layer).__name__ == "Lambda" for layer in build_model(name).layers)


@pytest.mark.slow
def test_saved_model_with_custom_loss_loads_in_a_fresh_process(tmp_path):
    from training.recipe import compile_model

    m = compile_model(build_encoder_decoder(), 1e-3)
    path = tmp_path / "m.keras"
    m.save(path)
    assert _load_in_fresh_process(path) == "ce_dice_fractured_loss 1554498"


def test_integrity_check_refuses_a_flipped_byte(tmp_path):
    m = build_encoder_decoder()
    path = tmp_path / "m.keras"
    m.save(path)
    good = sha256_file(path)
    load_segmentation_model(path, expected_sha256=good)  # loads
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.keras"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="does not match the manifest"):
        load_segmentation_model(bad, expected_sha256=good)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shipped_models_match_manifest_and_load(name, shipped_model_path):
    from create_segmentation_model import load_named_model, read_manifest

    path = shipped_model_path(name)
    info = read_manifest()["models"][name]
    assert info["sha256"] == sha256_file(path)
    assert info["params"] == PARAMS[name]
    assert 0.0 < info["threshold"] < 1.0
    m = load_named_model(name)
    assert m.output_shape == (None, 256, 256, 2)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shipped_models_load_in_fresh_process_with_plain_keras(name, shipped_model_path):
    """`keras.saving.load_model(path)` with safe_mode and no custom_objects, compile included; the seed's
    256x256x3 model whatever the training scale. The loss is the one of the trainer that shipped it
    (``ce_dice_loss``: the 256-px trainer; ``ce_dice_fractured_loss``: train.py at native scale)."""
    params = PARAMS[name]
    loss, count = _load_in_fresh_process(shipped_model_path(name)).split()
    assert loss in ("ce_dice_loss", "ce_dice_fractured_loss") and int(count) == params
