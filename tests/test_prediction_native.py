"""Whole-image prediction at native scale: twin model, padding, TTA, manifest-driven predictor."""

import numpy as np
import pytest

from create_segmentation_model import build_model, variable_size_twin
from imaging.image_io import native_scale, pad_to_multiple, to_native_gray
from important_variables import CONFIG
from inference.findings import FindingRule
from inference.manifest import ModelEntry
from prediction import Predictor, native_input, predict_images, predictor_for


@pytest.fixture(scope="module")
def seed_model():
    import keras

    keras.utils.set_random_seed(3)
    return build_model("encoder_decoder")


def test_scale_helpers():
    assert native_scale(373, 454) == 1.0
    assert native_scale(2880, 2304) == pytest.approx(454 / 2880)
    img = np.zeros((1000, 800), np.uint8)
    assert to_native_gray(img).shape == (454, 363)
    small = np.zeros((300, 200), np.uint8)
    assert to_native_gray(small) is small
    assert pad_to_multiple(np.ones((373, 454))).shape == (384, 464)
    assert pad_to_multiple(np.ones((373, 454, 3))).shape == (384, 464, 3)
    assert pad_to_multiple(np.ones((32, 48))).shape == (32, 48)
    g = native_input(np.full((20, 30), 255, np.uint8))
    assert g.dtype == np.float32 and g.shape == (20, 30) and g.max() == pytest.approx(1.0)


def test_twin_carries_the_weights_and_takes_any_size(seed_model):
    twin = variable_size_twin(seed_model)
    assert twin.input_shape[1:3] == (None, None)
    x = np.random.default_rng(0).random((1, 256, 256, 3), dtype=np.float32)
    np.testing.assert_allclose(twin(x).numpy(), seed_model(x).numpy(), atol=1e-5)
    assert twin(np.zeros((1, 96, 160, 3), np.float32)).shape == (1, 96, 160, 2)


def test_native_predictor_equals_a_direct_padded_forward(seed_model):
    twin = variable_size_twin(seed_model)
    pred = Predictor(twin, "encoder_decoder")
    assert pred.native
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (100, 140), dtype=np.uint8), rng.integers(0, 256, (90, 60), dtype=np.uint8),
              rng.integers(0, 256, (100, 140), dtype=np.uint8)]
    probs = pred.predict_probs(images)
    for img, prob in zip(images, probs, strict=True):
        assert prob.shape == img.shape and prob.dtype == np.float32
        x = pad_to_multiple(img.astype(np.float32) / 255)
        direct = twin(np.repeat(x[None, ..., None], 3, -1)).numpy()[0, : img.shape[0], : img.shape[1], CONFIG.fracture_channel]
        np.testing.assert_allclose(prob, direct, atol=1e-5)
        # model_input is that very padded batch, the one forward gets for this image.
        batch = pred.model_input(img)
        assert batch.dtype == np.float32 and batch.shape == (1, *x.shape, 3)
        np.testing.assert_allclose(batch, np.repeat(x[None, ..., None], 3, -1), rtol=0, atol=1e-7)
    # Results come back at each image's own size.
    results = predict_images(pred, images, 0.5)
    assert [r.prob.shape for r in results] == [i.shape for i in images]


def test_large_image_is_brought_to_training_scale(seed_model):
    pred = Predictor(variable_size_twin(seed_model), "encoder_decoder")
    big = np.random.default_rng(2).integers(0, 256, (1000, 700), dtype=np.uint8)
    assert pred.predict_probs([big])[0].shape == (454, 318)
    assert predict_images(pred, [big], 0.5)[0].prob.shape == (1000, 700)


def test_tta_averages_with_the_flipped_pass(seed_model):
    twin = variable_size_twin(seed_model)
    plain, tta = Predictor(twin, "m"), Predictor(twin, "m", tta=True)
    x = np.random.default_rng(4).random((1, 64, 96, 3), dtype=np.float32)
    expected = 0.5 * (plain.forward(x) + plain.forward(x[:, :, ::-1])[:, :, ::-1])
    np.testing.assert_allclose(tta.forward(x), expected, atol=1e-6)


def test_predictor_for_follows_the_manifest_entry(seed_model):
    legacy = predictor_for(seed_model, "encoder_decoder", None)
    assert not legacy.native and legacy.image_score == "max_prob"
    entry = ModelEntry("encoder_decoder", {"inference": {"scale": "native", "tta": True},
                                           "findings": {"low_ratio": 0.6, "max_findings": 3}, "image_score": "topk_mean"})
    p = predictor_for(seed_model, "encoder_decoder", entry)
    assert p.native and p.tta and p.image_score == "topk_mean"
    assert p.finding_rule == FindingRule(low_ratio=0.6, max_findings=3)
    r = predict_images(p, [np.zeros((64, 64), np.uint8)], 0.5)[0]
    assert r.rule == p.finding_rule and r.image_score == pytest.approx(r.image_scores()["topk_mean"])
