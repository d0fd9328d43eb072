"""The app in Streamlit's AppTest harness: one test per page, real X-rays, real models.

Uploads go through AppTest's own file_uploader support (``set_value`` registers the
bytes in Streamlit's in-memory upload manager, exactly what the browser upload does
on the server side); tests/test_browser.py does the same through a real Chromium.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from important_variables import CONFIG, MODEL_LABELS, MODEL_NAMES

pytestmark = pytest.mark.slow  # runs the app with both models (AppTest)

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT = 300  # first run imports TensorFlow and loads a model on a busy 2-core machine


def new_app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def open_dashboard():
    at = new_app().run()
    at.button(key="home_to_dashboard").click().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Dashboard"]
    return at


def upload(at, *files: tuple[str, bytes]):
    at.file_uploader(key="uploads").set_value([(name, data, "application/octet-stream") for name, data in files]).run()
    assert not at.exception, at.exception
    return at


def shown_findings(at) -> list:
    """What the findings area shows, per upload: table rows, the borderline note or the neutral no-finding reading."""
    out = [d.value.to_dict("records") for d in at.dataframe]
    out += [w.value for w in at.warning if w.value.startswith("Borderline")]
    out += [m.value.split("] ", 1)[1] for m in at.markdown if m.value.startswith(":gray-badge[") and "No finding" in m.value]
    assert not [s.value for s in at.success if "finding" in s.value.lower()], "a no-finding result must not be green"
    return out


@pytest.fixture(scope="module")
def xray(real_xray_paths) -> tuple[str, bytes]:
    path = Path(real_xray_paths[0])  # a fractured test-split image
    return path.name, path.read_bytes()


# --------------------------------------------------------------------------- Home
def test_home_page_content_and_navigation():
    at = new_app().run()
    assert not at.exception
    assert at.title[0].value == "Bone-fracture localization"
    text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "not a diagnosis" in " ".join(w.value for w in at.warning)
    assert "never stored" in " ".join(s.value for s in at.success)
    assert "FracAtlas" in text and "CC BY 4.0" in text and "Scientific Data 10, 521 (2023)" in text
    assert len(at.image) == 1  # the drawn illustration from assets/
    at.button(key="home_to_models").click().run()
    assert not at.exception and at.title[0].value == "Models"


# --------------------------------------------------------------------------- Models
def test_models_page_renders_with_or_without_metrics():
    at = new_app().run()
    at.button(key="home_to_models").click().run()
    assert not at.exception
    assert at.title[0].value == "Models"
    # Dataframe keys are not exposed by AppTest: metrics first, then one operating-points table per
    # model whose manifest entry records them, then one table per model with a fitted
    # "unlike the training images" check (how often it warned on each set).
    from inference.ood import OodCheck

    frames = [d.value for d in at.dataframe]
    metrics_table = frames[0]
    manifest = json.loads(CONFIG.manifest_path.read_text())["models"]
    recorded = [n for n in MODEL_NAMES if (manifest.get(n) or {}).get("operating_points")]
    checks = {n: OodCheck.from_entry((manifest.get(n) or {}).get("ood"), sha256=(manifest.get(n) or {}).get("sha256"))
              for n in MODEL_NAMES}
    fitted = [n for n in MODEL_NAMES if checks[n] is not None and checks[n].info.get("checks")]
    assert len(frames) == 1 + len(recorded) + len(fitted)
    for table in frames[1 + len(recorded):]:
        assert list(table.columns) == ["images", "n", "warned"]
        assert "FracAtlas valid (the warning level was set here)" in table["images"].tolist()
    for name, table in zip(recorded, frames[1:1 + len(recorded)], strict=True):
        assert len(table) == len(manifest[name]["operating_points"]["rows"])
        assert "fractured X-rays with a finding" in table.columns
        assert sum("(default)" in t for t in table["threshold"]) == 1
    assert {"metric", *(MODEL_LABELS[n] for n in MODEL_NAMES), "n"} == set(metrics_table.columns)
    assert len(metrics_table) == 9  # named metrics, not the raw JSON keys
    # Training facts in words, as a table that wraps instead of cutting cells off; no machine paths,
    # no internal keys, no "trained from scratch" for weights continued from earlier ones.
    facts = [m.value for m in at.markdown if m.value.startswith("| | " + " | ".join(MODEL_LABELS[n] for n in MODEL_NAMES) + " |")]
    assert len(facts) == 1 and "| Parameters |" in facts[0] and "| Minutes of the last run |" in facts[0]
    shown = " ".join([m.value for m in at.markdown] + [c.value for c in at.code] + [c.value for c in at.caption])
    for word in ("evaluated now", "topk_mean", "findings_f1_iou25", "from scratch"):
        assert word not in shown, word
    # no absolute path and no path under a hidden folder (a developer's data or weights folder)
    assert not re.search(r"(?<![\w.:/])/[A-Za-z0-9_.-]+/", shown), re.search(r"(?<![\w.:/])/[A-Za-z0-9_.-]+/", shown)
    assert not re.search(r"(?<![\w.])\.[A-Za-z0-9_-]+/", shown), re.search(r"(?<![\w.])\.[A-Za-z0-9_-]+/", shown)
    evaluated = [n for n in MODEL_NAMES if CONFIG.metrics_path(n).is_file()]
    infos = " ".join(i.value for i in at.info)
    if len(evaluated) < len(MODEL_NAMES):
        assert "Not evaluated yet" in infos
    text = " ".join(m.value for m in at.markdown)
    for name in evaluated:  # one verdict per model, from its numbers
        auc = json.loads(CONFIG.metrics_path(name).read_text())["image_level"]["roc_auc"]
        assert f"ROC-AUC {auc:.2f}" in text
    assert [c.value for c in at.code if "train" in c.value]  # the full training commands
    history_plots = [n for n in MODEL_NAMES if (CONFIG.saved_model_dir / f"{n}.history.png").is_file()]
    assert len(at.image) >= len(history_plots)
    assert "pixel accuracy" in " ".join(m.value for m in at.markdown).lower()


# --------------------------------------------------------------------------- Dashboard
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_dashboard_upload_real_xray_each_model(model, xray):
    at = open_dashboard()
    at.radio(key="model").set_value(model).run()
    upload(at, xray)
    assert not at.error, [e.value for e in at.error]
    assert len(at.image) == 2  # input and result
    assert "threshold" in at.image[1].proto.imgs[0].caption
    assert len(shown_findings(at)) == 1
    assert {b.label for b in at.get("download_button")} == {"Annotated PNG", "Findings JSON", "Mask PNG"}


def test_threshold_changes_findings_without_rerunning_the_model(xray, monkeypatch):
    import prediction

    calls = []
    original = prediction.Predictor.forward_features  # every forward pass goes through it

    def counting_forward(self, batch):
        calls.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(prediction.Predictor, "forward_features", counting_forward)
    at = open_dashboard()
    at.radio(key="model").set_value("unet").run()
    at.slider(key="threshold_unet").set_value(0.01).run()
    upload(at, xray)
    assert calls == [1]
    low = shown_findings(at)
    at.slider(key="threshold_unet").set_value(0.99).run()
    high = shown_findings(at)
    assert not at.exception
    assert calls == [1], "moving the threshold must not run the model again"
    # At 0.01 some region is always marked (softmax output is not ~0 everywhere);
    # the two settings must show different findings.
    assert isinstance(low[0], list) and low[0], low
    assert low != high
    if isinstance(high[0], str):  # no finding (neutral), or borderline when the top score is close to 0.99
        assert high[0].startswith(("No finding at threshold 0.99", "Borderline: no region reached threshold 0.99"))
    else:
        assert sum(r["area (px)"] for r in high[0]) < sum(r["area (px)"] for r in low[0])
    # Switching model and back: one run for the new model, none for the one already seen.
    at.radio(key="model").set_value("encoder_decoder").run()
    at.radio(key="model").set_value("unet").run()
    assert calls == [1, 1]


def test_bad_files_show_one_error_each_and_others_continue(xray):
    name, data = xray
    at = open_dashboard()
    upload(at, ("notes.jpg", b"this is a text file, not a JPEG"), ("empty.png", b""), xray,
           ("cut.jpg", data[: len(data) // 2]))
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 3, errors
    for bad in ("notes", "empty", "cut"):
        assert sum(bad in e for e in errors) == 1, errors
    assert len(at.image) == 2  # the good X-ray still has its input and result
    assert len(shown_findings(at)) == 1


def test_file_name_is_escaped_in_markdown(xray):
    at = open_dashboard()
    upload(at, ("![x](http://example.invalid/p.png).jpg", b"not an image"))
    assert len(at.error) == 1
    assert "![" not in at.error[0].value and "](" not in at.error[0].value
    assert "![" not in at.subheader[0].value


def test_multiframe_note_is_shown(xray):
    first = Image.open(io.BytesIO(xray[1])).convert("L")
    buf = io.BytesIO()
    first.save(buf, format="TIFF", save_all=True, append_images=[first.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    at = open_dashboard()
    upload(at, ("two_frames.png", buf.getvalue()))
    assert not at.error, [e.value for e in at.error]
    assert any("first frame" in i.value for i in at.info)
    assert len(at.image) == 2


def test_model_failing_integrity_shows_error_and_app_stays_up(xray, tmp_path, monkeypatch):
    import shutil

    import streamlit as st

    import create_segmentation_model as csm

    bad_dir = tmp_path / "Saved_model"
    bad_dir.mkdir()
    shutil.copy(CONFIG.manifest_path, bad_dir / "manifest.json")
    blob = bytearray(CONFIG.model_path("unet").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (bad_dir / "unet.keras").write_bytes(bytes(blob))
    # The encoder-decoder sits intact next to it: both load in the background at the first run.
    shutil.copy(CONFIG.model_path("encoder_decoder"), bad_dir / "encoder_decoder.keras")
    monkeypatch.setattr(csm, "CONFIG", replace(CONFIG, saved_model_dir=bad_dir))
    st.cache_resource.clear()  # a good predictor may be cached from an earlier test
    try:
        at = open_dashboard()
        at.radio(key="model").set_value("unet").run()
        upload(at, xray)
        assert not at.exception
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and "does not match the manifest" in errors[0], errors
        assert len(at.image) == 0
        # The app stays up: the sidebar still works and the other model is not affected.
        monkeypatch.setattr(csm, "CONFIG", CONFIG)
        at.radio(key="model").set_value("encoder_decoder").run()
        assert not at.exception and not at.error and len(at.image) == 2
    finally:
        st.cache_resource.clear()


def test_two_sessions_do_not_share_state(xray):
    a, b = open_dashboard(), open_dashboard()
    a.radio(key="model").set_value("unet").run()
    a.slider(key="threshold_unet").set_value(0.2).run()
    b.radio(key="model").set_value("encoder_decoder").run()
    b.slider(key="threshold_encoder_decoder").set_value(0.9).run()
    upload(a, xray)
    upload(b, xray)
    a.run()
    for at, model, thr, label in ((a, "unet", 0.2, "U-Net"), (b, "encoder_decoder", 0.9, "Simple encoder-decoder")):
        assert at.radio(key="model").value == model
        assert at.slider(key=f"threshold_{model}").value == pytest.approx(thr)
        assert at.image[1].proto.imgs[0].caption == f"{label}, threshold {thr:.2f}"
        assert list(at.session_state["_analyses"].values())[0]["results"].keys() == {model}
    # b's threshold change is invisible to a.
    b.slider(key="threshold_encoder_decoder").set_value(0.5).run()
    a.run()
    assert a.image[1].proto.imgs[0].caption == "U-Net, threshold 0.20"
    assert np.isclose(a.slider(key="threshold_unet").value, 0.2)


def _dicom_bytes(gray: np.ndarray, frames: int = 1) -> bytes:
    """A minimal 16-bit MONOCHROME2 DICOM, built in memory from a real X-ray's pixels."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("mem.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "TEST-1", generate_uid(), generate_uid()
    pixels = (gray.astype(np.uint16) * 16)  # 12 bits used of 16
    stack = np.stack([pixels] * frames) if frames > 1 else pixels
    ds.Rows, ds.Columns = gray.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = stack.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_dicom_upload_and_several_files_each_with_their_own_result(xray, real_xray_paths):
    gray = np.asarray(Image.open(io.BytesIO(xray[1])).convert("L"))
    second = Path(real_xray_paths[3])  # a test-split image without fracture
    at = open_dashboard()
    upload(at, ("scan.dcm", _dicom_bytes(gray, frames=2)), (second.name, second.read_bytes()))
    assert not at.error, [e.value for e in at.error]
    assert any("first frame" in i.value for i in at.info)  # the multi-frame note
    assert len(at.image) == 4 and len(shown_findings(at)) == 2
    # PNG, JSON and mask for each; the DICOM upload also gets its Secondary Capture.
    assert len(at.get("download_button")) == 7


def test_sidebar_defaults_and_contrast_reset(xray):
    from inference.manifest import model_entry, model_threshold, read_manifest
    from inference.model_card import threshold_tradeoff

    at = open_dashboard()
    manifest = read_manifest()
    for model in MODEL_NAMES:
        at.radio(key="model").set_value(model).run()
        assert at.slider(key=f"threshold_{model}").value == pytest.approx(round(model_threshold(model, manifest), 2))
        # Under the slider: what this threshold traded on the validation images, when recorded.
        expected = threshold_tradeoff(model_entry(model, manifest).data, at.slider(key=f"threshold_{model}").value)
        captions = [c.value for c in at.sidebar.caption]
        assert (expected in captions) if expected else not any("validation X-rays" in c for c in captions)
    at.radio(key="model").set_value(MODEL_NAMES[0]).run()
    at.slider(key=f"threshold_{MODEL_NAMES[0]}").set_value(0.5).run()
    expected = threshold_tradeoff(model_entry(MODEL_NAMES[0], manifest).data, 0.5)
    assert expected is None or (expected in [c.value for c in at.sidebar.caption] and "at 0.50" in expected)
    at.slider(key="window_center").set_value(0.3).run()
    at.slider(key="window_width").set_value(0.4).run()
    at.toggle(key="show_heatmap").set_value(True).run()
    upload(at, xray)
    assert not at.error and len(at.image) == 3  # input, result and the heatmap's colour legend
    assert "Heatmap: fracture score" in at.image[2].proto.imgs[0].caption
    at.button(key="reset_window").click().run()
    assert not at.exception
    assert at.slider(key="window_center").value == 0.5 and at.slider(key="window_width").value == 1.0


def test_whole_bad_input_corpus_in_one_upload(xray, tmp_path):
    """The bad-input corpus in the app: every corpus file together with a real X-ray in one upload.

    Each "error" case gives exactly one st.error naming the file; each "ok" case (and the
    X-ray) gets its input and result images; no exception escapes.
    """
    from tests.make_bad_corpus import build_corpus

    # The uploader only accepts the app's extensions (a .gif/.tiff is refused by the file
    # picker itself); the multi-frame case is covered by test_multiframe_note_is_shown.
    cases = [c for c in build_corpus(tmp_path / "bad") if Path(c.file).suffix.lower() in CONFIG.image_extensions]
    assert len(cases) >= 15
    files = [(c.file, (tmp_path / "bad" / c.file).read_bytes()) for c in cases]
    at = open_dashboard()
    upload(at, *files, xray)
    assert not at.exception
    errors = [e.value.replace("\\", "") for e in at.error]  # shown markdown-escaped
    bad = [c for c in cases if c.expected == "error"]
    good = [c for c in cases if c.expected == "ok"]
    assert len(errors) == len(bad), errors
    for c in bad:
        hits = [e for e in errors if c.file in e]
        assert len(hits) == 1, (c.file, errors)
        assert c.match in hits[0], (c.match, hits[0])
    assert len(at.image) == 2 * (len(good) + 1)


# --------------------------------------------------------------------------- unlike the training images
def test_a_picture_that_is_not_an_xray_gets_the_warning_with_each_model():
    """A drawn picture (tools/sample_pictures.py, made in memory) through the real models and their
    fitted checks: the plain warning, in words and in the findings JSON; whatever the model marked stays."""
    import sys

    import cv2

    sys.path.insert(0, str(ROOT / "tools"))
    from sample_pictures import synthetic_pictures

    from inference.manifest import model_entry, read_manifest
    from inference.ood import OodCheck

    manifest = read_manifest()
    fitted = [m for m in MODEL_NAMES if OodCheck.from_entry(model_entry(m, manifest).get("ood"),
                                                            sha256=model_entry(m, manifest).sha256) is not None]
    assert fitted, "no shipped model has a fitted check (python tools/fit_ood.py --model NAME)"
    ok, png = cv2.imencode(".png", cv2.cvtColor(synthetic_pictures()["synthetic_02_shapes"], cv2.COLOR_RGB2BGR))
    at = open_dashboard()
    upload(at, ("shapes.png", png.tobytes()))
    for model in fitted:
        at.radio(key="model").set_value(model).run()
        assert not at.exception and not at.error
        warnings = [w.value for w in at.warning if w.value.startswith("Unlike the training images")]
        assert len(warnings) == 1, (model, [w.value for w in at.warning])
        result = next(iter(at.session_state["_analyses"].values()))["results"][model]
        assert result.ood.unlike and result.to_dict("shapes.png", model)["unlike_training_images"] is True
        assert len(at.image) == 2  # the result is shown as usual
