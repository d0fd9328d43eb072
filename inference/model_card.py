"""What the Models page says about each model, computed from its files. Pure Python/numpy, no UI.

Inputs are the evaluation's ``Saved_model/<model>.metrics.json`` (test split) and the
model's manifest entry. Out come a short table of named metrics with their n, one
plain-language verdict per model written from those numbers, and the reliability
check of the calibrated likelihood.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from important_variables import MODEL_LABELS
from inference.calibration import reliability_report, scores_and_labels, valid_calibration
from inference.manifest import bf16_check_refusal


def read_metrics(path: Path) -> dict | None:
    """A model's ``<model>.metrics.json``; None when absent or unreadable (not evaluated yet)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _get(data: Mapping | None, *path: str):
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    if isinstance(data, bool) or not isinstance(data, int | float) or not math.isfinite(data):
        return None
    return data


@dataclass(frozen=True)
class MetricRow:
    """One row of the table: its label, where the value is, and what it is counted over."""

    label: str
    value: tuple[str, ...]
    n: tuple[tuple[str, ...], ...]  # summed when several (e.g. fractured + fracture-free images)
    unit: str
    interval: str | None = None  # its name in the report's "intervals" (evaluation.intervals), if it has one


ROWS: tuple[MetricRow, ...] = (
    MetricRow("Dice (mean per fractured image)", ("segmentation", "dice_mean"), (("segmentation", "n_images"),),
              "fractured images", "dice_mean"),
    MetricRow("IoU (mean per fractured image)", ("segmentation", "iou_mean"), (("segmentation", "n_images"),),
              "fractured images"),
    MetricRow("Box AP@50", ("localization", "ap50"), (("localization", "n_annotated_boxes"),), "annotated fractures"),
    MetricRow("Box AP@25", ("localization", "ap25"), (("localization", "n_annotated_boxes"),), "annotated fractures"),
    MetricRow("ROC-AUC (fracture or not)", ("image_level", "roc_auc"),
              (("image_level", "n_fractured"), ("image_level", "n_negative")), "images", "roc_auc"),
    MetricRow("Sensitivity at the threshold", ("image_level", "sensitivity"), (("image_level", "n_fractured"),),
              "fractured images", "sensitivity"),
    MetricRow("Specificity at the threshold", ("image_level", "specificity"), (("image_level", "n_negative"),),
              "fracture-free images", "specificity"),
    MetricRow("False findings per fracture-free image", ("image_level", "false_findings_per_negative_image"),
              (("image_level", "n_negative"),), "fracture-free images", "false_findings_per_negative_image"),
)
ECE_LABEL = "Calibration error (ECE) of the likelihood"


def _n(metrics: Mapping | None, row: MetricRow) -> int | None:
    parts = [_get(metrics, *p) for p in row.n]
    return None if any(p is None for p in parts) else int(sum(parts))


def _interval(metrics: Mapping | None, row: MetricRow) -> tuple[float, float] | None:
    """(low, high) of the row's 95 % interval in the report, or None (no interval for it, or an older report)."""
    if row.interval is None:
        return None
    low, high = (_get(metrics, "intervals", "metrics", row.interval, k) for k in ("low", "high"))
    return None if low is None or high is None else (low, high)


def interval_text(low: float | None, high: float | None, digits: int = 3, signed: bool = False) -> str:
    """A 95 % interval as every view writes it: "0.165–0.330", signed (a difference) "-0.087 to +0.004";
    "n/a" when there is none."""
    if low is None or high is None:
        return "n/a"
    if signed:
        return f"{low:+.{digits}f} to {high:+.{digits}f}"
    return f"{low:.{digits}f}–{high:.{digits}f}"


def with_interval(value: float | None, low: float | None = None, high: float | None = None, digits: int = 3,
                  signed: bool = False) -> str:
    """"0.245 (0.165–0.330)", or "+0.040 (+0.004 to +0.087)" signed; "0.245" without an interval; "–" without a value."""
    if value is None:
        return "–"
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return text if low is None or high is None else f"{text} ({interval_text(low, high, digits, signed)})"


def _fmt(value, interval: tuple[float, float] | None = None) -> str:
    """:func:`with_interval` of a value and its (low, high) or None."""
    return with_interval(value, *(interval or (None, None)))


def _n_text(ns: Sequence[int | None], unit: str) -> str:
    known = [n for n in ns if n is not None]
    if not known:
        return "–"
    return f"{known[0]} {unit}" if len(set(known)) == 1 else " / ".join("–" if n is None else str(n) for n in ns) + f" {unit}"


def named_metrics_rows(metrics: Mapping[str, Mapping | None], checks: Mapping[str, Mapping | None] | None = None) -> list[dict]:
    """The short metrics table: {"metric", <label of each model>: value text, "n": what it is counted over}.

    metrics: model label → its metrics dict (None: not evaluated). checks: model label →
    its :func:`reliability_check` (None: not calibrated), for the ECE row.
    """
    rows = []
    for row in ROWS:
        out = {"metric": row.label}
        out.update({label: _fmt(_get(m, *row.value), _interval(m, row)) for label, m in metrics.items()})
        out["n"] = _n_text([_n(m, row) for m in metrics.values()], row.unit)
        rows.append(out)
    checks = checks or {}
    ece = {"metric": ECE_LABEL}
    ns = []
    for label in metrics:
        c = checks.get(label)
        calibrated = c is not None and c.get("calibrated")
        ece[label] = _fmt(c["ece"]) if calibrated else "not calibrated"
        ns.append(c["n"] if calibrated else None)
    splits = {c["split"] for c in checks.values() if c is not None and c.get("calibrated")}
    ece["n"] = _n_text(ns, "images" + (f" ({', '.join(sorted(splits))})" if splits else ""))
    rows.append(ece)
    return rows


# --------------------------------------------------------------------------- verdict
# Plain words for a number, as (upper bound, words) bands in rising order: the first band whose
# bound the number is below names it. ROC-AUC of the image-level score; mean Dice of the regions.
AUC_WORDS = ((0.6, "about as good as chance"), (0.7, "weak"), (0.8, "moderate"), (0.9, "good"), (math.inf, "strong"))
OVERLAP_WORDS = ((0.2, "rarely overlap"), (0.4, "partly overlap"), (0.6, "mostly overlap"), (math.inf, "closely match"))


def _words(value: float, bands: Sequence[tuple[float, str]]) -> str:
    """The words of the first of ``bands`` whose upper bound ``value`` is below (the last bound is inf)."""
    return next(words for bound, words in bands if value < bound)


def verdict(metrics: Mapping | None) -> str:
    """One plain-language paragraph about a model, written only from its test-split numbers."""
    if not metrics:
        return "Not evaluated yet: there are no test-split numbers to judge it by."
    auc = _get(metrics, "image_level", "roc_auc")
    sens, spec = _get(metrics, "image_level", "sensitivity"), _get(metrics, "image_level", "specificity")
    dice, ap50 = _get(metrics, "segmentation", "dice_mean"), _get(metrics, "localization", "ap50")
    n_img = _n(metrics, ROWS[4])
    parts = []
    if auc is not None:
        parts.append(f"Telling fractured from fracture-free X-rays: {_words(auc, AUC_WORDS)} (ROC-AUC {auc:.2f}"
                     + (f" on {n_img} test images)." if n_img else ")."))
    if sens is not None and spec is not None:
        parts.append(f"At its threshold it marks something on {round(sens * 10)} in 10 fractured images "
                     f"and on {round((1 - spec) * 10)} in 10 fracture-free ones.")
    if dice is not None:
        where = f"Its marked regions {_words(dice, OVERLAP_WORDS)} the annotated fracture (mean Dice {dice:.2f})"
        if ap50 is not None:
            where += (", and its boxes rarely match the annotated box" if ap50 < 0.1 else
                      ", and its boxes often match the annotated box" if ap50 >= 0.4 else
                      ", and its boxes match the annotated box now and then") + f" (AP@50 {ap50:.2f})"
        parts.append(where + ".")
    weak = (auc is not None and auc < 0.75) or (dice is not None and dice < 0.2)
    parts.append("Treat a mark as a hint to look again, and an unmarked image as not checked." if weak else
                 "A useful second look, but it still misses fractures and marks healthy bone.")
    return " ".join(parts)


# --------------------------------------------------------------------------- calibration check
def reliability_check(metrics: Mapping | None, entry: Mapping | None) -> dict | None:
    """How well the likelihood is calibrated, for the Models page.

    With a usable calibration in ``entry``: its reliability on the evaluated split
    (from the metrics' per-image scores when they hold the entry's ``image_score``,
    else the check stored with the calibration), "calibrated": True. Without one: the
    raw image score read as a probability, "calibrated": False, so the page can show
    why calibration matters. None when there is nothing to show. The dict is a
    :func:`calibration.reliability_report` plus "calibrated", "image_score" and "source".
    """
    entry = entry or {}
    kind = entry.get("image_score") or "max_prob"
    values = scores_and_labels((metrics or {}).get("per_image") or [], kind)
    split = str((metrics or {}).get("split", "test"))
    cal = valid_calibration(entry.get("calibration"))
    if cal is not None:
        if values is not None:
            report = reliability_report(*values, cal, split=split)
            return {**report, "calibrated": True, "image_score": kind, "source": f"{split} split"}
        stored = cal.get("reliability")
        if isinstance(stored, Mapping) and isinstance(stored.get("bins"), list) and _get(stored, "ece") is not None:
            source = f"{stored.get('split', '?')} split" + (", in-sample (optimistic)" if stored.get("in_sample") else "")
            return {**stored, "calibrated": True, "image_score": kind, "source": source}
        return None
    if values is None:
        return None
    identity = {"x": [0.0, 1.0], "y": [0.0, 1.0]}  # the raw score read as a probability
    report = reliability_report(*values, identity, split=split)
    return {**report, "calibrated": False, "image_score": kind, "source": f"{split} split, raw score"}


# --------------------------------------------------------------------------- operating points
def _same_threshold(a: float, b: float) -> bool:
    """Equal as the slider shows them (two decimals)."""
    return abs(a - b) < 0.005


def _split_name(entry: Mapping) -> str:
    split = (entry.get("operating_points") or {}).get("split") or "valid"
    return "validation" if split == "valid" else split


def operating_points(entry: Mapping | None) -> list[dict]:
    """The entry's ``operating_points`` rows (what each swept threshold did on valid), ascending by
    threshold; rows without a number for threshold, sensitivity or false findings are left out;
    [] when the entry has none (chosen before they were recorded, or replaced by a ship)."""
    points = entry.get("operating_points") if isinstance(entry, Mapping) else None
    rows = points.get("rows") if isinstance(points, Mapping) else None
    if not isinstance(rows, list):
        return []
    keep = [r for r in rows if isinstance(r, Mapping)
            and all(_get(r, k) is not None for k in ("threshold", "sensitivity", "false_findings_per_negative"))]
    return sorted(keep, key=lambda r: r["threshold"])


def operating_point_at(entry: Mapping | None, threshold: float) -> dict | None:
    """The recorded row nearest to ``threshold`` (ties: the higher threshold); None without rows."""
    rows = operating_points(entry)
    if not rows:
        return None
    # Rounded: 0.85 lies as far from 0.80 as from 0.90, which float subtraction would not say.
    return min(rows, key=lambda r: (round(abs(r["threshold"] - threshold), 6), -r["threshold"]))


def _images_text(entry: Mapping) -> str:
    points = entry.get("operating_points") or {}
    n = [points.get("fractured_images"), points.get("negative_images")]
    split = _split_name(entry)
    return f"the {n[0] + n[1]} {split} X-rays" if all(isinstance(v, int) for v in n) else f"the {split} X-rays"


def threshold_tradeoff(entry: Mapping | None, threshold: float) -> str | None:
    """One sentence on what ``threshold`` trades, from the recorded row nearest to it; None without rows.

    Example: "On the 400 validation X-rays at 0.80: 74 % of those with a fracture got a finding,
    0.31 false findings per X-ray without one."
    """
    row = operating_point_at(entry, threshold)
    if row is None:
        return None
    t = row["threshold"]
    at = f"at {t:.2f}" if _same_threshold(t, threshold) else f"at {t:.2f} (the nearest tested threshold)"
    text = (f"On {_images_text(entry)} {at}: {row['sensitivity']:.0%} of those with a fracture got a finding, "
            f"{row['false_findings_per_negative']:.2f} false findings per X-ray without one")
    recall = _get(row, "box_recall25")
    if recall is not None:
        text += f"; {recall:.0%} of the annotated fractures were boxed"
    return text + "."


def operating_points_table(entry: Mapping | None, default_threshold: float | None = None) -> list[dict]:
    """Rows for the Models page: threshold, fractured images found, false findings per fracture-free
    image, annotated fractures boxed, F1; the default threshold's row says so. [] without rows."""
    out = []
    for r in operating_points(entry):
        recall, f1 = _get(r, "box_recall25"), _get(r, "f1")
        is_default = default_threshold is not None and _same_threshold(r["threshold"], default_threshold)
        out.append({
            "threshold": f"{r['threshold']:.2f}" + (" (default)" if is_default else ""),
            "fractured X-rays with a finding": f"{r['sensitivity']:.0%}",
            "false findings per fracture-free X-ray": f"{r['false_findings_per_negative']:.2f}",
            "annotated fractures boxed (IoU ≥ 0.25)": "–" if recall is None else f"{recall:.0%}",
            "findings F1": _fmt(f1),
        })
    return out


def miss_note(entry: Mapping | None, threshold: float) -> str | None:
    """For a "no fracture found" reading: how many fractured validation X-rays the model left unmarked
    at the recorded threshold nearest to ``threshold``; None without rows.

    Example: "At 0.90 this model left 45% of the fractured validation X-rays without any finding:
    no mark does not rule a fracture out."
    """
    row = operating_point_at(entry, threshold)
    if row is None:
        return None
    return (f"At {row['threshold']:.2f} this model left {1 - row['sensitivity']:.0%} of the fractured {_split_name(entry)} X-rays "
            "without any finding: no mark does not rule a fracture out.")


# --------------------------------------------------------------------------- per source
#: The data set a model was trained, evaluated and calibrated on, when a file does not name one.
DEFAULT_SOURCE = "FracAtlas"
#: The likelihood's calibration "holds" on a source when its ECE there is at most this
#: (a likelihood of 30 % is then off by 10 points or less on average) and the source has both classes.
CALIBRATION_HOLDS_ECE = 0.10


def reliability_by_source(metrics: Mapping | None, entry: Mapping | None) -> list[dict]:
    """The likelihood's reliability per image source of the evaluation, for the model card and for
    the words next to the likelihood.

    Sources are the ``source`` of the metrics' ``per_image`` records (absent = :data:`DEFAULT_SOURCE`);
    [] when the file has a single source, no per-image scores of the entry's image score, or the
    entry no usable calibration. Each item: {"source", "n", "n_fractured", "ece" (None when the
    source has one class only), "mean_likelihood", "share_fractured", "holds" (ECE ≤
    :data:`CALIBRATION_HOLDS_ECE`; False when it cannot be checked)}.
    """
    entry = entry or {}
    cal = valid_calibration(entry.get("calibration"))
    per_image = (metrics or {}).get("per_image") if isinstance(metrics, Mapping) else None
    if cal is None or not isinstance(per_image, list):
        return []
    kind = entry.get("image_score") or "max_prob"
    groups: dict[str, list] = {}
    for rec in per_image:
        if isinstance(rec, Mapping):
            groups.setdefault(str(rec.get("source") or DEFAULT_SOURCE), []).append(rec)
    if len(groups) < 2:
        return []
    from inference.calibration import apply_calibration, expected_calibration_error

    out = []
    for source, recs in sorted(groups.items()):
        pairs = [(_score(r, kind), r.get("fractured")) for r in recs]
        pairs = [(v, int(y)) for v, y in pairs if v is not None and isinstance(y, bool)]
        if not pairs:
            continue
        scores, labels = zip(*pairs, strict=True)
        probs = apply_calibration(list(scores), cal)
        both = 0 < sum(labels) < len(labels)
        ece = round(expected_calibration_error(probs, labels), 4) if both else None
        out.append({"source": source, "n": len(pairs), "n_fractured": int(sum(labels)), "ece": ece,
                    "mean_likelihood": round(float(sum(probs) / len(probs)), 4),
                    "share_fractured": round(sum(labels) / len(labels), 4),
                    "holds": ece is not None and ece <= CALIBRATION_HOLDS_ECE})
    return out


def _score(rec: Mapping, kind: str):
    scores = rec.get("image_scores")
    value = scores.get(kind) if isinstance(scores, Mapping) else (rec.get("fracture_score") if kind == "max_prob" else None)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) else None


def miss_notes_by_source(entry: Mapping | None, threshold: float) -> list[str]:
    """For a no-finding reading, the miss rate at the recorded threshold nearest to ``threshold`` per
    image source, from ``operating_points.by_source`` ({source: {"rows": [...]}}, same rows as the
    entry's own); [] when none are recorded. Example: "BoneFractureYolo8: 62% left without a finding at 0.90"."""
    points = entry.get("operating_points") if isinstance(entry, Mapping) else None
    by_source = points.get("by_source") if isinstance(points, Mapping) else None
    if not isinstance(by_source, Mapping):
        return []
    out = []
    for source, block in sorted(by_source.items()):
        row = operating_point_at({"operating_points": block}, threshold) if isinstance(block, Mapping) else None
        if row is not None:
            out.append(f"{source}: {1 - row['sensitivity']:.0%} of the fractured X-rays left without a finding at "
                       f"{row['threshold']:.2f}")
    return out


# --------------------------------------------------------------------------- training facts
#: Image scores in words (the manifest's ``image_score``).
IMAGE_SCORE_WORDS = {
    "max_prob": "the highest pixel score",
    "topk_mean": "the mean of the highest pixel scores (top 64)",
    "best_finding": "the best finding's score",
}
_ABS_OR_HIDDEN = re.compile(r"(?<![\w.])(?:/[^\s'\"]+|\.[A-Za-z0-9_-]+/[^\s'\"]*)")


def public_text(text: str) -> str:
    """``text`` without machine-specific paths: an absolute path or one under a hidden folder
    (``.scratch/unet.weights.h5``, ``/home/x/data/FracAtlas``) becomes its last part (``unet.weights.h5``,
    ``FracAtlas``); relative paths of the repository (``checkpoints/gpu/...``) stay."""
    def last_part(m: re.Match) -> str:
        parts = [p for p in m.group(0).rstrip("/").split("/") if p]
        return parts[-1] if parts else m.group(0)

    return _ABS_OR_HIDDEN.sub(last_part, str(text))


def _number(value) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def training_facts(entry: Mapping | None) -> list[tuple[str, str]]:
    """(label, value in words) rows of what the manifest says about a model's weights and settings.

    Counts of the last training run are labelled as such (the entry's ``epochs``, ``training_minutes``
    and ``samples_seen`` cover the run whose command is recorded, up to the shipped snapshot, not
    earlier runs it started from); "–" for what is not recorded. No paths, no internal keys.
    """
    entry = entry if isinstance(entry, Mapping) else {}
    command = str(entry.get("training_command") or "").split()
    start = public_text(command[command.index("--init-from") + 1]) if "--init-from" in command[:-1] else None
    margin = _get(entry, "borderline_margin")
    score = entry.get("image_score")
    rows = [
        ("Parameters", _number(entry.get("params"))),
        ("Members (fracture maps averaged)", _members_words(entry.get("members"))),
        ("Started from", f"earlier weights of the same model ({start})" if start else
         "random weights" if command else
         "its members' shipped weights (no training of its own)" if entry.get("members") else None),
        ("Epochs of the last run (up to the shipped snapshot)", _number(entry.get("epochs"))),
        ("Training crops of the last run", _number(entry.get("samples_seen"))),
        ("Minutes of the last run", _number(entry.get("training_minutes"))),
        ("Default threshold", None if _get(entry, "threshold") is None else f"{entry['threshold']:.2f}"),
        ("How the threshold was chosen", _threshold_words(entry)),
        ("Borderline band below the threshold", None if margin is None else
         ("none (no borderline state)" if margin == 0 else f"{margin:.2f}")),
        ("Image score (for the likelihood and ROC)", IMAGE_SCORE_WORDS.get(score, score) if isinstance(score, str) else None),
        ("bfloat16 inference", _bf16_words(entry)),
    ]
    return [(label, "–" if value is None else value) for label, value in rows]


def _members_words(members) -> str | None:
    """"Lite0-UNet x 0.75 + Simple encoder-decoder x 0.25" for an ensemble's ``members`` record; None otherwise."""
    if not isinstance(members, Mapping) or not members:
        return None
    weights = {name: float(m.get("weight", math.nan)) for name, m in members.items() if isinstance(m, Mapping)}
    return " + ".join(f"{MODEL_LABELS.get(name, name)} x {w:g}" for name, w in sorted(weights.items(), key=lambda kv: -kv[1]))


def _bf16_words(entry: Mapping) -> str:
    """What the entry's ``bf16_inference`` check says for these weights, by the very rule prediction
    applies (:func:`bf16_check_refusal`): used where native and faster, or float32 and why."""
    check = entry.get("bf16_inference")
    refusal = bf16_check_refusal(check, entry.get("sha256"))
    if refusal is None:
        members = check.get("members")
        where = ("in the " + " and ".join(MODEL_LABELS.get(m, m) for m in members) + " only (the rest float32), "
                 if members else "")
        return (f"checked on the validation images (largest metric change {_number(check.get('max_delta'))}): used "
                f"{where}on CPUs with native bfloat16 where it is faster, float32 elsewhere")
    return f"not used, runs in float32: {refusal}"


def _threshold_words(entry: Mapping) -> str | None:
    source = entry.get("threshold_source")
    if not isinstance(source, str):
        return None
    if "choose-threshold" in source or "chosen on valid" in source:
        return "on the validation images: the best F1 of findings matched to annotated fractures (box overlap ≥ 25 %)"
    return public_text(source)


__all__ = ["interval_text", "with_interval", "ROWS", "ECE_LABEL", "DEFAULT_SOURCE", "CALIBRATION_HOLDS_ECE",
           "IMAGE_SCORE_WORDS", "read_metrics", "named_metrics_rows", "verdict", "reliability_check", "reliability_by_source", "operating_points",
           "operating_point_at", "threshold_tradeoff", "operating_points_table", "miss_note", "miss_notes_by_source",
           "public_text", "training_facts"]
