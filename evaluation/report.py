"""Report files of an evaluation: JSON, markdown table, PR / ROC plots and the best/worst grid."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np

from evaluation.cases import Case
from evaluation.definitions import CREDIT, GRID_N
from evaluation.evaluator import Evaluation
from inference.model_card import interval_text


# --------------------------------------------------------------------------- outputs
def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _intervals_cell(report: dict) -> str:
    """"lo–hi / lo–hi" of the report's Dice mean and ROC-AUC intervals (evaluation.intervals)."""
    m = (report.get("intervals") or {}).get("metrics", {})

    def one(name):
        iv = m.get(name) or {}
        return interval_text(iv.get("low"), iv.get("high"))

    return f"{one('dice_mean')} / {one('roc_auc')}"


def markdown_table(reports: list[dict]) -> str:
    """Markdown table, one column per report (model), one row per headline number."""
    rows: list[tuple[str, list[str]]] = []

    def row(label, fn):
        rows.append((label, [fn(r) for r in reports]))

    row("images (fractured / negative / skipped)", lambda r: f"{r['counts']['fractured_images']} / {r['counts']['negative_images']} / {r['counts']['skipped_unreadable']}")
    row("threshold", lambda r: _fmt(r["threshold"], 2))
    row("Dice, mean (median)", lambda r: f"{_fmt(r['segmentation']['dice_mean'])} ({_fmt(r['segmentation']['dice_median'])})")
    row("IoU, mean (median)", lambda r: f"{_fmt(r['segmentation']['iou_mean'])} ({_fmt(r['segmentation']['iou_median'])})")
    row("box AP@50", lambda r: _fmt(r["localization"]["ap50"]))
    row("box AP@25", lambda r: _fmt(r["localization"]["ap25"]))
    row("box recall@50 / @25 at threshold", lambda r: f"{_fmt(r['localization']['recall50_at_threshold'])} / {_fmt(r['localization']['recall25_at_threshold'])}")
    row("box / mask AP@50, COCOeval (fractured images only)", lambda r: "{} / {}".format(
        _fmt(r["localization"].get("coco_fractured_only", {}).get("box_ap50")),
        _fmt(r["localization"].get("coco_fractured_only", {}).get("mask_ap50"))))
    row("image ROC-AUC", lambda r: _fmt(r["image_level"]["roc_auc"]))
    row("ROC-AUC by image score", lambda r: ", ".join(f"{k} {_fmt(v)}" for k, v in r["image_level"].get("roc_auc_by_score", {}).items()))
    row("95 % interval: Dice mean / ROC-AUC (bootstrap over images)", _intervals_cell)
    row("calibration error (ECE) after / before", lambda r: f"{_fmt(r['calibration']['ece'])} / {_fmt(r['calibration']['ece_uncalibrated'])}"
        if r.get("calibration") else "not calibrated")
    row("sensitivity / specificity", lambda r: f"{_fmt(r['image_level']['sensitivity'])} / {_fmt(r['image_level']['specificity'])}")
    row("false findings per negative image", lambda r: _fmt(r["image_level"]["false_findings_per_negative_image"], 2))
    row("pixel accuracy: model vs all-background", lambda r: f"{_fmt(r['pixel_accuracy']['all_images']['model'], 4)} vs {_fmt(r['pixel_accuracy']['all_images']['all_background'], 4)}")
    parts = []
    for r in reports:
        parts += [p for p in r["by_body_part"] if p not in parts]
    for p in parts:
        def cell(r, p=p):
            b = r["by_body_part"].get(p)
            if not b or not b["n_fractured"]:
                return "n/a"
            return f"{_fmt(b['dice_mean'])} / {_fmt(b['sensitivity'])} (n={b['n_fractured']})"
        row(f"{p}: Dice / sensitivity", cell)
    header = "| " + " | ".join([f"{reports[0]['split']} split"] + [r["model_label"] for r in reports]) + " |"
    sep = "|" + "---|" * (len(reports) + 1)
    body = ["| " + " | ".join([label, *cells]) + " |" for label, cells in rows]
    return "\n".join([header, sep, *body]) + "\n"


def _plot_pr(ev: Evaluation, path: Path) -> None:
    import matplotlib.pyplot as plt

    r = ev.report
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    for tag, color in (("50", "tab:blue"), ("25", "tab:orange")):
        precision, recall = ev.curves[f"pr{tag}"]
        if precision.size:
            ax.step(np.concatenate([[0], recall]), np.concatenate([[precision[0]], precision]), where="post", color=color,
                    label=f"IoU ≥ 0.{tag}: AP {_fmt(r['localization'][f'ap{tag}'])}")
        else:
            ax.plot([], [], color=color, label=f"IoU ≥ 0.{tag}: no findings")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall (annotated fractures found)", ylabel="precision (findings that are fractures)")
    _finish_plot(fig, ax, path, f"{r['model_label']}, {r['split']}: findings PR (threshold {r['threshold']:.2f})", "upper right")


def _plot_roc(ev: Evaluation, path: Path) -> None:
    import matplotlib.pyplot as plt

    r = ev.report
    fpr, tpr, _ = ev.curves["roc"]
    il = r["image_level"]
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="chance")
    ax.plot(fpr, tpr, color="tab:blue", label=f"max-probability score, AUC {_fmt(il['roc_auc'])}")
    if il["sensitivity"] is not None and il["specificity"] is not None:
        ax.plot([1 - il["specificity"]], [il["sensitivity"]], "o", color="tab:red", label=f"findings at threshold {r['threshold']:.2f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="1 - specificity (negatives flagged)", ylabel="sensitivity (fractured images flagged)")
    _finish_plot(fig, ax, path, f"{r['model_label']}, {r['split']}: image-level ROC ({il['n_fractured']} fractured, {il['n_negative']} negative)",
                 "lower right")


def _finish_plot(fig, ax, path: Path, title: str, legend_loc: str) -> None:
    """Title, legend and grid of a one-axes report plot; save it and free the figure."""
    import matplotlib.pyplot as plt

    ax.set_title(title, fontsize=9)
    ax.legend(loc=legend_loc, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _thumbnail(case: Case, threshold: float, height: int = 160) -> np.ndarray:
    """RGB uint8 thumbnail: annotation outline green, predicted outline red (drawn at full size)."""
    import cv2

    from prediction import display_gray

    gray = display_gray(case.record.load_pixels())
    rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    h, w = gray.shape
    thick = max(2, round(max(h, w) / 150))
    for mask, color in ((case.truth(), (0, 220, 0)), (case.result.prob >= threshold, (255, 40, 40))):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(rgb, contours, -1, color, thick)
    return cv2.resize(rgb, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)


def _plot_grid(ev: Evaluation, path: Path) -> bool:
    """The 8 best and 8 worst fractured images by Dice (fewer if the set is small). False if none."""
    import matplotlib.pyplot as plt

    r = ev.report
    dice = {p["image_id"]: p["dice"] for p in r["per_image"] if p["fractured"]}
    frac = sorted((c for c in ev.cases if c.fractured), key=lambda c: (-dice[c.record.image_id], c.record.image_id))
    if not frac:
        return False
    n_best = min(GRID_N, (len(frac) + 1) // 2)
    best = frac[:n_best]
    worst = frac[n_best:][-GRID_N:][::-1]  # worst first
    cols = max(len(best), len(worst), 1)
    width = max(1.7 * cols, 7.5)  # wide enough for title and credit even with a few images
    # Tall enough that each row's two-line titles clear the row above.
    fig, axes = plt.subplots(2, cols, figsize=(width, 5.4), dpi=100, squeeze=False, gridspec_kw={"hspace": 0.35})
    for row_i, (label, group) in enumerate((("best", best), ("worst", worst))):
        for col in range(cols):
            ax = axes[row_i][col]
            ax.axis("off")
            if col < len(group):
                c = group[col]
                ax.imshow(_thumbnail(c, r["threshold"]))
                ax.set_title(f"{c.record.image_id.removesuffix('.jpg')}\n{c.record.body_part}, Dice {dice[c.record.image_id]:.2f}", fontsize=7)
        axes[row_i][0].text(-0.08, 0.5, f"{len(group)} {label}", transform=axes[row_i][0].transAxes, rotation=90,
                            va="center", ha="right", fontsize=9)
    fig.suptitle(f"{r['model_label']}, {r['split']} split, threshold {r['threshold']:.2f}: green = annotation, red = model", fontsize=9)
    fig.text(0.5, 0.01, textwrap.fill(CREDIT, int(width * 16)), ha="center", va="bottom", fontsize=6, color="0.3")
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.06, top=0.86, wspace=0.08, hspace=0.35)
    fig.savefig(path)
    plt.close(fig)
    return True


def write_report(ev: Evaluation, out_dir: Path | str, grid: bool | None = None) -> list[Path]:
    """Write ``<model>_<split>.json``/``.md``/``_pr.png``/``_roc.png`` (+ ``_grid.png`` on test) into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = ev.report.get("source") or "FracAtlas"
    stem = f"{ev.report['model']}_{ev.report['split']}" if source == "FracAtlas" else f"{ev.report['model']}_{source.lower()}_{ev.report['split']}"
    written = [out / f"{stem}.json", out / f"{stem}.md", out / f"{stem}_pr.png", out / f"{stem}_roc.png"]
    written[0].write_text(json.dumps(ev.report, indent=2) + "\n", encoding="utf-8")
    written[1].write_text(markdown_table([ev.report]), encoding="utf-8")
    _plot_pr(ev, written[2])
    _plot_roc(ev, written[3])
    if grid if grid is not None else ev.report["split"] == "test":
        if _plot_grid(ev, out / f"{stem}_grid.png"):
            written.append(out / f"{stem}_grid.png")
    return written
