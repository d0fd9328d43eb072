"""The compiled forward pass, findings and the one-image path."""

from __future__ import annotations

import numpy as np
import pytest

from imaging.image_io import read_image_file
from important_variables import CONFIG
from prediction import (
    PredictionResult,
    Predictor,
    analyse_image,
    find_findings,
    predict_image,
    predict_images,
    preprocess,
    render_overlay,
    result_to_dict,
)

S = CONFIG.input_size


class BrightnessPredictor:
    """Stand-in for a model: 'fracture probability' = input brightness (channel 0).

    Lets coordinate tests put a finding exactly where a bright marker is.
    """

    def forward(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(batch, np.float32)[..., 0]


@pytest.mark.parametrize("name", ["unet", "encoder_decoder"])
def test_compiled_forward_matches_model_predict(name, predictor_factory, real_xray_paths):
    pred = predictor_factory(name)
    batch = np.stack([preprocess(read_image_file(p).pixels) for p in real_xray_paths])
    ref = pred.model.predict(batch, verbose=0)[..., CONFIG.fracture_channel]
    got = pred.forward(batch)
    assert got.shape == (len(real_xray_paths), S, S) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    # One image at a time (the app's path) gives the same numbers as the batch.
    single = np.concatenate([pred.forward(batch[i : i + 1]) for i in range(len(batch))])
    np.testing.assert_allclose(single, ref, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_xla_option_matches_too(predictor_factory, real_xray_paths):
    pred = predictor_factory("unet")
    xla = Predictor(pred.model, "unet", jit_compile=True)
    batch = preprocess(read_image_file(real_xray_paths[0]).pixels)[None]
    np.testing.assert_allclose(xla.forward(batch), pred.model.predict(batch, verbose=0)[..., 1], atol=1e-4, rtol=0)


def test_findings_two_blobs_one_below_threshold():
    prob = np.zeros((60, 100), np.float32)
    prob[10:20, 30:45] = 0.7  # kept: 10 rows x 15 cols
    prob[12, 40] = 0.9  # its peak
    prob[40:50, 5:25] = 0.45  # below 0.5: not a finding
    found = find_findings(prob, 0.5, min_area_px=1)
    assert len(found) == 1
    f = found[0]
    assert f.index == 1 and f.box == (30, 10, 45, 20) and f.area_px == 150
    assert f.score == pytest.approx(0.9)
    # At 0.4 both count, sorted by score: the 0.9 blob first.
    found = find_findings(prob, 0.4, min_area_px=1)
    assert [f.box for f in found] == [(30, 10, 45, 20), (5, 40, 25, 50)]
    assert [f.index for f in found] == [1, 2]
    assert found[1].score == pytest.approx(0.45) and found[1].area_px == 200


def test_findings_drop_specks_and_empty_map():
    prob = np.zeros((256, 256), np.float32)
    prob[100, 100] = 0.99  # 1 px < min_finding_area_px at model resolution
    assert find_findings(prob, 0.5) == []
    assert find_findings(np.zeros((30, 40), np.float32), 0.5) == []


def test_boxes_in_original_coordinates_non_square():
    # 300 wide x 120 high: x and y scale differently (256/300 vs 256/120).
    img = np.zeros((120, 300), np.uint8)
    img[30:60, 200:260] = 255
    result = predict_image(BrightnessPredictor(), img, 0.5)
    assert (result.height, result.width) == (120, 300)
    assert len(result.findings) == 1
    x0, y0, x1, y1 = result.findings[0].box
    # Bilinear up/down-sampling blurs the edge by about one model pixel (1.2 px in x, 0.5 px in y).
    assert abs(x0 - 200) <= 2 and abs(x1 - 260) <= 2 and abs(y0 - 30) <= 1 and abs(y1 - 60) <= 1
    assert result.fracture_score == pytest.approx(1.0, abs=1e-3)


def test_predict_images_batches_like_single(predictor_factory, real_xray_paths):
    pred = predictor_factory("encoder_decoder")
    imgs = [read_image_file(p).pixels for p in real_xray_paths[:4]]
    batched = predict_images(pred, imgs, 0.5, batch_size=3)
    for img, b in zip(imgs, batched, strict=True):
        s = predict_image(pred, img, 0.5)
        assert b.prob.shape == img.shape[:2]
        np.testing.assert_allclose(b.prob, s.prob, atol=1e-4)


def test_analyse_image_end_to_end(predictor_factory, real_xray_paths):
    pred = predictor_factory("unet")
    pixels = read_image_file(real_xray_paths[0]).pixels
    result, overlay = analyse_image(pred, pixels, 0.5)
    assert overlay.shape == (*pixels.shape[:2], 3) and overlay.dtype == np.uint8
    assert result.prob.dtype == np.float32 and 0.0 <= result.prob.min() and result.prob.max() <= 1.0
    d = result_to_dict(result, "x.jpg", "unet")
    assert set(d) == {"file", "model", "width", "height", "threshold", "fracture_score", "image_score_name", "image_score",
                      "findings", "unlike_training_images", "ood_distance", "ood_threshold", "error"}
    assert set(result_to_dict(None, "bad.jpg", "unet", "bad.jpg: truncated")) == set(d)  # a failed file: same keys
    assert all(set(f) == {"box", "score", "peak", "area_px"} and f["peak"] >= f["score"] for f in d["findings"])


def test_overlay_marks_only_the_mask():
    gray = np.full((50, 80), 100, np.uint8)
    prob = np.zeros((50, 80), np.float32)
    prob[10:20, 10:30] = 0.9
    res = PredictionResult(prob, 0.5, find_findings(prob, 0.5, min_area_px=1))
    rgb = render_overlay(gray, res)
    assert tuple(rgb[45, 70]) == (100, 100, 100)  # untouched outside
    r, g, b = (int(v) for v in rgb[15, 20])
    assert r > 100 and g < 100 and b < 100  # tinted red inside


def test_mask_and_overlay_show_only_findings_not_specks():
    """A speck above threshold but below the minimum area is neither a finding nor marked,
    so the mask PNG, the outline and the numbered boxes agree."""
    gray = np.full((256, 256), 100, np.uint8)
    prob = np.zeros((256, 256), np.float32)
    prob[40:60, 40:70] = 0.9  # a finding (600 px)
    prob[200, 200] = 0.95  # a 1-px speck
    res = PredictionResult(prob, 0.5, find_findings(prob, 0.5))
    assert [f.box for f in res.findings] == [(40, 40, 70, 60)]
    mask = res.mask()
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    assert int((mask > 0).sum()) == 600 and mask[200, 200] == 0
    rgb = render_overlay(gray, res)
    assert tuple(rgb[200, 200]) == (100, 100, 100)
    empty = PredictionResult(np.zeros((30, 40), np.float32), 0.5, [])
    assert not empty.mask().any()
    assert (render_overlay(np.full((30, 40), 7, np.uint8), empty) == 7).all()


# --------------------------------------------------------------------------- the one loop
def test_loop_turns_any_per_file_exception_into_that_files_error_and_keeps_order():
    from imaging.image_io import ImageLoadError
    from prediction import Source, iter_predictions

    good = np.zeros((64, 80), np.uint8)
    good[10:30, 20:50] = 255

    def boom():
        raise RuntimeError("decoder bug\nsecond line")

    def bad_file():
        raise ImageLoadError("bad.jpg: truncated")

    sources = [
        Source("a.png", lambda: good, "a"),
        Source("boom.dcm", boom, "boom"),
        Source("bad.jpg", bad_file, "bad"),
        Source("4d.dcm", lambda: np.zeros((2, 3, 40, 40), np.uint16), "4d"),  # preprocessing fails in the batch
        Source("b.png", lambda: good, "b"),
    ]
    out = list(iter_predictions(BrightnessPredictor(), sources, 0.5, batch_size=2, workers=1))
    assert [o.tag for o in out] == ["a", "boom", "bad", "4d", "b"]
    assert out[0].result is not None and out[4].result is not None and len(out[4].result.findings) == 1
    assert out[1].error.startswith("boom.dcm: cannot be read (RuntimeError") and "\n" not in out[1].error
    assert out[2].error == "bad.jpg: truncated"
    assert out[3].error.startswith("4d.dcm: analysis failed") and out[3].result is None
    assert all((o.error is None) == (o.result is not None) for o in out)


def test_components_run_once_per_result(monkeypatch):
    import cv2

    from inference import results

    prob = np.zeros((60, 60), np.float32)
    prob[10:30, 10:30] = 0.9
    calls = []
    real = cv2.connectedComponentsWithStats
    monkeypatch.setattr(results.cv2, "connectedComponentsWithStats", lambda *a, **k: calls.append(1) or real(*a, **k))
    res = PredictionResult.from_prob(prob, 60, 60, 0.5)
    res.mask(), res.overlay(np.zeros((60, 60), np.uint8)), res.to_dict("x", "unet"), res.mask_png()
    assert len(calls) == 1
    assert res.with_threshold(0.5) is res and len(calls) == 1
    assert res.with_threshold(0.95).findings == [] and len(calls) == 2
