"""The Models page: a model card people can read.

Per model: a plain-language verdict written from its test numbers, a short table of
named metrics with their n, the reliability of its fracture likelihood (diagram +
ECE, per source where evaluated), its plots paired side by side, the best/worst examples
at full width, the training facts in words and the last training command (no machine
paths), the "unlike the training images" check, and the raw metrics JSON one click away. The numbers come from
``model_card`` (pure); this page only lays them out.
"""

from __future__ import annotations

import json

import streamlit as st

from important_variables import CONFIG, MODEL_LABELS, MODEL_NAMES
from inference import model_card as mc
from inference.manifest import model_entry, read_manifest_or_empty
from ui.nav import request_page
from ui.text import CREDIT, DATA_FACTS, DISCLAIMER, LIMITS, METRICS_EXPLAINED, MODEL_BLURBS


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


def source_rows(by_source: list[dict]) -> list[dict]:
    """Rows of the per-source reliability table (``inference.model_card.reliability_by_source``)."""
    return [{"source": b["source"], "images": b["n"], "with fracture": f"{b['share_fractured']:.0%}",
             "mean likelihood": f"{b['mean_likelihood']:.0%}", "ECE": "–" if b["ece"] is None else f"{b['ece']:.3f}",
             "holds": "yes" if b["holds"] else "no"} for b in by_source]


def calibration_ui(checks: dict, by_source_all: dict | None = None) -> None:
    """Reliability diagram and ECE per model, side by side, and per image source where the evaluation
    has several; says so when a model is not calibrated."""
    by_source_all = by_source_all or {}
    from inference.calibration import plot_reliability

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
            by_source = by_source_all.get(name) or []
            if by_source:
                st.dataframe(source_rows(by_source), hide_index=True, width="stretch", key=f"calibration_sources_{name}")
            elif check["calibrated"]:
                st.caption(f"Checked on {mc.DEFAULT_SOURCE} X-rays only: on X-rays from other sources the likelihood "
                           "can be far off (the dashboard says so next to it).")


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
    for kind, title in (("history", "Training history of the last run (valid scored during training; dashed: the shipped epoch)"), ("roc", "ROC curve (test)"), ("pr", "Precision-recall (test)")):
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
    """The training facts in words (a markdown table: long values wrap instead of being cut off) and
    each model's last training command, without machine paths."""
    facts = {name: dict(mc.training_facts(_entry(manifest, name))) for name in MODEL_NAMES}
    labels = list(next(iter(facts.values())))
    lines = ["| | " + " | ".join(MODEL_LABELS[n] for n in MODEL_NAMES) + " |", "|---" * (1 + len(MODEL_NAMES)) + "|"]
    lines += ["| " + label + " | " + " | ".join(facts[n][label].replace("|", "\\|") for n in MODEL_NAMES) + " |"
              for label in labels]
    st.markdown("\n".join(lines))
    for name in MODEL_NAMES:
        command = _entry(manifest, name).get("training_command")
        st.markdown(f"**{MODEL_LABELS[name]}: command of the last training run**")
        if command:
            st.code(mc.public_text(command), language="bash", wrap_lines=True)
            if "--time-budget-minutes" in command:
                st.caption("With `--time-budget-minutes` the run follows the clock: `--epochs` is only a cap, and the run "
                           "stops at the first epoch end past the budget (the epochs and minutes above).")
        else:
            st.caption("Not recorded in the manifest.")


#: The fitting tool's own sets, in words (other sets are named by whoever ran it).
OOD_SET_WORDS = {"valid": "FracAtlas valid (the warning level was set here)", "test": "FracAtlas test (held out)",
                 "valid BoneFractureYolo8": "BoneFractureYolo8 valid (the warning level was set here too)"}


def ood_ui(manifest: dict) -> None:
    """Per model, the "unlike the training images" check: what it was fitted on and how often it warns."""
    from inference.ood import OodCheck

    for name in MODEL_NAMES:
        entry = _entry(manifest, name)
        check = OodCheck.from_entry(entry.get("ood"), sha256=entry.get("sha256"))
        st.markdown(f"**{MODEL_LABELS[name]}**")
        if check is None:
            st.caption("Not fitted for these weights: its results carry no such warning "
                       f"(`python tools/fit_ood.py --model {name}` fits it).")
            continue
        info = check.info
        target = info.get("false_alarm_target")
        st.caption(f"Features: the layer `{check.layer}` ({check.channels} channels) averaged over the image; fitted on the "
                   f"{info.get('fitted_on', 'training X-rays')}; warning above distance {check.threshold:.2f}, set on the "
                   f"{info.get('threshold_on', 'validation X-rays')}"
                   + (f" so that {target:.0%} of them get it." if isinstance(target, int | float) else "."))
        rows = [{"images": OOD_SET_WORDS.get(label, label), "n": v.get("images"),
                 "warned": "–" if v.get("rate") is None else f"{v['rate']:.1%}"}
                for label, v in (info.get("checks") or {}).items() if isinstance(v, dict)]
        if rows:
            st.dataframe(rows, hide_index=True, width="stretch", key=f"ood_{name}")


def _public(metrics: dict) -> dict:
    """The metrics without machine paths in their top-level text (the data folder)."""
    return {k: (mc.public_text(v) if isinstance(v, str) else v) for k, v in metrics.items()}


def raw_json_ui(metrics: dict) -> None:
    with st.expander("Raw metrics JSON (every number the evaluation wrote)"):
        for name in MODEL_NAMES:
            if metrics[name] is None:
                continue
            public = _public(metrics[name])
            text = json.dumps(public, indent=2)
            st.download_button(f"{MODEL_LABELS[name]} metrics JSON", text, f"{name}.metrics.json", "application/json",
                               key=f"dl_metrics_{name}", on_click="ignore", icon=":material/download:")
            st.json({k: v for k, v in public.items() if k != "per_image"}, expanded=False)


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
    calibration_ui(checks, {n: mc.reliability_by_source(metrics[n], _entry(manifest, n)) for n in MODEL_NAMES})
    st.subheader("What the threshold trades (validation images)")
    st.markdown("A lower threshold in the dashboard finds more fractures and marks more healthy bone. "
                "Each row is one threshold, measured on the validation images the default was chosen on.")
    operating_points_ui(manifest)
    st.subheader("Plots")
    paired_plots_ui()
    st.subheader("How they were trained")
    training_ui(manifest)
    st.subheader("Unlike the training images: the warning on unfamiliar pictures")
    st.markdown("Each result is checked against the training X-rays on the model's own image features; an image "
                "far from all of them gets a plain warning that the model may do worse on it (other hospitals or devices, "
                "children, hardware, photos of screens, pictures that are not X-rays). It never hides a finding.")
    ood_ui(manifest)
    raw_json_ui(metrics)
    st.subheader("Training data and its limits")
    st.markdown(f"- **Data:** {DATA_FACTS}\n{LIMITS}")
    st.caption(CREDIT)
