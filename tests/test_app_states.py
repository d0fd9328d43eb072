"""Readings in the app (AppTest): the three result states, the calibrated likelihood, state that
lasts across pages, per-model thresholds, the compare view, the DICOM export and the loading progress.

These tests replace the model loader with a stand-in whose probability map is known (a
square of score ``PEAK``), so each state is reached on purpose and no TensorFlow model is
loaded; the real models are exercised by tests/test_app_pages.py. Each test clears
Streamlit's resource cache before and after, so the real model pool is rebuilt for others.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from important_variables import CONFIG, DEFAULT_MODEL, MODEL_LABELS, MODEL_NAMES

pytestmark = pytest.mark.slow  # runs the app (AppTest)

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT = 120
PEAK = {"unet": 0.75, "encoder_decoder": 0.55, "lite0_unet": 0.5, "ensemble": 0.6}  # the stand-ins' highest score per model


class StubPredictor:
    """Fixed-size forward pass: a 24x24 square of score PEAK in the middle of a 256x256 map."""

    def __init__(self, name: str, delay_s: float = 0.0):
        self.name, self.peak = name, PEAK[name]
        time.sleep(delay_s)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        prob = np.full((len(batch), 256, 256), 0.02, np.float32)
        prob[:, 116:140, 116:140] = self.peak
        return prob


@pytest.fixture
def stub_models(monkeypatch):
    import streamlit as st

    from ui import page_dashboard

    monkeypatch.setattr(page_dashboard, "load_predictor", lambda name: StubPredictor(name))
    st.cache_resource.clear()
    yield page_dashboard
    st.cache_resource.clear()


@pytest.fixture
def manifest_dir(tmp_path, monkeypatch):
    """A Saved_model copy (manifest + metrics) in a temp dir that the pages read instead of the shipped one."""
    from inference import manifest as manifest_module
    from ui import page_models

    d = tmp_path / "Saved_model"
    d.mkdir()
    for name in MODEL_NAMES:
        if CONFIG.metrics_path(name).is_file():
            shutil.copy(CONFIG.metrics_path(name), d)
    manifest = json.loads(CONFIG.manifest_path.read_text(encoding="utf-8"))
    # Start from the shipped entries without what the valid-split choice adds (margin,
    # calibration, image score, finding rule, inference scale): each test sets what it checks.
    for entry in manifest["models"].values():
        for key in ("borderline_margin", "borderline_criterion", "calibration", "image_score", "findings", "inference"):
            entry.pop(key, None)
    config = replace(CONFIG, saved_model_dir=d)
    for module in (manifest_module, page_models):
        monkeypatch.setattr(module, "CONFIG", config)

    def write(**per_model):
        for name, changes in per_model.items():
            manifest["models"][name].update(changes)
        (d / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")

    write()
    return write


def png_bytes(side: int = 300) -> bytes:
    """A synthetic grey test picture (not an X-ray, not from any data set)."""
    yy, xx = np.mgrid[0:side, 0:side]
    buf = io.BytesIO()
    Image.fromarray(((xx + yy) % 256).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def dashboard():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.button(key="home_to_dashboard").click().run()
    assert not at.exception and at.title[0].value == "Dashboard"
    return at


def upload(at, *files):
    at.file_uploader(key="uploads").set_value([(n, d, "application/octet-stream") for n, d in files]).run()
    assert not at.exception, at.exception
    return at


def badges(at) -> list[str]:
    return [m.value for m in at.markdown if "Possible fracture" in m.value]


def no_findings(at) -> list[str]:
    """The neutral no-finding readings (a grey badge, never a green box)."""
    return [m.value for m in at.markdown if m.value.startswith(":gray-badge[") and "No finding" in m.value]


def everything(at) -> str:
    """All text the page shows (to check that no all-clear wording appears anywhere)."""
    parts = [e.value for kind in ("markdown", "caption", "success", "info", "warning", "error") for e in getattr(at, kind)]
    return " ".join(str(p) for p in parts)


def captions(at) -> list[str]:
    return [i.proto.imgs[0].caption for i in at.image]


# --------------------------------------------------------------------------- states
def test_three_states_finding_borderline_and_neutral_no_finding(stub_models, manifest_dir):
    points = {"split": "valid", "fractured_images": 82, "negative_images": 318, "rows": [
        {"threshold": 0.8, "sensitivity": 0.74, "false_findings_per_negative": 0.31},
        {"threshold": 0.9, "sensitivity": 0.55, "false_findings_per_negative": 0.12}]}
    manifest_dir(unet={"threshold": 0.8, "borderline_margin": 0.1, "operating_points": points})
    at = upload(dashboard(), ("synthetic.png", png_bytes()))
    at.radio(key="model").set_value("unet").run()
    # Highest score 0.75, threshold 0.80, margin 0.10: no finding, but close → borderline, not green.
    assert not at.success and not badges(at)
    assert len(at.warning) == 1 and "Borderline" in at.warning[0].value and "0.750" in at.warning[0].value
    assert "Review this area" in at.warning[0].value
    at.slider(key="threshold_unet").set_value(0.7).run()  # now the square is a finding
    assert not at.warning and len(badges(at)) == 1 and "1 finding(s)" in badges(at)[0]
    table = at.dataframe[0].value
    assert table["peak score (reached the threshold)"].tolist() == [0.75]
    assert table["ranking score (region peak)"].tolist() == [0.75]
    at.slider(key="threshold_unet").set_value(0.9).run()  # 0.75 < 0.90 - 0.10: no finding, shown neutrally
    assert not at.warning and not badges(at) and not at.success  # nothing green
    assert len(no_findings(at)) == 1 and "No finding at threshold 0.90 (highest score anywhere 0.750)" in no_findings(at)[0]
    # Beside the neutral reading: how often this threshold left a fractured validation X-ray unmarked.
    assert "At 0.90 this model left 45% of the fractured validation X-rays without any finding" in everything(at)
    assert "No fracture found" not in everything(at) and "clean" not in everything(at).lower()
    manifest_dir(unet={"operating_points": None})
    at.run()
    assert len(no_findings(at)) == 1 and not at.success and "without any finding" not in everything(at)
    assert "misses at this threshold is not recorded" in everything(at)


def test_borderline_spot_is_marked_on_the_overlay(stub_models, manifest_dir):
    manifest_dir(unet={"threshold": 0.8, "borderline_margin": 0.1})
    at = upload(dashboard(), ("synthetic.png", png_bytes()))
    at.radio(key="model").set_value("unet").run()
    key = next(iter(at.session_state["_analyses"]))
    result = at.session_state["_analyses"][key]["results"]["unet"]
    from ui.result_ui import render_ui

    entry = at.session_state["_analyses"][key]
    settings = type("S", (), {"opacity": 0.35, "show_heatmap": False, "window": (0.5, 1.0), "style": "filled"})()
    with_spot = render_ui(entry["image"], result, settings, margin=0.1)
    without = render_ui(entry["image"], result, settings, margin=0.0)
    amber = np.all(with_spot == (245, 184, 46), axis=-1)
    assert amber.sum() > 20 and not np.all(without == (245, 184, 46), axis=-1).any()
    ys, xs = np.nonzero(amber)  # around the square (256-px map → 300-px image: 136..164)
    assert 120 <= xs.min() <= 140 and 160 <= xs.max() <= 180


# --------------------------------------------------------------------------- likelihood
def test_calibrated_likelihood_is_shown_and_scores_are_called_scores(stub_models, manifest_dir):
    cal = {"method": "isotonic", "x": [0.1, 0.5, 1.0], "y": [0.05, 0.25, 0.85], "n": 400, "fitted_on": "valid"}
    manifest_dir(unet={"threshold": 0.7, "calibration": cal, "image_score": "max_prob"})
    at = upload(dashboard(), ("synthetic.png", png_bytes()))
    at.radio(key="model").set_value("unet").run()
    # max_prob 0.75 → 0.25 + (0.25 / 0.5) x 0.60 = 0.55 → "≈ 55 %", with what it is calibrated on.
    assert "highest score 0.750" in badges(at)[0]
    text = everything(at)
    assert "Fracture likelihood ≈ 55 % (calibrated on FracAtlas validation X-rays" in text
    assert "not checked on X-rays from other sources" in text
    assert "probability" not in badges(at)[0].lower()
    assert "peak score (reached the threshold)" in at.dataframe[0].value.columns
    # The other model has no calibration in this manifest: it says so instead of inventing a number.
    at.radio(key="model").set_value("encoder_decoder").run()
    shown = everything(at)
    assert "not calibrated" in shown and "≈" not in shown


def test_likelihood_is_floored_at_5_and_capped_at_95_percent(stub_models, manifest_dir):
    low = {"method": "isotonic", "x": [0.0, 1.0], "y": [0.0, 0.01], "n": 400, "n_positive": 80, "fitted_on": "valid"}
    manifest_dir(unet={"threshold": 0.9, "borderline_margin": 0.0, "calibration": low, "image_score": "max_prob"})
    at = upload(dashboard(), ("synthetic.png", png_bytes()))
    at.radio(key="model").set_value("unet").run()
    text = everything(at)
    assert "Fracture likelihood < 5 %" in text and "0 %" not in text and "≈" not in text
    high = {**low, "y": [0.99, 1.0]}
    manifest_dir(unet={"calibration": high})
    at.run()
    text = everything(at)
    assert "Fracture likelihood > 95 %" in text and "100 %" not in text


def test_models_page_reliability_diagram_with_and_without_calibration(stub_models, manifest_dir):
    from streamlit.testing.v1 import AppTest

    if not CONFIG.metrics_path("unet").is_file():
        pytest.skip("no shipped metrics to compute the reliability on")
    cal = {"method": "isotonic", "x": [0.0, 0.5, 0.9, 1.0], "y": [0.05, 0.1, 0.3, 0.6], "n": 400, "fitted_on": "valid"}
    manifest_dir(unet={"calibration": cal, "image_score": "max_prob"})
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.button(key="home_to_models").click().run()
    assert not at.exception
    table = at.dataframe[0].value
    row = table[table["metric"] == "Calibration error (ECE) of the likelihood"].iloc[0]
    assert row["Simple encoder-decoder"] == "not calibrated"
    ece = float(row["U-Net"])
    # The same number, computed here from the metrics' per-image scores.
    from inference.calibration import apply_calibration, expected_calibration_error

    per_image = json.loads(CONFIG.metrics_path("unet").read_text())["per_image"]
    # The score the manifest names (max_prob); the metrics' fracture_score is the shipped model's chosen one.
    probs = apply_calibration(np.array([r.get("image_scores", {}).get("max_prob", r["fracture_score"]) for r in per_image]), cal)
    assert ece == pytest.approx(expected_calibration_error(probs, [int(r["fractured"]) for r in per_image]), abs=6e-4)
    assert any("Not calibrated yet" in i.value for i in at.info)  # for the encoder-decoder
    assert any(f"ECE of the likelihood: {ece:.3f}" in c.value for c in at.caption)
    assert len(at.get("imgs")) >= 0  # pyplot figures render as images without error


# --------------------------------------------------------------------------- state that lasts
def test_uploads_results_and_settings_survive_dashboard_models_dashboard(stub_models, manifest_dir):
    at = upload(dashboard(), ("a.png", png_bytes(300)), ("b.png", png_bytes(280)))
    at.radio(key="model").set_value("encoder_decoder").run()
    at.slider(key="threshold_encoder_decoder").set_value(0.42).run()
    at.radio(key="overlay_style").set_value("outline").run()
    at.slider(key="opacity").set_value(0.6).run()
    at.toggle(key="show_heatmap").set_value(True).run()
    at.slider(key="window_center").set_value(0.4).run()
    before = captions(at)
    assert before.count("Simple encoder-decoder, threshold 0.42") == 2
    results = {k: v["results"]["encoder_decoder"] for k, v in at.session_state["_analyses"].items()}

    at.button(key="dashboard_to_models").click().run()
    assert at.title[0].value == "Models" and not at.exception
    at.button(key="models_to_dashboard").click().run()
    assert at.title[0].value == "Dashboard" and not at.exception

    assert captions(at) == before  # both uploads and their results are back, no re-upload
    assert at.radio(key="model").value == "encoder_decoder"
    assert at.slider(key="threshold_encoder_decoder").value == pytest.approx(0.42)
    assert at.radio(key="overlay_style").value == "outline" and at.slider(key="opacity").value == pytest.approx(0.6)
    assert at.toggle(key="show_heatmap").value is True and at.slider(key="window_center").value == pytest.approx(0.4)
    # The results are the very objects computed before: the model did not run again.
    assert {k: v["results"]["encoder_decoder"] for k, v in at.session_state["_analyses"].items()} == results
    assert any("earlier uploads of this session" in c.value for c in at.caption)
    # Uploads are bytes in session memory; "Forget all" drops them and their results.
    assert all(isinstance(v["data"], bytes) for v in at.session_state["_files"].values())
    at.button(key="forget_uploads").click().run()
    assert not at.exception and len(at.image) == 0 and at.session_state["_analyses"] == {}


def test_each_model_keeps_its_own_threshold(stub_models, manifest_dir):
    manifest_dir(unet={"threshold": 0.8}, encoder_decoder={"threshold": 0.65})
    at = upload(dashboard(), ("synthetic.png", png_bytes()))
    at.radio(key="model").set_value("unet").run()
    at.slider(key="threshold_unet").set_value(0.5).run()
    at.radio(key="model").set_value("encoder_decoder").run()
    assert at.slider(key="threshold_encoder_decoder").value == pytest.approx(0.65)  # its own default
    at.slider(key="threshold_encoder_decoder").set_value(0.3).run()
    at.radio(key="model").set_value("unet").run()
    assert at.slider(key="threshold_unet").value == pytest.approx(0.5)  # not back to 0.80
    assert captions(at)[1] == "U-Net, threshold 0.50"
    at.radio(key="model").set_value("encoder_decoder").run()
    assert at.slider(key="threshold_encoder_decoder").value == pytest.approx(0.3)


# --------------------------------------------------------------------------- compare
def test_compare_view_shows_every_model_with_its_findings(stub_models, manifest_dir):
    manifest_dir(unet={"threshold": 0.7, "borderline_margin": 0.1}, encoder_decoder={"threshold": 0.8, "borderline_margin": 0.1},
                 lite0_unet={"threshold": 0.8, "borderline_margin": 0.1}, ensemble={"threshold": 0.9, "borderline_margin": 0.1})
    at = upload(dashboard(), ("one.png", png_bytes()), ("two.png", png_bytes(260)))
    at.radio(key="view_mode").set_value("compare").run()
    assert not at.exception and not at.error
    lite0, ensemble = MODEL_LABELS["lite0_unet"], MODEL_LABELS["ensemble"]
    per_upload = ["U-Net, threshold 0.70", "Simple encoder-decoder, threshold 0.80", f"{lite0}, threshold 0.80",
                  f"{ensemble}, threshold 0.90"]
    assert captions(at) == ["Input, 300x300 px", *per_upload, "Input, 260x260 px", *per_upload]
    # Per upload: the U-Net (0.75 ≥ 0.70) has a finding, the encoder-decoder (0.55 < 0.80 - 0.10), the
    # Lite0-UNet (0.50) and the ensemble (0.60 < 0.90 - 0.10) have none.
    assert len(badges(at)) == 2 and len(at.dataframe) == 2 and len(no_findings(at)) == 6 and not at.success
    # The compare view has the downloads too: one labelled row per model and upload.
    labels = [b.label for b in at.get("download_button")]
    for model in ("U-Net", "Simple encoder-decoder", lite0, ensemble):
        for what in ("Annotated PNG", "Findings JSON", "Mask PNG"):
            assert labels.count(f"{what} ({model})") == 2, labels
    # Every threshold is in the sidebar and each moves only its own model.
    at.slider(key="threshold_encoder_decoder").set_value(0.5).run()
    assert len(badges(at)) == 4 and len(no_findings(at)) == 4
    assert at.slider(key="threshold_unet").value == pytest.approx(0.7)
    at.radio(key="view_mode").set_value("single").run()
    assert len(at.image) == 4 and at.radio(key="model").value in MODEL_LABELS


# --------------------------------------------------------------------------- loading, DICOM
def test_loading_progress_is_shown_while_the_model_loads(monkeypatch):
    import threading

    import streamlit as st

    from ui import page_dashboard

    uploading = threading.Event()

    def slow_loader(name):  # still loading for 1.5 s after the upload starts, however slow the runs before it
        uploading.wait(60)
        return StubPredictor(name, delay_s=1.5)

    monkeypatch.setattr(page_dashboard, "load_predictor", slow_loader)
    monkeypatch.setattr(page_dashboard, "EXPECTED_LOAD_S", 3.0)
    st.cache_resource.clear()
    try:
        at = dashboard()
        uploading.set()
        upload(at, ("synthetic.png", png_bytes()))
        assert [s.label for s in at.status] == [f"{MODEL_LABELS[DEFAULT_MODEL]} model ready"]  # the default loads first
        assert len(at.image) == 2
        upload(at, ("other.png", png_bytes(200)))  # ready now: no progress any more
        assert len(at.status) == 0
    finally:
        uploading.set()
        st.cache_resource.clear()


def test_dicom_upload_offers_a_secondary_capture(stub_models, manifest_dir):
    from tests.test_dicom_export import source_dicom

    at = upload(dashboard(), ("study.dcm", source_dicom(96, 80)), ("plain.png", png_bytes()))
    assert not at.error, [e.value for e in at.error]
    labels = [b.label for b in at.get("download_button")]
    assert labels.count("DICOM (Secondary Capture)") == 1 and labels.count("Annotated PNG") == 2


# --------------------------------------------------------------------------- uploads: order and removal
def subheaders(at) -> list[str]:
    return [h.value.replace("\\", "") for h in at.main.subheader]


def test_new_uploads_appear_on_top_and_earlier_ones_can_be_removed_one_by_one(stub_models, manifest_dir):
    at = dashboard()
    upload(at, ("first.png", png_bytes(300)))
    at = upload(at, ("first.png", png_bytes(300)), ("second.png", png_bytes(280)))
    assert subheaders(at) == ["second.png", "first.png"]  # the latest upload first
    at.button(key="dashboard_to_models").click().run()
    at.button(key="models_to_dashboard").click().run()
    assert subheaders(at) == ["second.png", "first.png"]
    # Back with an empty uploader: the earlier uploads are listed, without an "as well".
    note = [c.value for c in at.caption if "earlier upload" in c.value]
    assert note == ["2 earlier uploads of this session, kept in memory only; their results are below."]
    assert "as well" not in everything(at)
    listed = [m.value.replace("\\", "") for m in at.markdown if m.value.startswith(":material/draft:")]
    assert listed == [":material/draft: second.png", ":material/draft: first.png"]
    from ui.support import content_hash

    at.button(key=f"forget_{content_hash(png_bytes(300))[:16]}").click().run()
    assert not at.exception and subheaders(at) == ["second.png"]
    assert [c.value for c in at.caption if "earlier upload" in c.value] == [
        "1 earlier upload of this session, kept in memory only; their results are below."]
    assert len(at.session_state["_analyses"]) == 1
    # A new upload next to an earlier one: on top, and the note says the earlier ones follow.
    at = upload(at, ("third.png", png_bytes(260)))
    assert subheaders(at) == ["third.png", "second.png"]
    assert any("below the new ones" in c.value for c in at.caption)


# --------------------------------------------------------------------------- "unlike the training images"
class FeaturePredictor(StubPredictor):
    """The stand-in with features and a fitted check: every image's features are far from the fit."""

    def __init__(self, name: str):
        super().__init__(name)
        from inference.ood import fit_ood

        rng = np.random.default_rng(0)
        near = np.abs(rng.normal(1.0, 0.05, (40, 6)))
        self.ood = fit_ood(near, np.abs(rng.normal(1.0, 0.05, (30, 6))), "stub_layer", components=3)
        self.feature_layer = "stub_layer"

    def predict_maps(self, images):
        from prediction import fixed_size_probs

        return [(p, np.full(6, 40.0, np.float32)) for p in fixed_size_probs(self.forward, images)]


def test_unlike_the_training_images_is_a_warning_that_hides_nothing(monkeypatch, manifest_dir):
    import streamlit as st

    from ui import page_dashboard

    monkeypatch.setattr(page_dashboard, "load_predictor", lambda name: FeaturePredictor(name))
    st.cache_resource.clear()
    try:
        manifest_dir(unet={"threshold": 0.7, "ood": {"false_alarm_target": 0.05}})
        at = upload(dashboard(), ("photo.png", png_bytes()))
        at.radio(key="model").set_value("unet").run()
        warnings = [w.value for w in at.warning if w.value.startswith("Unlike the training images")]
        assert len(warnings) == 1 and "5% of the FracAtlas validation X-rays exceed" in warnings[0]
        assert len(badges(at)) == 1 and len(at.dataframe) == 1  # the finding is still shown, unchanged
        result = next(iter(at.session_state["_analyses"].values()))["results"]["unet"]
        assert result.ood.unlike and len(result.findings) == 1
    finally:
        st.cache_resource.clear()


# --------------------------------------------------------------------------- app JSON = predict.py JSON
def test_app_findings_json_has_the_keys_of_predict_py(stub_models, manifest_dir, monkeypatch, tmp_path):
    import predict
    from ui import support

    records = []
    original = support.findings_json
    monkeypatch.setattr(support, "findings_json", lambda rec: records.append(rec) or original(rec))
    manifest_dir(unet={"threshold": 0.8, "borderline_margin": 0.1})
    at = upload(dashboard(), ("synthetic.png", png_bytes()))
    at.radio(key="model").set_value("unet").run()
    app = records[-1]
    assert app["status"] == "borderline" and app["review_box"] and app["note"] is None and "reading" in app
    path = tmp_path / "synthetic.png"
    path.write_bytes(png_bytes())
    cli = predict.run([path], StubPredictor("unet"), "unet", 0.8, None, progress=False,
                      entry={"threshold": 0.8, "borderline_margin": 0.1})[0]
    assert set(app) == set(cli)
    assert {k: v for k, v in app.items() if k != "file"} == {k: v for k, v in cli.items() if k != "file"}
