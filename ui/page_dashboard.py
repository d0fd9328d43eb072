"""The Dashboard page: upload X-rays, pick a model or compare all, read the marked result.

Thin UI: decoding is in ``imaging.image_io``, prediction in ``prediction``, the reading of a
result (finding / borderline / no finding, likelihood) and its words in ``inference.reading``, the DICOM
export in ``imaging.dicom_export``, small pure helpers in ``ui.support``.

State that lasts (Dashboard → Models → Dashboard): every setting is a widget with
``persist_state="session"`` (Streamlit keeps its value while the widget is not drawn,
including each model's own threshold); uploads are kept by this page in
``st.session_state`` as bytes (memory only, never on disk), because the file
uploader widget forgets its files when its page is left; results are cached per
upload and model in the same session state.
"""

from __future__ import annotations

from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import streamlit as st

from important_variables import CONFIG, DEFAULT_MODEL, MODEL_LABELS, MODEL_NAMES
from inference.manifest import ModelIntegrityError, model_entry, model_threshold, read_manifest_or_empty
from inference.model_card import threshold_tradeoff
from ui import support as sup
from ui.model_pool import ModelPool
from ui.nav import request_page
from ui.result_ui import downloads_ui, entry_of, heatmap_legend_ui, reading_ui, render_ui
from ui.text import MODEL_BLURBS, PRIVACY

# Session-state keys (widget keys are explicit so tests and callbacks can address them).
K_VIEW = "view_mode"
K_MODEL = "model"
K_STYLE = "overlay_style"
K_OPACITY = "opacity"
K_CENTER = "window_center"
K_WIDTH = "window_width"
K_HEATMAP = "show_heatmap"
K_UPLOADS = "uploads"  # the file uploader widget
K_FILES = "_files"  # content hash → {"name", "data", "batch", "pos"}: this session's uploads (batch: upload order)
K_WIDGET_HAD = "_uploader_had"  # hashes the uploader widget held on the previous run
K_FILE_IDS = "_file_ids"  # uploader file_id → content hash (each upload hashed once)
K_ANALYSES = "_analyses"  # content hash → decoded image and probability maps per model
PERSIST = "session"
WINDOW_DEFAULT = (0.5, 1.0)  # centre, width in [0, 1] units: the identity window
VIEWS = {"single": "One model", "compare": "Compare all"}
STYLES = {"filled": "Filled", "outline": "Outline only"}
#: Typical seconds for TensorFlow's import plus the models' load on a laptop CPU: only
#: scales the progress bar (it stops at 95 % until the model is really there).
EXPECTED_LOAD_S = 12.0


def threshold_key(model: str) -> str:
    # One slider per model: each model's default threshold is chosen on its own valid set.
    return f"threshold_{model}"


# --------------------------------------------------------------------------- models
def load_predictor(name: str):
    """The model ``name`` behind its compiled forward pass (runs in the pool's background thread)."""
    from cli import quiet_tf

    quiet_tf.import_tensorflow()  # before create_segmentation_model imports Keras: no start-up noise
    import create_segmentation_model
    from prediction import predictor_for

    # The manifest entry says how the model is meant to run (native scale, finding rule, image score).
    return predictor_for(create_segmentation_model.load_named_model(name), name, model_entry(name))


@st.cache_resource(show_spinner=False)
def model_pool() -> ModelPool:
    """The models, loading in the background from the first script run of the process.

    ``app.py`` asks for it on every run, so the load starts with the first page view
    (usually Home) and is shared by all sessions.
    """
    return ModelPool(MODEL_NAMES, load_predictor)


def _load_error_ui(name: str, exc: BaseException) -> None:
    label = MODEL_LABELS[name]
    if isinstance(exc, ModelIntegrityError):
        st.error(f"The {label} model cannot be used: {sup.escape_markdown(str(exc))}", icon=":material/gpp_bad:")
    else:  # the app must stay up whatever a broken install throws
        st.error(f"The {label} model cannot be loaded ({type(exc).__name__}).", icon=":material/gpp_bad:")


def predictor_ui(name: str):
    """The loaded Predictor; while it loads, a progress bar that moves every quarter second.

    None (after an st.error) when the model cannot be loaded.
    """
    pool = model_pool()
    try:
        return pool.get(name, timeout=0.05)
    except FutureTimeout:
        pass
    except Exception as exc:
        _load_error_ui(name, exc)
        return None
    label = MODEL_LABELS[name]
    with st.status(f"Loading the {label} model…", expanded=True) as status:
        bar = st.progress(0.0)
        while True:
            waited = pool.waited_s(name)
            bar.progress(min(0.95, waited / EXPECTED_LOAD_S),
                         text=f"{waited:.0f} s: TensorFlow and the model load once per server start "
                              f"(about {EXPECTED_LOAD_S:.0f} s on a laptop CPU); later uploads are fast.")
            try:
                predictor = pool.get(name, timeout=0.25)
            except FutureTimeout:
                continue
            except Exception as exc:
                status.update(label=f"The {label} model could not be loaded", state="error")
                _load_error_ui(name, exc)
                return None
            status.update(label=f"{label} model ready", state="complete", expanded=False)
            return predictor


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class ViewSettings:
    """What the sidebar asks for. ``models``: the one chosen, or all in the compare view."""

    view: str
    models: tuple[str, ...]
    thresholds: dict[str, float]
    style: str
    opacity: float
    window_center: float
    window_width: float
    show_heatmap: bool

    @property
    def window(self) -> tuple[float, float]:
        return (self.window_center, self.window_width)

    @property
    def compare(self) -> bool:
        return self.view == "compare"


def _reset_window() -> None:
    st.session_state[K_CENTER], st.session_state[K_WIDTH] = WINDOW_DEFAULT


def _threshold_ui(model: str, manifest: dict, compare: bool) -> float:
    default_t = model_threshold(model, manifest)
    value = float(st.sidebar.slider(
        f"{MODEL_LABELS[model]} threshold" if compare else "Threshold",
        min_value=0.01, max_value=0.99, value=round(default_t, 2), step=0.01,
        key=threshold_key(model), persist_state=PERSIST,
        help=f"A region is marked when its highest fracture score reaches this. Default for this model: {default_t:.2f} "
             "(chosen on the validation images). Each model keeps its own threshold.",
    ))
    # What this threshold trades, measured on valid: a reader choosing it should see the cost.
    tradeoff = threshold_tradeoff(model_entry(model, manifest).data, value)
    if tradeoff:
        st.sidebar.caption(tradeoff)
    return value


def sidebar_settings_ui(manifest: dict) -> ViewSettings:
    """View, model, thresholds and display controls in the sidebar; all of them last across pages."""
    sb = st.sidebar
    sb.header("Settings")
    view = sb.radio("View", list(VIEWS), format_func=VIEWS.get, key=K_VIEW, horizontal=True, persist_state=PERSIST,
                    help="Compare all: every model's result side by side for each upload.")
    if view == "compare":
        models = MODEL_NAMES
    else:
        models = (sb.radio("Model", MODEL_NAMES, index=MODEL_NAMES.index(DEFAULT_MODEL), format_func=lambda n: MODEL_LABELS[n],
                           captions=[MODEL_BLURBS[n] for n in MODEL_NAMES], key=K_MODEL, persist_state=PERSIST),)
    thresholds = {m: _threshold_ui(m, manifest, view == "compare") for m in models}
    sb.subheader("Display")
    style = sb.radio("Marking", list(STYLES), format_func=STYLES.get, key=K_STYLE, horizontal=True, persist_state=PERSIST,
                     help="Outline only keeps the fracture line under the marked region visible.")
    opacity = sb.slider("Overlay opacity", 0.0, 1.0, 0.35, 0.05, key=K_OPACITY, persist_state=PERSIST)
    show_heatmap = sb.toggle("Show score heatmap", value=False, key=K_HEATMAP, persist_state=PERSIST,
                             help="Colours every pixel by its fracture score; low scores stay transparent.")
    sb.subheader("Contrast (window / level)")
    center = sb.slider("Window centre", 0.0, 1.0, WINDOW_DEFAULT[0], 0.01, key=K_CENTER, persist_state=PERSIST)
    width = sb.slider("Window width", 0.05, 1.0, WINDOW_DEFAULT[1], 0.01, key=K_WIDTH, persist_state=PERSIST)
    sb.button("Reset contrast", key="reset_window", on_click=_reset_window, icon=":material/restart_alt:")
    return ViewSettings(view, tuple(models), thresholds, style, float(opacity), float(center), float(width),
                        bool(show_heatmap))


# --------------------------------------------------------------------------- uploads
def _forget(digests: list[str]) -> None:
    files = st.session_state.get(K_FILES, {})
    for d in digests:
        files.pop(d, None)


def _newest_first(store: dict) -> list[str]:
    """Digests of ``store``, the latest upload batch first, each batch in the order its files were given."""
    return sorted(store, key=lambda d: (-store[d].get("batch", 0), store[d].get("pos", 0)))


def earlier_uploads_ui(earlier: list[str], store: dict, uploader_empty: bool) -> None:
    """The uploads of this session that the uploader no longer holds (it forgets its files when the page
    is left): one line each with its own Remove button, and one button for all of them."""
    what = f"{len(earlier)} earlier upload{'s' if len(earlier) != 1 else ''} of this session"
    where = "their results are below" if uploader_empty else "their results are below the new ones"
    head, forget = st.columns([4, 1], vertical_alignment="center")
    head.caption(f"{what}, kept in memory only; {where}.")
    forget.button("Forget all", key="forget_uploads", on_click=_forget, args=(earlier,), icon=":material/delete_sweep:",
                  width="stretch")
    for digest in earlier:
        name, remove = st.columns([4, 1], vertical_alignment="center")
        name.markdown(f":material/draft: {sup.escape_markdown(store[digest]['name'])}")
        remove.button("Remove", key=f"forget_{digest[:16]}", on_click=_forget, args=([digest],), icon=":material/close:",
                      width="stretch", help="Drop this upload and its results from the session.")


def uploads_ui() -> list[tuple[str, str, bytes]]:
    """The uploader plus this session's earlier uploads: [(content hash, name, bytes)], the latest
    upload first.

    The widget's files are mirrored into ``K_FILES`` (bytes in memory). A file removed
    from the widget is forgotten; when the widget is new (first visit, or back from
    another page: Streamlit dropped its files) the earlier uploads stay, listed, and each
    can be removed on its own.
    """
    widget_is_new = K_UPLOADS not in st.session_state
    files = st.file_uploader(
        "X-ray images (JPEG, PNG or DICOM)",
        type=[e.lstrip(".") for e in CONFIG.image_extensions],
        accept_multiple_files=True,
        key=K_UPLOADS,
        help=f"Up to {CONFIG.max_upload_mb} MB per file. {PRIVACY}",
    ) or []
    store: dict = st.session_state.setdefault(K_FILES, {})
    ids: dict = st.session_state.setdefault(K_FILE_IDS, {})
    had = set() if widget_is_new else st.session_state.get(K_WIDGET_HAD, set())
    current: dict[str, object] = {}
    for f in files:
        fid = getattr(f, "file_id", None) or id(f)
        if fid not in ids:
            ids[fid] = sup.content_hash(f.getvalue())  # hashed once per upload, not per rerun
        current[ids[fid]] = f
    for gone in had - current.keys():
        store.pop(gone, None)
    new = [d for d in current if d not in store]
    batch = 1 + max((v.get("batch", 0) for v in store.values()), default=0)
    for pos, digest in enumerate(new):
        f = current[digest]
        store[digest] = {"name": f.name, "data": f.getvalue(), "batch": batch, "pos": pos}
    st.session_state[K_WIDGET_HAD] = set(current)
    for fid in [k for k, d in ids.items() if d not in current]:
        del ids[fid]
    earlier = [d for d in _newest_first(store) if d not in current]
    if earlier:
        earlier_uploads_ui(earlier, store, uploader_empty=not current)
    return [(d, store[d]["name"], store[d]["data"]) for d in _newest_first(store)]


# --------------------------------------------------------------------------- per upload
def _analyses() -> dict:
    return st.session_state.setdefault(K_ANALYSES, {})


def analyse_upload(name: str, data: bytes, key: str, predictor, model: str, threshold: float) -> dict:
    """This session's entry for one upload (cached per content hash ``key``), analysed by ``model``.

    The entry is {"image": LoadedImage | None, "error": one line | None, "results":
    {model: PredictionResult}}: decoded once, each model runs once per content through
    ``prediction.iter_predictions``, and a threshold change only redoes the connected
    components (the result at the current threshold is kept).
    """
    from prediction import Source, iter_predictions

    entry = _analyses().setdefault(key, {"image": None, "error": None, "results": {}})
    if entry["error"] is None and model not in entry["results"]:
        image = entry["image"]
        load = (lambda: image) if image is not None else (lambda: sup.load_upload(name, data))
        with st.spinner(f"Looking for fractures in {sup.escape_markdown(name)} with the {MODEL_LABELS[model]}…"):
            outcome = next(iter_predictions(predictor, [Source(name, load)], threshold, batch_size=1))
        if entry["image"] is None and outcome.image is None:
            entry["error"] = outcome.error  # the file itself is bad: remembered, not retried
            return entry
        entry["image"] = outcome.image
        if outcome.error is not None:  # the analysis failed: shown, retried on the next rerun
            return {**entry, "error": outcome.error}
        entry["results"][model] = outcome.result
    if entry["error"] is None:
        results = entry["results"]
        results[model] = results[model].with_threshold(threshold)
    return entry


def file_result_ui(digest: str, name: str, data: bytes, predictors: dict, settings: ViewSettings, manifest: dict) -> None:
    """Everything shown for one upload; a bad file ends in one st.error, never an exception."""
    from inference.reading import borderline_margin
    from prediction import display_gray

    st.subheader(sup.escape_markdown(name))
    shown, image = {}, None
    for model in settings.models:
        entry = analyse_upload(name, data, digest, predictors[model], model, settings.thresholds[model])
        if entry["error"]:
            st.error(sup.escape_markdown(entry["error"]), icon=":material/broken_image:")
            if entry["image"] is None:
                return  # the file itself is unreadable: one line, whatever the view
            continue
        image = entry["image"]
        result = entry["results"][model]
        try:
            shown[model] = (result, render_ui(image, result, settings, borderline_margin(entry_of(manifest, model))))
        except Exception as exc:  # keep the other uploads (and the other model) going
            st.error(sup.escape_markdown(f"{name}: drawing the result failed ({type(exc).__name__})"), icon=":material/error:")
    if not shown:
        return
    if image.note:
        st.info(sup.escape_markdown(image.note), icon=":material/info:")
    # All panels at the column's full width: a 373x454 X-ray is as readable as a 3000-px one.
    cols = st.columns(1 + len(shown))
    cols[0].image(sup.fit_for_display(display_gray(image.pixels, *settings.window)), width="stretch",
                  caption=f"Input, {image.width}x{image.height} px")
    for col, (model, (result, overlay)) in zip(cols[1:], shown.items(), strict=True):
        with col:
            st.image(sup.fit_for_display(overlay), width="stretch",
                     caption=f"{MODEL_LABELS[model]}, threshold {settings.thresholds[model]:.2f}")
            if settings.compare:
                reading_ui(result, model, settings.thresholds[model], manifest)
    if settings.show_heatmap:
        heatmap_legend_ui()
    if not settings.compare:
        model, (result, overlay) = next(iter(shown.items()))
        reading_ui(result, model, settings.thresholds[model], manifest)
        downloads_ui(digest, name, data, model, result, overlay, manifest, note=image.note)
        return
    for model, (result, overlay) in shown.items():  # one row of downloads per model, each labelled
        downloads_ui(digest, name, data, model, result, overlay, manifest, note=image.note, labelled=True)


def dashboard_page() -> None:
    manifest = read_manifest_or_empty()
    settings = sidebar_settings_ui(manifest)
    st.title("Dashboard")
    # A wrapping row: the button keeps its whole label at any width (a fixed column cut it off).
    with st.container(horizontal=True, vertical_alignment="center", key="dashboard_header"):
        st.caption(PRIVACY, width="stretch")
        st.button("How reliable are the models?", key="dashboard_to_models", type="tertiary", width="content",
                  icon=":material/query_stats:", on_click=request_page, args=("models",))
    uploads = uploads_ui()
    # Forget the analyses of files no longer uploaded: memory per session stays bounded.
    store = _analyses()
    for key in [k for k in store if k not in {d for d, _, _ in uploads}]:
        del store[key]
    if not uploads:
        st.info("Upload one or more X-rays to start. Changing the model, threshold or display settings "
                "afterwards does not need a new upload, and your uploads stay while you visit the other pages.",
                icon=":material/upload:")
        st.stop()
    predictors = {}
    for model in settings.models:
        predictor = predictor_ui(model)
        if predictor is not None:
            predictors[model] = predictor
    if not predictors:
        st.stop()
    settings = ViewSettings(settings.view, tuple(m for m in settings.models if m in predictors), settings.thresholds,
                            settings.style, settings.opacity, settings.window_center, settings.window_width,
                            settings.show_heatmap)
    for digest, name, data in uploads:
        with st.container(border=True):
            file_result_ui(digest, name, data, predictors, settings, manifest)
