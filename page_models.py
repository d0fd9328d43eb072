"""The Models page: a model card people can read.

Per model: a plain-language verdict written from its test numbers, a short table of
named metrics with their n, the reliability of its fracture likelihood (diagram +
ECE), its plots paired side by side, the best/worst examples at full width, the full
training command, and the raw metrics JSON one click away. The numbers come from
``model_card`` (pure); this page only lays them out.
"""

from __future__ import annotations

import json

import streamlit as st

import model_card as mc
from app_nav import request_page
from app_text import CREDIT, DATA_FACTS, DISCLAIMER, LIMITS, METRICS_EXPLAINED, MODEL_BLURBS
from important_variables import CONFIG, MODEL_LABELS, MODEL_NAMES
from model_manifest import model_entry, read_manifest_or_empty

FACTS = ("params", "epochs", "samples_seen", "training_minutes", "threshold", "threshold_source", "borderline_margin", "image_score")


def _entry(manifest: dict, name: str) -> dict:
    return dict(model_entry(name, manifest).data)


def _report_png(name: str, kind: str):
    """The evaluation's ``<model>_<split>_<kind>.png`` (test split first), or None."""
    for split in ("test", "valid"):
        path = CONFIG.report_dir / f"{name}_{split}_{kind}.png"
        if path.is_file():
            return path
    return None


def verdicts_ui(metrics: dict) -> None:
    for name in MODEL_NAMES:
        st.markdown(f"**{MODEL_LABELS[name]}**: {MODEL_BLURBS[name]} {mc.verdict(metrics[name])}")


def metrics_table_ui(metrics: dict, checks: dict) -> None:
    labels = {n: MODEL_LABELS[n] for n in MODEL_NAMES}
    missing = [labels[n] for n in MODEL_NAMES if metrics[n] is None]
    if missing:
        st.info("Not evaluated yet: " + ", ".join(missing) + ". Run `python evaluate.py` to produce "
                "`Saved_model/<model>.metrics.json`.", icon=":material/pending:")
    rows = mc.named_metrics_rows({labels[n]: metrics[n] for n in MODEL_NAMES}, {labels[n]: checks[n] for n in MODEL_NAMES})
    st.dataframe(rows, hide_index=True, width="stretch", key="metrics_table")


def calibration_ui(checks: dict) -> None:
    """Reliability diagram and ECE per model, side by side; says so when a model is not calibrated."""
    from calibration import plot_reliability

    for col, name in zip(st.columns(len(MODEL_NAMES)), MODEL_NAMES, strict=True):
        check = checks[name]
        with col:
            st.markdown(f"**{MODEL_LABELS[name]}**")
            if check is None:
                st.info("Not calibrated yet, and no per-image scores to show: the dashboard shows scores only, "
                        "no fracture likelihood.", icon=":material/pending:")
                continue
            if not check["calibrated"]:
                st.info("Not calibrated yet: the dashboard shows scores only, no fracture likelihood. Below, the raw "
                        f"image score ({check['image_score']}) read as if it were a probability.", icon=":material/pending:")
            title = f"{MODEL_LABELS[name]}, {check['source']}"
            xlabel = "predicted fracture likelihood" if check["calibrated"] else f"raw image score ({check['image_score']})"
            fig = plot_reliability(check["bins"], title=title, ece=check["ece"], xlabel=xlabel)
            st.pyplot(fig, width="stretch")
            what = "likelihood" if check["calibrated"] else "raw score"
            st.caption(f"ECE of the {what}: {check['ece']:.3f} on n = {check['n']} images ({check['source']}); "
                       f"the raw score's ECE: {check['ece_uncalibrated']:.3f}.")


def operating_points_ui(manifest: dict) -> None:
    """Per model, what each tested threshold did on the validation images (the slider's trade-off)."""
    for name in MODEL_NAMES:
        entry = _entry(manifest, name)
        rows = mc.operating_points_table(entry, entry.get("threshold"))
        st.markdown(f"**{MODEL_LABELS[name]}**")
        if rows:
            st.dataframe(rows, hide_index=True, width="stretch", key=f"operating_points_{name}")
        else:
            st.caption("Not recorded yet: `python evaluate.py --split valid --choose-threshold --write-manifest` records it.")


def paired_plots_ui() -> None:
    """History, ROC and PR plots in rows, one column per model, so they compare at a glance."""
    for kind, title in (("history", "Training history"), ("roc", "ROC curve (test)"), ("pr", "Precision-recall (test)")):
        st.markdown(f"**{title}**")
        for col, name in zip(st.columns(len(MODEL_NAMES)), MODEL_NAMES, strict=True):
            path = CONFIG.saved_model_dir / f"{name}.history.png" if kind == "history" else _report_png(name, kind)
            if path is not None and path.is_file():
                col.image(str(path), caption=MODEL_LABELS[name], width="stretch")
            else:
                col.caption(f"{MODEL_LABELS[name]}: not available yet.")
    for name in MODEL_NAMES:
        grid = _report_png(name, "grid")
        if grid is not None:  # wide: full width, one model per row, so the examples stay readable
            st.markdown(f"**{MODEL_LABELS[name]}: best and worst test images**")
            st.image(str(grid), width="stretch")


def training_ui(manifest: dict) -> None:
    rows = []
    for field in FACTS:
        row = {"": field.replace("_", " ")}
        for name in MODEL_NAMES:
            value = _entry(manifest, name).get(field)
            row[MODEL_LABELS[name]] = "" if value is None else str(value)
        rows.append(row)
    st.dataframe(rows, hide_index=True, width="stretch", key="manifest_table")
    for name in MODEL_NAMES:
        command = _entry(manifest, name).get("training_command")
        st.markdown(f"**{MODEL_LABELS[name]}: full training command**")
        if command:
            st.code(command, language="bash", wrap_lines=True)
        else:
            st.caption("Not recorded in the manifest.")


def raw_json_ui(metrics: dict) -> None:
    with st.expander("Raw metrics JSON (every number the evaluation wrote)"):
        for name in MODEL_NAMES:
            if metrics[name] is None:
                continue
            text = json.dumps(metrics[name], indent=2)
            st.download_button(f"{MODEL_LABELS[name]} metrics JSON", text, f"{name}.metrics.json", "application/json",
                               key=f"dl_metrics_{name}", on_click="ignore", icon=":material/download:")
            st.json({k: v for k, v in metrics[name].items() if k != "per_image"}, expanded=False)


def models_page() -> None:
    st.title("Models")
    st.button("Back to the dashboard", key="models_to_dashboard", icon=":material/radiology:",
              help="Your uploads, results and settings are still there.", on_click=request_page, args=("dashboard",))
    st.warning(DISCLAIMER, icon=":material/medical_information:")
    manifest = read_manifest_or_empty()
    metrics = {n: mc.read_metrics(CONFIG.metrics_path(n)) for n in MODEL_NAMES}
    checks = {n: mc.reliability_check(metrics[n], _entry(manifest, n)) for n in MODEL_NAMES}
    st.subheader("In short")
    verdicts_ui(metrics)
    st.subheader("Test-set metrics, side by side")
    metrics_table_ui(metrics, checks)
    st.markdown(METRICS_EXPLAINED)
    st.subheader("Fracture likelihood: is it calibrated?")
    calibration_ui(checks)
    st.subheader("What the threshold trades (validation images)")
    st.markdown("A lower threshold in the dashboard finds more fractures and marks more healthy bone. "
                "Each row is one threshold, measured on the validation images the default was chosen on.")
    operating_points_ui(manifest)
    st.subheader("Plots")
    paired_plots_ui()
    st.subheader("How they were trained")
    training_ui(manifest)
    raw_json_ui(metrics)
    st.subheader("Training data and its limits")
    st.markdown(f"- **Data:** {DATA_FACTS}\n{LIMITS}")
    st.caption(CREDIT)
