"""What the Dashboard shows for one result: the reading in words (finding / borderline / no finding,
likelihood, "unlike the training images"), the overlay with the borderline spot, the heatmap
legend and the downloads.

Streamlit widgets only; the decisions and the words are in ``inference.reading`` (the
same sentences ``predict.py`` prints), the drawing in ``imaging.rendering`` (through
``PredictionResult.overlay``), the DICOM in ``imaging.dicom_export``.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from imaging.dicom_export import DicomExportError, is_dicom, secondary_capture
from important_variables import CONFIG, MODEL_LABELS
from inference.manifest import model_entry
from inference.model_card import read_metrics, reliability_by_source
from inference.reading import BORDERLINE, FINDING, borderline_spot, reading_parts, result_record, result_status, status_fields
from prediction import HEAT_FLOOR, HEAT_FULL, encode_png, heatmap_legend
from ui import support as sup


def entry_of(manifest: dict, model: str) -> dict:
    """The model's manifest entry as a plain mapping ({} when unlisted)."""
    return dict(model_entry(model, manifest).data)


@st.cache_data(show_spinner=False, max_entries=8)
def _metrics(path: str, mtime: float) -> dict | None:
    """A model's metrics file, read once per version (``mtime``)."""
    return read_metrics(Path(path))


def by_source_of(model: str, manifest: dict) -> list[dict]:
    """The likelihood's reliability per image source (``inference.model_card.reliability_by_source``); [] when the
    evaluation has one source only or the model was not evaluated."""
    path = CONFIG.metrics_path(model)
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return []
    return reliability_by_source(_metrics(str(path), mtime), entry_of(manifest, model))


def reading_ui(result, model: str, threshold: float, manifest: dict) -> tuple[str, float | None]:
    """The result in words, in one of three states, plus the "unlike the training images" warning;
    returns (status, likelihood or None). No finding is neutral (grey), never green."""
    entry = entry_of(manifest, model)
    fields = status_fields(result, entry, threshold)
    status, lk = fields["status"], fields["fracture_likelihood"]
    parts = reading_parts(result, fields, entry, threshold, by_source_of(model, manifest))
    if parts["ood"]:  # first and on its own: it is about the whole reading
        st.warning(parts["ood"], icon=":material/help:")
    if status == FINDING:
        st.markdown(f":orange-badge[:material/search: Possible fracture] {parts['headline'].removeprefix('Possible fracture: ')}")
        st.dataframe(sup.findings_rows(result.findings, result.rule), hide_index=True, width="stretch")
        st.caption(sup.finding_score_caption(result.rule))
        st.markdown(parts["likelihood"])
    elif status == BORDERLINE:
        st.warning(f"{parts['headline']} {parts['likelihood']}", icon=":material/visibility:")
    else:
        # Neutral on purpose: no mark is not a clear result (the models miss fractures at every threshold).
        st.markdown(f":gray-badge[:material/radio_button_unchecked: No finding] {parts['headline']}")
        st.markdown(parts["miss"])
        st.markdown(parts["likelihood"])
    return status, lk


def render_ui(image, result, settings, margin: float):
    """The annotated RGB overlay for the current display settings (borderline spot marked)."""
    spot = None
    if result_status(result.findings, result.fracture_score, result.threshold, margin) == BORDERLINE:
        spot = borderline_spot(result.prob, result.threshold, margin)
    return result.overlay(image.pixels, settings.opacity, settings.show_heatmap, settings.window,
                          outline_only=settings.style == "outline", review_box=spot)


def findings_text(record: dict, model: str) -> str:
    """One paragraph for the DICOM export's ImageComments: the reading and every finding."""
    parts = [f"{MODEL_LABELS.get(model, model)}, threshold {record['threshold']:.2f}: {record['reading']}"]
    parts += [f"#{i} box (x0, y0, x1, y1) = {tuple(f['box'])}, peak {f['score'] if f['peak'] is None else f['peak']:.3f}, "
              f"ranking score {f['score']:.3f}, area {f['area_px']} px." for i, f in enumerate(record["findings"], 1)]
    parts.append("Marked by a segmentation model trained on FracAtlas; not a diagnosis.")
    return " ".join(parts)


def downloads_ui(digest: str, name: str, data: bytes, model: str, result, overlay, manifest: dict,
                 note: str | None = None, labelled: bool = False) -> None:
    """The downloads of one result: annotated PNG, findings JSON (``inference.reading.result_record``, the keys of
    ``predict.py --json``), mask PNG and, for a DICOM upload, the Secondary Capture. ``labelled``: the
    button labels name the model (the compare view has one row per model)."""
    names = sup.download_names(name, model)
    key = f"{digest[:16]}_{model}"
    entry = entry_of(manifest, model)
    record = result_record(result, name, model, entry, note=note, by_source=by_source_of(model, manifest))
    tag = f" ({MODEL_LABELS.get(model, model)})" if labelled else ""
    cols = st.columns(4 if is_dicom(data) else 3)
    cols[0].download_button(f"Annotated PNG{tag}", encode_png(overlay), names["png"], "image/png",
                            key=f"dl_png_{key}", on_click="ignore", icon=":material/download:")
    cols[1].download_button(f"Findings JSON{tag}", sup.findings_json(record), names["json"], "application/json",
                            key=f"dl_json_{key}", on_click="ignore", icon=":material/download:")
    cols[2].download_button(f"Mask PNG{tag}", result.mask_png(), names["mask"], "image/png",
                            key=f"dl_mask_{key}", on_click="ignore", icon=":material/download:")
    if is_dicom(data):
        try:
            sc = secondary_capture(data, overlay, findings_text(record, model),
                                   f"Fracture marks: {MODEL_LABELS.get(model, model)}, threshold {result.threshold:.2f}")
        except DicomExportError as exc:
            cols[3].caption(f"No DICOM export: {sup.escape_markdown(str(exc))}")
        else:
            cols[3].download_button(f"DICOM (Secondary Capture){tag}", sc,
                                    names["png"].replace("_annotated.png", "_result.dcm"), "application/dicom",
                                    key=f"dl_dcm_{key}", on_click="ignore", icon=":material/download:",
                                    help="The annotated image as a new series in the same study, for a PACS.")


def heatmap_legend_ui() -> None:
    st.image(heatmap_legend(), width="stretch",
             caption=f"Heatmap: fracture score per pixel, 0 → 1; transparent below {HEAT_FLOOR:g}, full colour from "
                     f"{HEAT_FULL:g} (the opacity slider sets the maximum).")
