"""Batch fracture localization from the command line.

    python predict.py INPUT... [--model unet|encoder_decoder] [--threshold T]
                      [--out DIR] [--json FILE] [--csv FILE]
                      [--engine local|ray [--address ADDRESS] [--summary FILE]]

INPUT: files (taken whatever their extension) or folders (recursed for every
format the decoder reads: .jpg .jpeg .png .dcm .bmp .webp .tif .tiff .gif; what a
folder holds besides is named in one line on stderr). For each image:
``<name>_annotated.png`` (with the dashed review box of a borderline result) and
``<name>_mask.png`` in ``--out``; one JSON object per file (``--json``, a list,
``-`` for stdout) and/or one CSV row: the app's findings JSON
(``inference.reading.result_record``), with ``status`` "finding", "borderline" (no finding,
but the highest score is within the model's margin of the threshold: review the
``review_box``) or "no_finding" (never a clear result), ``fracture_likelihood`` when
the model is calibrated (else null), ``unlike_training_images`` when the model has
that check, and ``reading``, the app's words. With none of --out/--json/--csv the
JSON goes to stdout. When no result goes to stdout, one line per file is printed
there: the file and its reading. A file that cannot be read gets an object with
``error`` set and one line on stderr; the others go on.

Exit status: 0 every file processed, 1 at least one failed, 2 usage error
(bad option, missing input, no images, or a model file that fails its SHA-256
check against the manifest).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cli import batch_ray
from cli.common import EXIT_FAILED, EXIT_OK, Parser, UsageError, positive_int, report_usage_error, threshold_arg
from imaging.image_io import read_image_file
from important_variables import CONFIG, DEFAULT_MODEL, MODEL_NAMES
from inference.manifest import ModelIntegrityError, verify_model_file
from inference.model_card import read_metrics, reliability_by_source
from inference.reading import result_record
from prediction import Source, encode_png, iter_predictions, predictor_for

log = logging.getLogger("predict")

CSV_FIELDS = ("file", "model", "width", "height", "threshold", "fracture_score", "image_score_name", "image_score", "status",
              "fracture_likelihood", "unlike_training_images", "ood_distance", "n_findings", "findings", "review_box",
              "reading", "error", "note")


# --------------------------------------------------------------------------- inputs
def collect_inputs(inputs: list[str], extensions: tuple[str, ...] = CONFIG.folder_extensions,
                   on_skipped=None) -> list[Path]:
    """Expand INPUT arguments to files, in a stable order (folders sorted, recursed).

    Files named explicitly are kept whatever their extension (the decoder looks at
    the bytes); inside folders only ``extensions`` are taken. Duplicates are dropped.
    ``on_skipped``: called once with one line naming what the folders held besides
    (counts per extension), when they held anything else.
    """
    out: list[Path] = []
    seen: set[Path] = set()
    skipped: dict[str, int] = {}
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found = []
            for q in sorted(q for q in p.rglob("*") if q.is_file()):
                if q.suffix.lower() in extensions:
                    found.append(q)
                else:
                    kind = q.suffix.lower() or "no extension"
                    skipped[kind] = skipped.get(kind, 0) + 1
        elif p.exists():
            found = [p]
        else:
            raise UsageError(f"{raw}: no such file or folder")
        for q in found:
            key = q.resolve()
            if key not in seen:
                seen.add(key)
                out.append(q)
    if skipped and on_skipped is not None:
        n = sum(skipped.values())
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))
        on_skipped(f"skipped {n} file{'s' if n != 1 else ''} in the folders that are not of a type it reads ({kinds}); "
                   "name a file on the command line to try it anyway")
    if not out:
        raise UsageError(f"no images found in {', '.join(inputs)} (looked for {' '.join(extensions)})")
    return out


def output_stems(paths: list[Path]) -> list[str]:
    """``<stem>`` per file for the output names; repeated stems get ``-2``, ``-3``..."""
    used: dict[str, int] = {}
    stems = []
    for p in paths:
        stem = p.stem
        n = used.get(stem, 0) + 1
        used[stem] = n
        stems.append(stem if n == 1 else f"{stem}-{n}")
    return stems


# --------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ModelChoice:
    name: str
    path: Path
    sha256: str | None
    threshold: float
    entry: object = None  # model_manifest.ModelEntry: inference scale, finding rule, image score, margin, calibration


def resolve_model(name: str, model_file: str | None, allow_unverified: bool) -> ModelChoice:
    """Which file to load, its SHA-256 and default threshold, checked by ``inference.manifest``'s trust rule.

    The manifest is the ``manifest.json`` next to the model file, the entry the one
    whose ``file`` is the model's file name. A file no manifest vouches for is
    refused unless ``allow_unverified`` (e.g. a fresh training output).
    """

    path = Path(model_file) if model_file else CONFIG.model_path(name)
    if not path.is_file():
        raise UsageError(f"{path}: model file not found")
    try:
        checked = verify_model_file(path, allow_unverified=allow_unverified)
    except ModelIntegrityError as exc:
        raise UsageError(f"model refused: {exc}") from exc
    threshold = checked.entry.threshold if checked.entry else CONFIG.default_threshold
    return ModelChoice(name, path, checked.sha256, threshold, checked.entry)


def load_predictor(choice: ModelChoice):
    """Load the checked file (hash pinned to the one checked) behind the compiled, warmed-up forward pass."""
    from create_segmentation_model import load_segmentation_model  # Keras: imported only when a model is loaded

    model = load_segmentation_model(choice.path, choice.sha256, compile=False, allow_unverified=True)
    return predictor_for(model, choice.name, choice.entry)


# --------------------------------------------------------------------------- work
def write_outputs(out_dir: Path, stem: str, pixels: np.ndarray, result, review_box=None) -> None:
    """``<stem>_annotated.png`` (RGB overlay, with the dashed ``review_box`` of a borderline result)
    and ``<stem>_mask.png`` (0/255) at the image's size."""

    # Compression level 1: ~3x faster to write than the default 3, files ~10 % larger.
    box = None if review_box is None else tuple(review_box)
    (out_dir / f"{stem}_annotated.png").write_bytes(encode_png(result.overlay(pixels, review_box=box), compression=1))
    (out_dir / f"{stem}_mask.png").write_bytes(result.mask_png(compression=1))


def run(
    files: list[Path],
    predictor,
    model_name: str,
    threshold: float,
    out_dir: Path | None,
    batch_size: int = 8,
    progress: bool = True,
    on_first_result=None,
    entry: dict | None = None,
    by_source: list[dict] | None = None,
) -> list[dict]:
    """Process ``files`` in order through ``prediction.iter_predictions``; one record
    (``inference.reading.result_record``, the app's findings JSON) per file. ``entry``: the model's
    manifest entry (borderline margin, calibration, operating points; None = defaults);
    ``by_source``: ``inference.model_card.reliability_by_source`` of the model, for the likelihood's words.

    Decoding runs ahead in a worker thread and PNG writing in another while the
    model runs, so the two cores stay busy with the model. A file that fails
    (decode, model, drawing or writing its PNGs) gets its one-line ``error``; the
    others go on.
    """

    stems = dict(zip(files, output_stems(files), strict=True))
    sources = [Source(str(p), (lambda p=p: read_image_file(p, name=str(p))), p) for p in files]
    records: list[dict] = []
    writes: list[tuple[dict, Future]] = []
    bar = tqdm(total=len(files), unit="img", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    with ThreadPoolExecutor(max_workers=1) as writer:
        for o in iter_predictions(predictor, sources, threshold, batch_size, workers=1):
            rec = result_record(o.result, o.name, model_name, entry, note=o.note, error=o.error, by_source=by_source or ())
            if o.error is not None:
                bar.write(f"error: {o.error}", file=sys.stderr)
            else:
                if out_dir is not None:
                    writes.append((rec, writer.submit(write_outputs, out_dir, stems[o.tag], o.pixels, o.result,
                                                      rec["review_box"])))
                if on_first_result is not None:
                    on_first_result()
                    on_first_result = None
            records.append(rec)
            bar.update(1)
        for rec, fut in writes:
            try:
                fut.result()
            except Exception as exc:  # disk full, permissions, a drawing bug: this file's error
                rec["error"] = " ".join(f"{rec['file']}: cannot write its PNGs ({type(exc).__name__}: {exc})".split())
                bar.write(f"error: {rec['error']}", file=sys.stderr)
    bar.close()
    return records


# --------------------------------------------------------------------------- output
def summary_line(rec: dict) -> str:
    """One line per file for the terminal: the file and its reading, in the app's words (or the error)."""
    if rec.get("error") is not None:
        return f"{rec['file']}: error: {rec['error']}"
    return f"{rec['file']}: {rec['reading']}"


def write_json(records: list[dict], dest: str) -> None:
    text = json.dumps(records, indent=2)
    if dest == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(dest).write_text(text + "\n", encoding="utf-8")


def write_csv(records: list[dict], dest: str) -> None:
    """One row per file; ``findings`` is the JSON list of {box, score, area_px}."""
    fh = sys.stdout if dest == "-" else open(dest, "w", newline="", encoding="utf-8")
    try:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in records:
            row = {k: r.get(k) for k in CSV_FIELDS if k not in ("n_findings", "findings", "review_box")}
            row["n_findings"] = len(r["findings"]) if r["error"] is None else ""
            row["findings"] = json.dumps(r["findings"], separators=(",", ":"))
            row["review_box"] = None if r.get("review_box") is None else json.dumps(r["review_box"], separators=(",", ":"))
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    finally:
        if fh is not sys.stdout:
            fh.close()


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="predict.py",
        description="Mark probable fracture regions on X-rays (files or folders).",
        epilog="Exit status: 0 all files processed, 1 some failed, 2 usage error or untrusted model file.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help=f"image files or folders (recursed for {' '.join(CONFIG.folder_extensions)})")
    p.add_argument("--model", choices=MODEL_NAMES, default=DEFAULT_MODEL, help="which shipped model")
    p.add_argument("--model-file", metavar="PATH", help="a .keras file instead of the shipped one; verified against the "
                   "manifest.json next to it (default: the shipped file of --model)")
    p.add_argument("--allow-unverified", action="store_true", help="load a --model-file that no manifest lists (default: refuse it)")
    p.add_argument("--threshold", type=threshold_arg, help="probability threshold in (0, 1) (default: the model's, from the manifest)")
    p.add_argument("--out", metavar="DIR", help="write <name>_annotated.png and <name>_mask.png here (default: no images written)")
    p.add_argument("--json", metavar="FILE", help="write the results as a JSON list, '-' for stdout "
                   "(default: stdout when none of --out/--json/--csv is given)")
    p.add_argument("--csv", metavar="FILE", help="write the results as CSV, '-' for stdout (default: no CSV)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per model call")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr (default: a progress bar)")
    p.add_argument("--timing", action="store_true", help=argparse.SUPPRESS)  # benchmarks: wall-clock marks on stderr
    ray = p.add_argument_group("archive scale (Ray Data; pip install -r requirements-ray.txt), see docs/batch_ray.md")
    ray.add_argument("--engine", choices=("local", "ray"), default="local", help="run in this process, or on Ray: "
                     "resumable, one JSON line per file in the summary")
    ray.add_argument("--address", metavar="ADDRESS", help="(ray) the Ray cluster to run on, e.g. HEAD:6379 "
                     "(default: start a local Ray on this machine's cores)")
    ray.add_argument("--summary", metavar="FILE", help=f"(ray) the JSON Lines summary, read first to skip finished files "
                     f"(default: DIR/{batch_ray.SUMMARY_NAME} with --out, else none)")
    ray.add_argument("--actor-cpus", type=positive_int, metavar="N", help="(ray) cores per model replica (default: 1)")
    return p


def output_dir(out: str | None) -> Path | None:
    """``--out`` created (None without it); UsageError with one line when it cannot be."""
    if not out:
        return None
    out_dir = Path(out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{out_dir}: cannot create output folder ({exc.strerror or exc})") from exc
    return out_dir


def write_records(records: list[dict], args) -> None:
    """``--json`` / ``--csv`` as asked; the JSON on stdout when nothing else is written, else one
    readable line per file on stdout unless a table goes there."""
    if args.json:
        write_json(records, args.json)
    if args.csv:
        write_csv(records, args.csv)
    if not (args.json or args.csv or args.out):
        write_json(records, "-")
    elif "-" not in (args.json, args.csv):  # stdout is free: one readable line per file
        for rec in records:
            print(summary_line(rec))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with one line on a bad option
    ray_only = [o for o, v in (("--address", args.address), ("--summary", args.summary), ("--actor-cpus", args.actor_cpus)) if v]
    if args.engine != "ray" and ray_only:
        parser.error(f"{', '.join(ray_only)} needs --engine ray")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        files = collect_inputs(args.inputs, on_skipped=lambda line: print(f"predict.py: {line}", file=sys.stderr))
        choice = resolve_model(args.model, args.model_file, args.allow_unverified)
        out_dir = output_dir(args.out)

        t_load = time.time()
        predictor = None  # --engine ray: each actor loads its own
        if args.engine == "local":
            from cli import quiet_tf

            quiet_tf.import_tensorflow()  # before Keras: no TensorFlow start-up lines on the terminal
            try:
                predictor = load_predictor(choice)
            except ModelIntegrityError as exc:
                raise UsageError(f"model refused: {exc}") from exc
    except UsageError as exc:
        return report_usage_error("predict.py", exc)
    threshold = args.threshold if args.threshold is not None else choice.threshold
    marks = {"model_load_s": round(time.time() - t_load, 3)}

    def first():
        marks["first_result_unix"] = time.time()

    entry = dict(choice.entry.data) if choice.entry is not None else {}
    by_source = reliability_by_source(read_metrics(choice.path.parent / f"{choice.name}.metrics.json"), entry)
    if args.engine == "ray":
        try:
            records = batch_ray.run(files, output_stems(files), batch_ray.BatchModel(choice.name, str(choice.path.resolve()),
                                    choice.sha256, choice.entry, tuple(by_source)), threshold, out_dir, write_outputs, summary=args.summary,
                                    address=args.address, batch_size=args.batch_size, actor_cpus=args.actor_cpus or 1,
                                    progress=not args.no_progress)
        except batch_ray.EngineError as exc:
            return report_usage_error("predict.py", exc)
    else:
        records = run(files, predictor, choice.name, threshold, out_dir, args.batch_size,
                      progress=not args.no_progress, on_first_result=first, entry=entry, by_source=by_source)
    marks["end_unix"] = time.time()
    write_records(records, args)
    n_failed = sum(r["error"] is not None for r in records)
    if n_failed:
        print(f"predict.py: {n_failed} of {len(records)} files could not be processed", file=sys.stderr)
    if args.timing:
        print("TIMING " + json.dumps({**marks, "n_files": len(records), "n_failed": n_failed}), file=sys.stderr)
    return EXIT_FAILED if n_failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
