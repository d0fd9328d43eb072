"""A run's records in ``<checkpoint-dir>/<model>/``: ``history.csv`` (one row per epoch),
``runs.jsonl`` (one line per invocation), ``prior.json`` and ``best.json``, the manifest
facts read back from them (:func:`run_facts`), and the shipped run's history beside the
weights (:func:`ship_history`)."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from important_variables import CONFIG, MODEL_LABELS
from inference.manifest import entry_for_file
from training.recipe import LOSS_NOTES, load_weights_model

SNAPSHOT = re.compile(r"ep(\d+)\.weights\.h5")
#: The valid columns of a history plot and their legend words: the Validator's in-training scores.
PLOT_COLUMNS = (("val_dice", "Dice"), ("val_ap25", "box AP@25"), ("val_auc", "image AUC"),
                ("val_false_findings_per_negative", "false findings per negative"))


def read_history(path: Path) -> list[dict]:
    """Rows of ``history.csv`` (values as strings), [] when absent."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_history_row(path: Path, row: dict) -> None:
    """Add one epoch's row: rows of that epoch or later (replayed after a kill) are replaced; the
    header is the union of the old one and the row's keys, written atomically."""
    rows = [r for r in read_history(path) if int(float(r["epoch"])) < int(row["epoch"])]
    fields = list(rows[0].keys()) if rows else ["epoch"]
    fields += sorted(k for k in row if k not in fields)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in [*rows, row]:
            w.writerow({k: r.get(k, "") for k in fields})
    os.replace(tmp, path)


def total_minutes(rows: list[dict]) -> float:
    """Training minutes through the last of ``rows``. ``minutes`` is cumulative per process in
    runs of the old trainer and across resumes in this one; a drop marks a restart."""
    total, prev = 0.0, 0.0
    for r in rows:
        m = float(r.get("minutes") or 0.0)
        total += m - prev if m >= prev else m
        prev = m
    return total


def finite_values(rows: list[dict], key: str) -> list[tuple[int, float]]:
    """(1-based epoch, value) of the rows where ``key`` holds a finite number."""
    pairs = [(int(float(r["epoch"])) + 1, float(r[key])) for r in rows if r.get(key) not in (None, "", "nan")]
    return [(e, v) for e, v in pairs if math.isfinite(v)]


def best_so_far(ckpt: Path, rows: list[dict], monitor: str) -> float | None:
    """The monitored value ``best.keras`` holds (best.json), else the history's best; None for a new run."""
    best_json = ckpt / "best.json"
    if best_json.is_file():
        return float(json.loads(best_json.read_text())["value"])
    vals = [v for _, v in finite_values(rows, monitor)]
    return max(vals) if vals else None


def note_run(ckpt: Path, args, command: str, policy: str, start: int, valid_scoring: dict | None = None) -> None:
    """Append this invocation to runs.jsonl (with ``valid_scoring``: the Validator's settings, what its
    epochs were scored with); on a fresh --init-from run, freeze the start model's manifest facts."""
    with open(ckpt / "runs.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"date": datetime.now(UTC).isoformat(timespec="seconds"), "command": command, "precision": policy,
                             "backend": os.environ.get("KERAS_BACKEND", "tensorflow"), "loss": args.loss,
                             "teacher": args.teacher,
                             "sources": args.sources, "pretrained": args.pretrained,
                             "fracatlas_share": args.fracatlas_share, "augment": args.augment,
                             "first_epoch": start + 1, "epochs": args.epochs, "init_from": args.init_from,
                             "valid_scoring": valid_scoring}) + "\n")
    prior = ckpt / "prior.json"
    if args.init_from and start == 0 and not prior.is_file():
        entry = entry_for_file(args.init_from)
        keep = ("file", "sha256", "training_command", "training_minutes", "epochs", "samples_seen")
        prior.write_text(json.dumps({k: entry.get(k) for k in keep if entry and entry.get(k) is not None}))


def source_epoch(name: str, source: Path, run_dir: Path, weights: list[np.ndarray] | None = None) -> int | None:
    """1-based epoch of the weights in ``source``: from its name, best.json, or by matching the snapshots.
    ``weights`` (those of ``source``) are loaded from it only when the snapshots must be compared."""
    m = SNAPSHOT.fullmatch(source.name)
    if m:
        return int(m.group(1))
    best_json = run_dir / "best.json"
    if source.name == "best.keras" and best_json.is_file():
        return int(json.loads(best_json.read_text())["epoch"])
    # A run of the old trainer wrote no best.json: find the snapshot with the same weights.
    for snap in sorted((run_dir / "epochs").glob("ep*.weights.h5"), reverse=True):
        if weights is None:
            weights = load_weights_model(name, source).get_weights()
        other = load_weights_model(name, snap).get_weights()
        if all(np.array_equal(a, b) for a, b in zip(weights, other, strict=True)):
            return int(SNAPSHOT.fullmatch(snap.name).group(1))
    return None


def plot_history(rows: list[dict], path: Path, title: str, shipped_epoch: int | None = None) -> None:
    """Draw a run's ``history.csv`` rows to the PNG ``path``: training loss (left) and the valid
    scores of :data:`PLOT_COLUMNS` (right, from 0) per 1-based epoch, ``shipped_epoch`` dashed."""
    from matplotlib.figure import Figure  # no pyplot: no backend or global figure state
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8.0, 3.4), dpi=100)
    loss_ax, valid_ax = fig.subplots(1, 2)
    for ax, key, words in ((loss_ax, "loss", "training loss"), *((valid_ax, k, w) for k, w in PLOT_COLUMNS)):
        pairs = finite_values(rows, key)
        if pairs:
            ax.plot(*zip(*pairs, strict=True), marker=".", label=words)
    valid_ax.set_ylim(bottom=0)  # scores are 0-1; false findings per negative may pass 1
    for ax, what in ((loss_ax, "loss"), (valid_ax, "valid score")):
        if shipped_epoch is not None:
            ax.axvline(shipped_epoch, color="0.4", linestyle="--", linewidth=1, label=f"shipped: epoch {shipped_epoch}")
        ax.set(xlabel="epoch", ylabel=what)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def ship_history(name: str, run_dir: Path | None, epoch: int | None,
                 out_dir: Path | str = CONFIG.saved_model_dir) -> list[Path]:
    """Copy the ``history.csv`` of ``run_dir`` (the run of the shipped weights) to
    ``<out_dir>/<name>.history.csv`` and plot it to ``.history.png`` (:func:`plot_history`, the
    shipped 1-based ``epoch`` marked). Without a run or its rows (a weight average: ``run_dir``
    None) both are removed: the files there describe the weights this ship replaces.
    Returns the written paths."""
    out_dir = Path(out_dir)
    csv_path, png_path = out_dir / f"{name}.history.csv", out_dir / f"{name}.history.png"
    source = run_dir / "history.csv" if run_dir is not None else None
    rows = read_history(source) if source is not None else []
    if not rows:
        csv_path.unlink(missing_ok=True)
        png_path.unlink(missing_ok=True)
        return []
    tmp = csv_path.with_suffix(".tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, csv_path)
    plot_history(rows, png_path, f"{MODEL_LABELS.get(name, name)}: last training run (valid scored during training)", epoch)
    return [csv_path, png_path]


def run_dir_of(source: Path) -> Path:
    """The checkpoint folder ``<checkpoint-dir>/<model>`` that holds ``source`` (best.keras or epochs/epNNN)."""
    return source.parent.parent if source.parent.name == "epochs" else source.parent


def run_facts(name: str, source: Path, weights: list[np.ndarray] | None = None) -> dict:
    """Manifest facts of the training behind the weights in ``source``, from its run folder:
    training_command, epochs, samples_seen, training_minutes, training_precision, loss,
    shipped_from, valid_at_epoch, prior_training. Keys without a value are left out.
    ``weights`` (those of ``source``, when at hand) spare a reload if its epoch must be found by matching."""
    run_dir = run_dir_of(source)
    rows = read_history(run_dir / "history.csv")
    epoch = source_epoch(name, source, run_dir, weights)
    upto = rows[:epoch] if epoch is not None else rows
    last = upto[-1] if upto else {}
    runs = [json.loads(line) for line in (run_dir / "runs.jsonl").read_text().splitlines()] if (run_dir / "runs.jsonl").is_file() else []
    commands = [r["command"] for i, r in enumerate(runs) if i == 0 or r["command"] != runs[i - 1]["command"]]
    prior = json.loads((run_dir / "prior.json").read_text()) if (run_dir / "prior.json").is_file() else {}
    facts = {
        "training_command": " && ".join(c for c in (prior.get("training_command"), *commands) if c) or None,
        "epochs": epoch if epoch is not None else len(rows),
        "samples_seen": int(float(last["samples"])) if last.get("samples") else None,
        "training_minutes": round(total_minutes(upto), 1),
        "training_precision": sorted({r["precision"] for r in runs}) or None,
        "loss": " then ".join(dict.fromkeys(LOSS_NOTES[r.get("loss", "ce_dice_fractured")] for r in runs)) or None,
        "shipped_from": str(source),
        "valid_at_epoch": {k: float(v) for k, v in last.items() if k.startswith("val_") and v not in ("", None)},
        "prior_training": prior or None,
    }
    return {k: v for k, v in facts.items() if v is not None}
