"""evaluate.py: the CLI end to end on a few real images, an all-background dummy model,
the threshold sweep on hand-made probability maps, and the refused option combinations."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

import evaluate
from evaluation import cases as ev_cases
from evaluation import definitions as ev_definitions
from evaluation import evaluator as ev_evaluator
from evaluation import report as ev_report
from evaluation import scoring as ev_scoring
from evaluation import ship as ev_ship
from evaluation import thresholds as ev_thresholds
from fracture.dataset import Instance, Record
from important_variables import CONFIG
from prediction import PredictionResult, find_findings

pytestmark = pytest.mark.slow  # runs evaluations end to end

# Every top-level field and every section field a report must have (written out here,
# not taken from evaluate.REPORT_KEYS, so that dropping one from the code fails).
TOP_FIELDS = {
    "model", "model_label", "model_file", "model_sha256", "split", "data_dir", "date", "command", "limit",
    "threshold", "threshold_source", "settings", "counts", "segmentation", "localization", "image_level",
    "intervals", "pixel_accuracy", "by_body_part", "threshold_choice", "timing", "definitions", "per_image",
}
SECTION_FIELDS = {
    "counts": {"fractured_images", "negative_images", "annotated_fractures", "skipped_unreadable", "skipped_files"},
    "segmentation": {"dice_mean", "dice_median", "iou_mean", "iou_median", "n_images"},
    "localization": {"ap50", "ap25", "recall50_at_threshold", "recall25_at_threshold", "precision50_at_threshold",
                     "precision25_at_threshold", "n_annotated_boxes", "n_findings"},
    "image_level": {"roc_auc", "sensitivity", "specificity", "false_findings_per_negative_image",
                    "findings_per_fractured_image", "n_fractured", "n_negative"},
    "timing": {"inference_s", "total_s", "images_per_s"},
    "intervals": {"method", "metrics"},
    "settings": {"scale", "tta", "findings_rule", "image_score", "precision"},
}
UNIT_INTERVAL = [
    ("segmentation", "dice_mean"), ("segmentation", "dice_median"), ("segmentation", "iou_mean"),
    ("segmentation", "iou_median"), ("localization", "ap50"), ("localization", "ap25"),
    ("localization", "recall50_at_threshold"), ("localization", "recall25_at_threshold"),
    ("image_level", "roc_auc"), ("image_level", "sensitivity"), ("image_level", "specificity"),
]


def _background_model():
    """A tiny Keras model whose softmax says "background" (p_fracture ≈ 3e-4) everywhere."""
    import keras

    inp = keras.Input((CONFIG.input_size, CONFIG.input_size, CONFIG.input_channels))
    out = keras.layers.Conv2D(
        2, 1, activation="softmax", kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant([4.0, -4.0]),
    )(inp)
    return keras.Model(inp, out)


# --------------------------------------------------------------------------- end to end, real images
def test_cli_end_to_end_on_4_fractured_and_4_negative_images(data_dir, tmp_path, capsys):
    out = tmp_path / "reports"
    code = evaluate.main(["--model", "unet", "--split", "test", "--limit", "4", "--data", str(data_dir),
                          "--out", str(out), "--no-progress"])
    assert code == 0
    assert "| box AP@50 |" in capsys.readouterr().out  # the markdown table on stdout
    for suffix in (".json", ".md", "_pr.png", "_roc.png", "_grid.png"):
        path = out / f"unet_test{suffix}"
        assert path.is_file() and path.stat().st_size > 0, path
    report = json.loads((out / "unet_test.json").read_text())

    assert TOP_FIELDS <= report.keys(), TOP_FIELDS - report.keys()
    for section, fields in SECTION_FIELDS.items():
        assert fields <= report[section].keys(), (section, fields - report[section].keys())
    for scope in ("all_images", "fractured_images"):
        assert {"model", "all_background", "fracture_pixel_share", "n_pixels"} <= report["pixel_accuracy"][scope].keys()

    assert report["model"] == "unet" and report["split"] == "test" and report["limit"] == 4
    assert len(report["model_sha256"]) == 64
    assert report["model_sha256"] == json.loads(CONFIG.manifest_path.read_text())["models"]["unet"]["sha256"]
    assert report["data_dir"] == Path(data_dir).name  # the folder name only: no path of the machine it ran on
    # The report says how its maps were cut: the shipped entry's scale, finding rule and image score.
    entry = json.loads(CONFIG.manifest_path.read_text())["models"]["unet"]
    s = report["settings"]
    assert s["scale"] == (entry.get("inference") or {}).get("scale", "fixed")
    assert s["image_score"] == entry.get("image_score", "max_prob")
    assert s["precision"] in ("float32", "mixed_bfloat16")
    for key, value in (entry.get("findings") or {}).items():
        assert s["findings_rule"][key] == value, key
    c = report["counts"]
    assert c["fractured_images"] + c["skipped_unreadable"] <= 4 and c["fractured_images"] >= 1
    assert c["fractured_images"] + c["negative_images"] + c["skipped_unreadable"] == 8
    assert c["annotated_fractures"] >= c["fractured_images"]
    assert 0.0 < report["threshold"] < 1.0
    for section, key in UNIT_INTERVAL:
        value = report[section][key]
        assert value is not None and 0.0 <= value <= 1.0, (section, key, value)
    assert report["image_level"]["false_findings_per_negative_image"] >= 0
    pa = report["pixel_accuracy"]["all_images"]
    assert 0.0 <= pa["model"] <= 1.0 and 0.9 < pa["all_background"] <= 1.0
    # all-background accuracy is exactly 1 - share of fracture pixels
    assert pa["all_background"] == pytest.approx(1 - pa["fracture_pixel_share"], abs=1e-5)

    assert len(report["per_image"]) == c["fractured_images"] + c["negative_images"]
    for row in report["per_image"]:
        if row["fractured"]:
            assert 0.0 <= row["dice"] <= 1.0 and 0.0 <= row["iou"] <= row["dice"] + 1e-9
        else:
            assert row["dice"] is None and row["n_annotated"] == 0
        assert 0.0 <= row["fracture_score"] <= 1.0
    parts = report["by_body_part"]
    assert set(parts) <= {"hand", "leg", "hip", "shoulder", "mixed", "unknown"}
    assert sum(p["n_fractured"] for p in parts.values()) == c["fractured_images"]
    assert sum(p["n_negative"] for p in parts.values()) == c["negative_images"]
    md = (out / "unet_test.md").read_text()
    assert "pixel accuracy: model vs all-background" in md and "U-Net" in md


def test_all_background_model_gets_dice_zero_and_pixel_accuracy_equal_to_the_baseline(atlas, tmp_path):
    from prediction import Predictor

    predictor = Predictor(_background_model(), "background")
    ev = ev_evaluator.evaluate(predictor, atlas, "test", 0.5, limit=4, progress=False)
    r = ev.report
    assert r["counts"]["fractured_images"] >= 1
    assert r["segmentation"]["dice_mean"] == 0.0 and r["segmentation"]["dice_median"] == 0.0
    assert r["segmentation"]["iou_mean"] == 0.0
    assert r["localization"]["ap50"] == 0.0 and r["localization"]["n_findings"] == 0
    assert r["image_level"]["sensitivity"] == 0.0 and r["image_level"]["specificity"] == 1.0
    assert r["image_level"]["false_findings_per_negative_image"] == 0.0
    assert r["image_level"]["roc_auc"] == 0.5  # every image gets the same score
    # The point: "99.x % pixel accuracy" for a model that finds nothing at all.
    for scope in ("all_images", "fractured_images"):
        pa = r["pixel_accuracy"][scope]
        assert pa["model"] == pa["all_background"]
        assert pa["model"] > 0.99
    written = ev_report.write_report(ev, tmp_path, grid=True)  # plots must cope with no findings
    assert all(p.is_file() for p in written) and len(written) == 5


def test_validator_scores_exactly_like_evaluate(atlas, predictor_factory):
    """The trainer's Validator builds and scores the cases as evaluate() does: the same numbers."""
    from evaluation.validator import Validator

    pred = predictor_factory("encoder_decoder")
    ev = ev_evaluator.evaluate(pred, atlas, "test", 0.5, limit=3, progress=False)
    validator = Validator(atlas, split="test", limit=3)
    got = validator.score(pred, 0.5)
    from_model = validator.score(pred.model, 0.5)  # a trainer hands over its Keras model
    for section in ("segmentation", "localization", "image_level", "pixel_accuracy", "by_body_part", "per_image"):
        assert got[section] == ev.report[section], section
        assert from_model[section] == ev.report[section], section
    assert got["counts"]["fractured_images"] == ev.report["counts"]["fractured_images"] >= 1
    # Given the model's manifest entry, a Keras model is run as evaluate.py runs the shipped one:
    # the entry's finding rule and image score, not the Predictor defaults.
    from inference.manifest import ModelEntry
    from prediction import predictor_for

    entry = ModelEntry("encoder_decoder", {"findings": {"low_ratio": 0.5, "score": "mean"}, "image_score": "topk_mean"})
    ev_entry = ev_evaluator.evaluate(predictor_for(pred.model, "encoder_decoder", entry), atlas, "test", 0.5, limit=3,
                                     progress=False)
    with_entry = Validator(atlas, split="test", limit=3, entry=entry).score(pred.model, 0.5)
    for section in ("segmentation", "localization", "image_level", "per_image"):
        assert with_entry[section] == ev_entry.report[section], section
    assert [r["fracture_score"] for r in with_entry["per_image"]] != [r["fracture_score"] for r in from_model["per_image"]]


# --------------------------------------------------------------------------- threshold choice
def _synthetic_case(image_id: str, fractured: bool, blobs: list[tuple[slice, slice, float]]) -> ev_cases.Case:
    """64x64 case; fractured ones have one annotated square (10..30, 10..30)."""
    prob = np.zeros((64, 64), np.float32)
    for ys, xs, p in blobs:
        prob[ys, xs] = p
    square = np.array([[10, 10], [30, 10], [30, 30], [10, 30]], np.float32)
    instances = (Instance(polygons=(square,), box=(10.0, 10.0, 30.0, 30.0)),) if fractured else ()
    rec = Record(image_id, None, fractured, "valid", "hand", 64, 64, instances)
    return ev_cases.Case(rec, PredictionResult(prob, 0.5, find_findings(prob, 0.5)))


def _synthetic_cases() -> list[ev_cases.Case]:
    # Fractured: the fracture found at p = 0.72 (box IoU 400/441 with the annotation), plus a
    # spurious blob at 0.30. Negative: a spurious blob at 0.40.
    #   t <= 0.30: TP 1, FP 2, FN 0 -> F1 = 2/4 = 0.5
    #   t in (0.30, 0.40]: TP 1, FP 1 -> F1 = 2/3
    #   t in (0.40, 0.72]: TP 1 -> F1 = 1   (ties: the highest such sweep value, 0.70)
    #   t > 0.72: TP 0, FN 1 -> F1 = 0
    frac = _synthetic_case("IMG0000001.jpg", True, [(slice(10, 31), slice(10, 31), 0.72), (slice(50, 55), slice(50, 55), 0.30)])
    neg = _synthetic_case("IMG0000011.jpg", False, [(slice(5, 10), slice(40, 45), 0.40)])
    return [frac, neg]


def test_sweep_and_choice_on_hand_made_probability_maps():
    cases = _synthetic_cases()
    sweep = {round(r["threshold"], 2): r for r in ev_thresholds.sweep_thresholds(cases)}
    assert sweep[0.3]["f1"] == pytest.approx(0.5) and sweep[0.3]["fp"] == 2
    assert sweep[0.4]["f1"] == pytest.approx(2 / 3)
    assert sweep[0.45]["f1"] == 1.0 and sweep[0.7]["f1"] == 1.0
    assert sweep[0.75]["f1"] == 0.0 and sweep[0.75]["fn"] == 1
    assert sweep[0.4]["false_findings_per_negative_image"] == 1.0
    best = ev_thresholds.choose_threshold(list(sweep.values()))
    assert best["threshold"] == pytest.approx(0.70) and best["f1"] == 1.0
    # Scored at the chosen threshold: everything right.
    scored = ev_scoring.score_cases(cases, best["threshold"])
    assert scored["segmentation"]["dice_mean"] > 0.95
    assert scored["localization"]["ap50"] == 1.0
    assert scored["image_level"]["specificity"] == 1.0


def test_choice_refuses_a_threshold_that_finds_nothing():
    nothing = [{"threshold": t, "f1": 0.0} for t in ev_definitions.SWEEP]
    assert ev_thresholds.choose_threshold(nothing) is None
    assert ev_thresholds.choose_threshold([{"threshold": 0.5, "f1": float("nan")}]) is None


def test_threshold_is_written_into_the_manifest_entry_only(tmp_path):
    manifest = tmp_path / "manifest.json"
    shutil.copyfile(CONFIG.manifest_path, manifest)
    before = json.loads(manifest.read_text())
    report = {
        "split": "valid", "threshold": 0.35, "threshold_source": "chosen on valid (test)", "model_sha256": "ab" * 32,
        "date": "2026-01-01T00:00:00+00:00", "counts": {"fractured_images": 82, "negative_images": 321},
        "threshold_choice": {"chosen": 0.35, "value": 0.42},
    }
    ev_thresholds.write_threshold_to_manifest(manifest, "unet", report)
    after = json.loads(manifest.read_text())
    entry = after["models"]["unet"]
    assert entry["threshold"] == 0.35 and entry["threshold_source"] == "chosen on valid (test)"
    crit = entry["threshold_criterion"]
    assert crit["name"] == ev_definitions.CRITERION and crit["value"] == 0.42 and crit["model_sha256"] == "ab" * 32
    old = before["models"]["unet"]
    for key in old.keys() - {"threshold", "threshold_source", "threshold_criterion"}:
        assert entry[key] == old[key], key
    assert after["models"]["encoder_decoder"] == before["models"]["encoder_decoder"]
    with pytest.raises(KeyError):
        ev_thresholds.write_threshold_to_manifest(manifest, "nonexistent", report)


# --------------------------------------------------------------------------- usage errors
@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--model", "unet", "--split", "test", "--choose-threshold"], "only allowed with --split valid"),
        (["--model", "unet", "--split", "valid", "--ship"], "--ship"),
        (["--model", "unet", "--split", "test", "--ship", "--limit", "3"], "--ship"),
        (["--model", "unet", "--split", "valid", "--choose-threshold", "--threshold", "0.3"], "exclude"),
        (["--model", "unet", "--split", "test", "--data", "/nonexistent/FracAtlas"], "dataset.csv"),
    ],
)
def test_refused_combinations_exit_2_with_one_line(argv, needle, capsys, tmp_path):
    assert evaluate.main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing evaluated, nothing written


@pytest.mark.parametrize(
    "argv",
    [
        ["--model", "resnet", "--split", "test"],
        ["--model", "unet", "--split", "train"],
        ["--model", "unet", "--split", "test", "--threshold", "1.5"],
        ["--model", "unet", "--split", "test", "--threshold", "abc"],
        ["--model", "unet", "--split", "test", "--limit", "0"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        evaluate.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("evaluate.py: error:") and len(err.splitlines()) == 1


def test_evaluate_api_refuses_choosing_on_test():
    with pytest.raises(evaluate.UsageError):
        ev_evaluator.evaluate(None, None, "test", 0.5, choose=True)


def test_json_never_holds_nan():
    assert ev_scoring.json_safe({"a": float("nan"), "b": [np.float32(0.5), np.inf], "c": np.int64(3)}) == {
        "a": None, "b": [0.5, None], "c": 3,
    }
    assert not math.isnan(ev_scoring.json_safe(np.float64(0.25)))


def test_ship_copies_the_report_to_saved_model(tmp_path, monkeypatch):
    from important_variables import Config

    saved = tmp_path / "Saved_model"
    monkeypatch.setattr(ev_ship, "CONFIG", Config(saved_model_dir=saved))
    out = tmp_path / "reports"
    out.mkdir()
    written = [out / n for n in ("unet_test.json", "unet_test.md", "unet_test_pr.png", "unet_test_roc.png", "unet_test_grid.png")]
    for i, p in enumerate(written):
        p.write_text(f"content {i}")
    ev = ev_evaluator.Evaluation({"model": "unet"}, [], {})
    shipped = ev_ship.ship(ev, written)
    assert shipped[0] == saved / "unet.metrics.json" and shipped[0].read_text() == "content 0"
    assert sorted(p.name for p in (saved / "report").iterdir()) == sorted(p.name for p in written[1:])


def test_validator_scores_the_current_weights_of_a_training_model(atlas):
    """The Predictor that inference runs with folds the batch norms into a copy of the weights; the
    trainer's Validator must not: it wraps the Keras model once and scores it after every epoch's updates."""
    from create_segmentation_model import build_model
    from evaluation.validator import Validator

    model = build_model("lite0_unet", input_shape=(None, None, 3))
    validator = Validator(atlas, split="test", limit=1)
    before = [r["fracture_score"] for r in validator.score(model, 0.5)["per_image"]]
    head = model.get_layer("output")
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 0, bias + np.array([-3.0, 3.0], np.float32)])  # every pixel now p(fracture) ~ 1
    after = [r["fracture_score"] for r in validator.score(model, 0.5)["per_image"]]
    assert validator._wrapped[0] is model
    assert before != after and min(after) > 0.99
