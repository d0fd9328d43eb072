"""What the Dashboard shows for one result: the reading in words (finding / borderline / clean,
likelihood), the overlay with the borderline spot, the heatmap legend and the downloads.

Streamlit widgets only; the decisions are in ``result_status``, the drawing in
``rendering`` (through ``PredictionResult.overlay``), the DICOM in ``dicom_export``.
"""

from __future__ import annotations

import streamlit as st

import app_support as sup
from dicom_export import DicomExportError, is_dicom, secondary_capture
from important_variables import MODEL_LABELS
from model_card import miss_note
from model_manifest import model_entry
from prediction import HEAT_FLOOR, HEAT_FULL, encode_png, heatmap_legend
from result_status import BORDERLINE, FINDING, STATUS_TEXT, borderline_spot, result_status, status_fields


def entry_of(manifest: dict, model: str) -> dict:
    """The model's manifest entry as a plain mapping ({} when unlisted)."""
    return dict(model_entry(model, manifest).data)


def reading_ui(result, model: str, threshold: float, manifest: dict) -> tuple[str, float | None]:
    """The result in words, in one of three states; returns (status, likelihood or None)."""
    fields = status_fields(result, entry_of(manifest, model), threshold)
    status, lk, margin = fields["status"], fields["fracture_likelihood"], fields["borderline_margin"]
    likely = (f" Fracture likelihood ≈ {round(100 * lk)} %." if lk is not None
              else " Fracture likelihood: not calibrated for this model yet (scores are not likelihoods).")
    top = f"highest score {result.fracture_score:.3f}"
    if status == FINDING:
        st.markdown(f":orange-badge[:material/search: Possible fracture] **{len(result.findings)} finding(s)** "
                    f"at threshold {threshold:.2f} ({top}). Review the marked region(s).{likely}")
        st.dataframe(sup.findings_rows(result.findings), hide_index=True, width="stretch")
        st.caption(sup.finding_score_caption(result.rule))
    elif status == BORDERLINE:
        st.warning(f"Borderline: no region reached threshold {threshold:.2f}, but the {top} is within "
                   f"{margin:.2f} of it. Review this area (dashed box).{likely}", icon=":material/visibility:")
    else:
        st.success(sup.no_finding_message(threshold) + f" Highest score anywhere: {result.fracture_score:.3f}.{likely}",
                   icon=":material/check_circle:")
        # Green is not "cleared": say how often this threshold stayed silent on a fractured X-ray.
        note = miss_note(entry_of(manifest, model), threshold)
        if note:
            st.caption(note)
    return status, lk


def render_ui(image, result, settings, margin: float):
    """The annotated RGB overlay for the current display settings (borderline spot marked)."""
    spot = None
    if result_status(result.findings, result.fracture_score, result.threshold, margin) == BORDERLINE:
        spot = borderline_spot(result.prob, result.threshold, margin)
    return result.overlay(image.pixels, settings.opacity, settings.show_heatmap, settings.window,
                          outline_only=settings.style == "outline", review_box=spot)


def findings_text(result, model: str, status: str, likelihood: float | None) -> str:
    """One paragraph for the DICOM export's ImageComments."""
    parts = [f"{MODEL_LABELS[model]}, threshold {result.threshold:.2f}: {STATUS_TEXT[status]}",
             f"Highest score {result.fracture_score:.3f}."]
    parts += [f"#{f.index} box (x0, y0, x1, y1) = {f.box}, score {f.score:.3f}, area {f.area_px} px." for f in result.findings]
    if likelihood is not None:
        parts.append(f"Fracture likelihood about {round(100 * likelihood)} % (calibrated on the validation split).")
    parts.append("Marked by a segmentation model trained on FracAtlas; not a diagnosis.")
    return " ".join(parts)


def downloads_ui(digest: str, name: str, data: bytes, model: str, result, overlay, reading: tuple[str, float | None],
                 manifest: dict) -> None:
    names = sup.download_names(name, model)
    key = f"{digest[:16]}_{model}"
    record = {**result.to_dict(name, model), **status_fields(result, entry_of(manifest, model))}
    cols = st.columns(4 if is_dicom(data) else 3)
    cols[0].download_button("Annotated PNG", encode_png(overlay), names["png"], "image/png",
                            key=f"dl_png_{key}", on_click="ignore", icon=":material/download:")
    cols[1].download_button("Findings JSON", sup.findings_json(record), names["json"], "application/json",
                            key=f"dl_json_{key}", on_click="ignore", icon=":material/download:")
    cols[2].download_button("Mask PNG", result.mask_png(), names["mask"], "image/png",
                            key=f"dl_mask_{key}", on_click="ignore", icon=":material/download:")
    if is_dicom(data):
        try:
            sc = secondary_capture(data, overlay, findings_text(result, model, *reading),
                                   f"Fracture marks: {MODEL_LABELS[model]}, threshold {result.threshold:.2f}")
        except DicomExportError as exc:
            cols[3].caption(f"No DICOM export: {sup.escape_markdown(str(exc))}")
        else:
            cols[3].download_button("DICOM (Secondary Capture)", sc, names["png"].replace("_annotated.png", "_result.dcm"),
                                    "application/dicom", key=f"dl_dcm_{key}", on_click="ignore", icon=":material/download:",
                                    help="The annotated image as a new series in the same study, for a PACS.")


def heatmap_legend_ui() -> None:
    st.image(heatmap_legend(), width="stretch",
             caption=f"Heatmap: fracture score per pixel, 0 → 1; transparent below {HEAT_FLOOR:g}, full colour from "
                     f"{HEAT_FULL:g} (the opacity slider sets the maximum).")
