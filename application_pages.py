"""The app's three pages: Home, Dashboard and Models.

Thin UI only: each ``*_ui()`` helper draws widgets and returns what the user chose;
decoding is in ``image_io``, prediction and drawing in ``prediction``, and the small
pure helpers in ``app_support``. Uploads stay in memory (Streamlit keeps them in
RAM, we decode from bytes and never write a file).

Nothing runs at import: Streamlit calls the page functions on each rerun.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

import app_support as sup
from important_variables import CONFIG, MODEL_LABELS, MODEL_NAMES
from model_manifest import ModelIntegrityError, model_threshold, read_manifest_or_empty

MODEL_BLURBS = {
    "unet": "Skip connections carry fine detail from encoder to decoder: sharper outlines.",
    "encoder_decoder": "Same idea without skip connections: a smaller baseline with blurrier masks.",
}

DISCLAIMER = (
    "This tool is a second pair of eyes for people who already read X-rays. It is **not a "
    "diagnosis** and not a medical device: a missed fracture or a false mark is possible on "
    "every image."
)
PRIVACY = "Images are processed in memory and never stored: nothing you upload is written to disk or kept after you leave."
CREDIT = (
    "Models trained on **FracAtlas**: Abedeen et al., *FracAtlas: A Dataset for Fracture "
    "Classification, Localization and Segmentation of Musculoskeletal Radiographs*, "
    "Scientific Data 10, 521 (2023), doi:10.1038/s41597-023-02432-4. Data licensed "
    "[CC BY 4.0](https://creativecommons.org/licenses/by/4.0/)."
)

# Session-state keys (widget keys are explicit so tests and callbacks can address them).
K_MODEL = "model"
K_OPACITY = "opacity"
K_CENTER = "window_center"
K_WIDTH = "window_width"
K_HEATMAP = "show_heatmap"
K_UPLOADS = "uploads"
K_ANALYSES = "_analyses"  # content hash → decoded image and probability maps per model
WINDOW_DEFAULT = (0.5, 1.0)  # centre, width in [0, 1] units: the identity window


def threshold_key(model: str) -> str:
    # One slider per model: each model's default threshold is chosen on its own valid set.
    return f"threshold_{model}"


def pages() -> dict[str, st.Page]:
    """The app's pages, keyed by short name (built on demand, not at import)."""
    return {
        "home": st.Page(home_page, title="Home", icon=":material/home:", url_path="home", default=True),
        "dashboard": st.Page(dashboard_page, title="Dashboard", icon=":material/radiology:", url_path="dashboard"),
        "models": st.Page(models_page, title="Models", icon=":material/query_stats:", url_path="models"),
    }


# =========================================================================== Home
def home_page() -> None:
    st.title("Bone-fracture localization")
    text, picture = st.columns([3, 2], gap="large")
    with text:
        st.markdown(
            "Upload an X-ray, pick one of two small segmentation models, and get the image back "
            "with the regions that look like a fracture marked: a filled outline, numbered boxes "
            "and a confidence for each finding, or a clear *no fracture found*."
        )
        st.markdown(
            "**What it does**\n"
            "- marks probable fracture regions on hand, leg, hip and shoulder radiographs;\n"
            "- reads JPEG, PNG (8 and 16 bit) and DICOM files, several at once;\n"
            "- lets you download the annotated image, the mask and the findings as JSON.\n\n"
            "**What it does not do**\n"
            "- it does not diagnose, grade or classify fractures, and it knows nothing about the patient;\n"
            "- it was trained on adult musculoskeletal X-rays only; other images give meaningless marks."
        )
        st.warning(DISCLAIMER, icon=":material/medical_information:")
        st.success(PRIVACY, icon=":material/lock:")
        go_dashboard, go_models = st.columns(2)
        if go_dashboard.button("Open the dashboard", key="home_to_dashboard", type="primary", icon=":material/upload:"):
            st.switch_page(pages()["dashboard"])
        if go_models.button("About the models", key="home_to_models", icon=":material/query_stats:"):
            st.switch_page(pages()["models"])
    with picture:
        st.image(str(CONFIG.assets_dir / "home.png"), caption="Illustration (drawn, not a patient image)")
    st.caption(CREDIT)


# =========================================================================== Dashboard
@dataclass(frozen=True)
class ViewSettings:
    """What the sidebar asks for."""

    model: str
    threshold: float
    opacity: float
    window_center: float
    window_width: float
    show_heatmap: bool

    @property
    def window(self) -> tuple[float, float]:
        return (self.window_center, self.window_width)


@st.cache_resource(show_spinner=False, max_entries=len(MODEL_NAMES))
def get_predictor(name: str):
    """The model ``name``, loaded once per process and shared by all sessions.

    A ModelIntegrityError is not cached (Streamlit caches return values only), so a
    fixed file is picked up on the next rerun.
    """
    # Imported here: TensorFlow takes seconds to import and only the dashboard needs it.
    import create_segmentation_model
    from model_manifest import model_entry
    from prediction import predictor_for

    return predictor_for(create_segmentation_model.load_named_model(name), name, model_entry(name))


def _reset_window() -> None:
    st.session_state[K_CENTER], st.session_state[K_WIDTH] = WINDOW_DEFAULT


def sidebar_settings_ui(manifest: dict) -> ViewSettings:
    """Model, threshold and display controls in the sidebar."""
    sb = st.sidebar
    sb.header("Settings")
    model = sb.radio(
        "Model",
        MODEL_NAMES,
        format_func=lambda n: MODEL_LABELS[n],
        captions=[MODEL_BLURBS[n] for n in MODEL_NAMES],
        key=K_MODEL,
    )
    default_t = model_threshold(model, manifest)
    threshold = sb.slider(
        "Threshold",
        min_value=0.01,
        max_value=0.99,
        value=round(default_t, 2),
        step=0.01,
        key=threshold_key(model),
        help=f"A pixel is marked when its fracture probability is at least this. Default for this model: {default_t:.2f}.",
    )
    opacity = sb.slider("Overlay opacity", 0.0, 1.0, 0.35, 0.05, key=K_OPACITY)
    show_heatmap = sb.toggle("Show probability heatmap", value=False, key=K_HEATMAP)
    sb.subheader("Contrast (window / level)")
    center = sb.slider("Window centre", 0.0, 1.0, WINDOW_DEFAULT[0], 0.01, key=K_CENTER)
    width = sb.slider("Window width", 0.05, 1.0, WINDOW_DEFAULT[1], 0.01, key=K_WIDTH)
    sb.button("Reset contrast", key="reset_window", on_click=_reset_window, icon=":material/restart_alt:")
    return ViewSettings(model, float(threshold), float(opacity), float(center), float(width), bool(show_heatmap))


def upload_ui() -> list:
    """The uploader; returns the list of UploadedFile (in memory)."""
    files = st.file_uploader(
        "X-ray images (JPEG, PNG or DICOM)",
        type=[e.lstrip(".") for e in CONFIG.image_extensions],
        accept_multiple_files=True,
        key=K_UPLOADS,
        help=f"Up to {CONFIG.max_upload_mb} MB per file. {PRIVACY}",
    )
    return list(files or [])


def load_predictor_ui(name: str):
    """The cached Predictor, or None after showing why it cannot be used."""
    try:
        with st.spinner(f"Loading the {MODEL_LABELS[name]} model…"):
            return get_predictor(name)
    except ModelIntegrityError as exc:
        st.error(f"The {MODEL_LABELS[name]} model cannot be used: {sup.escape_markdown(str(exc))}", icon=":material/gpp_bad:")
    except Exception as exc:  # the app must stay up whatever a broken install throws
        st.error(f"The {MODEL_LABELS[name]} model cannot be loaded ({type(exc).__name__}).", icon=":material/gpp_bad:")
    return None


def _analyses() -> dict:
    return st.session_state.setdefault(K_ANALYSES, {})


def analyse_upload(name: str, data: bytes, key: str, predictor, settings: ViewSettings) -> dict:
    """This session's entry for one upload (cached per content hash ``key``), analysed by the chosen model.

    The entry is {"image": LoadedImage | None, "error": one line | None, "results":
    {model: PredictionResult}}: decoded once, the model runs once per (content, model)
    through ``prediction.iter_predictions``, and a threshold change only redoes the
    connected components, once (the result at the current threshold is kept).
    """
    from prediction import Source, iter_predictions

    entry = _analyses().setdefault(key, {"image": None, "error": None, "results": {}})
    if entry["error"] is None and settings.model not in entry["results"]:
        image = entry["image"]
        load = (lambda: image) if image is not None else (lambda: sup.load_upload(name, data))
        with st.spinner(f"Looking for fractures in {sup.escape_markdown(name)}…"):
            outcome = next(iter_predictions(predictor, [Source(name, load)], settings.threshold, batch_size=1))
        if entry["image"] is None and outcome.image is None:
            entry["error"] = outcome.error  # the file itself is bad: remembered, not retried
            return entry
        entry["image"] = outcome.image
        if outcome.error is not None:  # the analysis failed: shown, retried on the next rerun
            return {**entry, "error": outcome.error}
        entry["results"][settings.model] = outcome.result
    if entry["error"] is None:
        results = entry["results"]
        results[settings.model] = results[settings.model].with_threshold(settings.threshold)
    return entry


def findings_ui(result, settings: ViewSettings) -> None:
    if result.findings:
        st.markdown(f"**{len(result.findings)} finding(s)** at threshold {settings.threshold:.2f} "
                    f"(highest probability {result.fracture_score:.3f})")
        st.dataframe(sup.findings_rows(result.findings), hide_index=True, width="stretch")
    else:
        st.success(sup.no_finding_message(settings.threshold) +
                   f" Highest probability anywhere: {result.fracture_score:.3f}.", icon=":material/check_circle:")


def downloads_ui(index: int, digest: str, name: str, result, overlay, settings: ViewSettings) -> None:
    from prediction import encode_png

    names = sup.download_names(name, settings.model)
    key = f"{index}_{digest[:12]}"
    c1, c2, c3 = st.columns(3)
    c1.download_button("Annotated PNG", encode_png(overlay), names["png"], "image/png",
                       key=f"dl_png_{key}", on_click="ignore", icon=":material/download:")
    c2.download_button("Findings JSON", sup.findings_json(result.to_dict(name, settings.model)), names["json"],
                       "application/json", key=f"dl_json_{key}", on_click="ignore", icon=":material/download:")
    c3.download_button("Mask PNG", result.mask_png(), names["mask"], "image/png",
                       key=f"dl_mask_{key}", on_click="ignore", icon=":material/download:")


def file_result_ui(index: int, uploaded, digest: str, predictor, settings: ViewSettings) -> None:
    """Everything shown for one upload; a bad file ends in one st.error, never an exception."""
    name = uploaded.name
    st.subheader(sup.escape_markdown(name))
    entry = analyse_upload(name, uploaded.getvalue(), digest, predictor, settings)
    if entry["error"]:
        st.error(sup.escape_markdown(entry["error"]), icon=":material/broken_image:")
        return
    image = entry["image"]
    if image.note:
        st.info(sup.escape_markdown(image.note), icon=":material/info:")
    from prediction import display_gray

    result = entry["results"][settings.model]
    try:
        overlay = result.overlay(image.pixels, settings.opacity, settings.show_heatmap, settings.window)
    except Exception as exc:  # keep the other uploads going
        st.error(sup.escape_markdown(f"{name}: drawing the result failed ({type(exc).__name__})"), icon=":material/error:")
        return
    left, right = st.columns(2)
    left.image(sup.fit_for_display(display_gray(image.pixels, *settings.window)),
               caption=f"Input, {image.width}x{image.height} px")
    right.image(sup.fit_for_display(overlay),
                caption=f"{MODEL_LABELS[settings.model]}, threshold {settings.threshold:.2f}")
    findings_ui(result, settings)
    downloads_ui(index, digest, name, result, overlay, settings)


def dashboard_page() -> None:
    manifest = read_manifest_or_empty()
    settings = sidebar_settings_ui(manifest)
    st.title("Dashboard")
    st.caption(PRIVACY)
    files = upload_ui()
    # Forget the analyses of files no longer uploaded: memory per session stays bounded.
    digests = [sup.content_hash(f.getvalue()) for f in files]  # hashed once per rerun
    store = _analyses()
    for key in [k for k in store if k not in digests]:
        del store[key]
    if not files:
        st.info("Upload one or more X-rays to start. Changing the model, threshold or display settings "
                "afterwards does not need a new upload.", icon=":material/upload:")
        st.stop()
    predictor = load_predictor_ui(settings.model)
    if predictor is None:
        st.stop()
    for i, (uploaded, digest) in enumerate(zip(files, digests, strict=True)):
        with st.container(border=True):
            file_result_ui(i, uploaded, digest, predictor, settings)


# =========================================================================== Models
METRICS_EXPLAINED = """
- **Dice** and **IoU** (Jaccard): overlap of the marked region with the radiologist's outline,
  per fractured image, 1 = perfect. Dice weighs the overlap twice, so Dice ≥ IoU.
- **Box AP@50**: how well the numbered boxes find the annotated fractures (a box counts when it
  overlaps a true box by at least 50 %), over all score levels.
- **ROC AUC, sensitivity, specificity**: the image-level question *fracture or not*, using the
  highest probability in the image as the score; sensitivity = share of fractured images flagged,
  specificity = share of fracture-free images left clean.
- **False findings per negative**: boxes drawn on images without any fracture, on average.
- **Pixel accuracy** is listed only next to the all-background baseline: fractures cover a tiny
  share of the pixels, so a model that marks nothing at all is already close to 100 % "accurate".
  On its own the number says nothing about finding fractures.
"""

TRAINING_DATA = """
- **Data:** FracAtlas, 4,083 adult musculoskeletal X-rays (hand, leg, hip, shoulder) from three
  hospitals in Bangladesh, 717 of them with 922 hand-drawn fracture outlines. Official split for
  fractured images (574 train / 82 valid / 61 test); images without fracture split by image id.
- **Limits:** one region, few hospitals and devices; no children, no spine or skull, no CT/MRI.
  Subtle or overlapping fractures are outlined less consistently than obvious ones.
- **Models:** small (about 1.5–2 million parameters) and see a 256x256 grey copy of the image,
  so hairline fractures on a large radiograph may be below what they can resolve.
"""


def metrics_ui() -> None:
    labels = {n: MODEL_LABELS[n] for n in MODEL_NAMES}
    metrics = {labels[n]: sup.read_metrics(CONFIG.metrics_path(n)) for n in MODEL_NAMES}
    missing = [label for label, m in metrics.items() if m is None]
    if missing:
        st.info("Not evaluated yet: " + ", ".join(missing) + ". Run `python evaluate.py` to produce "
                "`Saved_model/<model>.metrics.json`.", icon=":material/pending:")
    rows = sup.metrics_table(metrics)
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch", key="metrics_table")


def plots_ui() -> None:
    cols = st.columns(len(MODEL_NAMES))
    for col, name in zip(cols, MODEL_NAMES, strict=True):
        history = CONFIG.saved_model_dir / f"{name}.history.png"
        with col:
            st.markdown(f"**{MODEL_LABELS[name]}: training history**")
            if history.is_file():
                st.image(str(history))
            else:
                st.caption("No training history yet.")
    report = sorted(CONFIG.report_dir.glob("*.png")) if CONFIG.report_dir.is_dir() else []
    if report:
        st.subheader("Evaluation plots")
        cols = st.columns(2)
        for i, path in enumerate(report):
            cols[i % 2].image(str(path), caption=path.stem.replace("_", " "))


def models_page() -> None:
    st.title("Models")
    st.warning(DISCLAIMER, icon=":material/medical_information:")
    manifest = read_manifest_or_empty()
    st.subheader("The two models")
    for name in MODEL_NAMES:
        st.markdown(f"- **{MODEL_LABELS[name]}**: {MODEL_BLURBS[name]}")
    st.dataframe(sup.manifest_rows(manifest), hide_index=True, width="stretch", key="manifest_table")
    st.subheader("Test-set metrics, side by side")
    metrics_ui()
    st.markdown(METRICS_EXPLAINED)
    st.subheader("Plots")
    plots_ui()
    st.subheader("Training data and its limits")
    st.markdown(TRAINING_DATA)
    st.caption(CREDIT)
