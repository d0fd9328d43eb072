"""Honest evaluation of the segmentation models on the official FracAtlas split.

Usage::

    python evaluate.py --model {unet,encoder_decoder,all} --split {valid,test}
                       [--data DIR] [--threshold T] [--out reports/] [--limit N]
                       [--choose-threshold [--write-manifest]] [--ship] [--batch-size B] [--no-progress]

Evaluation set: the fractured images of the official split file plus the negatives
of the same split by the id rule (``n % 10 == 0`` test, ``== 1`` valid); unreadable
(truncated) files are skipped with one log line each and counted. ``--limit N``
keeps the first N fractured and the first N negative records (by id), for tests.

The command line over the ``evaluation`` package (one module per job: cases,
scoring, thresholds, report, ship; ``evaluation.validator.Validator`` gives a
trainer the same numbers). Predictions go through ``prediction.iter_predictions``,
the loop the app and ``predict.py`` use, with the model's manifest entry: a native-scale
model runs on the whole image at its training scale (long side <= ``CONFIG.native_long_side``,
padded), and the probability map, of the image's own size, is compared with the
annotation polygons there. Numbers (see ``DEFINITIONS`` for the exact wording written
into every report):

1. segmentation on fractured images: per-image Dice and IoU of the findings' pixels
   (what the app outlines) against the annotated mask, mean and median;
2. findings (``inference.findings``: regions seeded where ``prob >= t`` and grown by
   hysteresis down to ``low_ratio x t`` under the manifest's finding rule, specks below the
   minimum area dropped; each scored by the rule's score, the region's maximum or mean
   probability) against the COCO instance boxes: box AP@50 and AP@25 pooled over all
   evaluated images (greedy matching by score, all-point interpolation), recall at ``t``,
   and pycocotools' box / mask AP on the fractured images;
3. image level: fracture score = the manifest's image score (``image_score``: maximum
   probability, mean of the top 64 pixels or best finding; each one's AUC is reported);
   ROC-AUC fractured vs negatives; sensitivity (fractured images with >= 1 finding) and
   specificity (negatives with none) at ``t``; false findings per negative image;
   calibration error of the likelihood on the split;
4. pixel accuracy of the model next to that of an all-background prediction on the
   same pixels (on its own it is meaningless: ~99.7 % of the pixels are background);
5. Dice and sensitivity by body part, with counts.

Outputs in ``--out`` (default ``reports/``): ``<model>_<split>.json`` (every number,
counts, threshold, model SHA-256, data path, date), ``<model>_<split>.md`` (markdown
table), ``<model>_<split>_pr.png``, ``<model>_<split>_roc.png`` and, for the test
split, ``<model>_<split>_grid.png`` (the 8 best and 8 worst fractured images by
Dice, predicted vs annotated outline). ``--ship`` (test split, full set, the
manifest's threshold) also writes ``Saved_model/<model>.metrics.json`` and the
plots under ``Saved_model/report/``.

Threshold: by default the model's ``threshold`` in ``Saved_model/manifest.json``.
``--choose-threshold`` (valid split only; refused on test) sweeps ``SWEEP`` on the
cached probability maps of one inference pass and keeps the threshold with the
highest ``CRITERION`` (F1 of findings at IoU >= 0.25 over fractured + negative
images, see ``CRITERION_DEFINITION``) and reports the valid split at that threshold.
Only with ``--write-manifest`` is it written into the model's manifest entry
(``threshold``, ``threshold_source``, ``threshold_criterion``; other fields are
left alone): a trial run never changes what the app and predict.py use.

Exit codes: 0 ok; 1 a model file missing or failing its SHA-256 check, or the
manifest lacks the model; 2 usage error (unknown model, missing data set, bad
threshold, a refused option combination). Error messages are one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from cli.common import Parser, UsageError, positive_int, report_usage_error, require_data_dir, require_yolo8_dir, threshold_arg
from evaluation.cases import Case, run_inference, select_records  # noqa: F401  (the evaluation API, re-exported)
from evaluation.definitions import CRITERION, CRITERION_DEFINITION, DEFINITIONS, REPORT_KEYS, SWEEP  # noqa: F401
from evaluation.evaluator import evaluate
from evaluation.report import markdown_table, write_report
from evaluation.scoring import findings_f1, json_safe, score_cases  # noqa: F401
from evaluation.ship import ship
from evaluation.thresholds import choose_threshold, sweep_thresholds, write_threshold_to_manifest  # noqa: F401
from fracture.dataset import DatasetError, FracAtlas
from important_variables import CONFIG, MODEL_NAMES
from inference.manifest import ManifestError, ModelIntegrityError, model_entry, read_manifest, sha256_file
from prediction import predictor_for

log = logging.getLogger("evaluate")


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="evaluate.py", description="Evaluate the segmentation models on the official FracAtlas split.")
    p.add_argument("--model", required=True, choices=(*MODEL_NAMES, "all"), help="which model, or all of them (required)")
    p.add_argument("--split", required=True, choices=("valid", "test"), help="official split to evaluate on (required)")
    p.add_argument("--data", help="FracAtlas directory (default: $FRACATLAS_DIR, then the default locations)")
    p.add_argument("--source", choices=("fracatlas", "yolo8"), default="fracatlas",
                   help="data set: FracAtlas's official split, or the valid part of BoneFractureYolo8 carved by original "
                        "name (fractured images only; report <model>_bonefractureyolo8_valid)")
    p.add_argument("--yolo8-data", help="BoneFractureYolo8 directory (default: $BONEFRACTURE_YOLO8_DIR, then the default locations)")
    p.add_argument("--threshold", type=threshold_arg, help="probability threshold (default: the manifest's, chosen on valid)")
    p.add_argument("--out", default=str(CONFIG.reports_dir), help="output directory (default: reports/)")
    p.add_argument("--limit", type=positive_int, help="only the first N fractured and first N negative images (default: all)")
    p.add_argument("--choose-threshold", action="store_true",
                   help="valid only: choose the threshold on this split and report it (default: off; the manifest "
                        "changes only with --write-manifest)")
    p.add_argument("--write-manifest", action="store_true",
                   help="with --choose-threshold: write the chosen threshold into Saved_model/manifest.json, "
                        "which the app and predict.py use (default: off, the shipped manifest is left as it is)")
    p.add_argument("--ship", action="store_true",
                   help="test only: also write Saved_model/<model>.metrics.json and Saved_model/report/ (default: off)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per model call")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: a progress bar on stderr)")
    return p


def _check_combination(args) -> None:
    if args.source == "yolo8" and (args.split != "valid" or args.choose_threshold or args.ship):
        raise UsageError("--source yolo8 has a valid part only, without verified negatives: use --split valid, "
                         "without --choose-threshold or --ship (thresholds are chosen on FracAtlas valid)")
    if args.choose_threshold:
        if args.split != "valid":
            raise UsageError("--choose-threshold is only allowed with --split valid; choosing on the test split is not allowed")
        if args.threshold is not None:
            raise UsageError("--choose-threshold and --threshold exclude each other")
        if args.limit is not None:
            raise UsageError("--choose-threshold needs the whole valid split; drop --limit")
    if args.write_manifest and not args.choose_threshold:
        raise UsageError("--write-manifest writes the threshold that --choose-threshold picks; add --choose-threshold")
    if args.ship:
        if args.split != "test":
            raise UsageError("--ship publishes test-split results; use --split test")
        if args.limit is not None or args.threshold is not None:
            raise UsageError("--ship needs the whole test split at the manifest's threshold; drop --limit/--threshold")


def _run_model(name: str, args, atlas, manifest: dict, command: str) -> tuple[int, dict | None]:
    """Evaluate one named model as the command line asks; (exit code, report or None)."""
    from create_segmentation_model import load_named_model  # Keras: imported only when a model is loaded

    entry = model_entry(name, manifest)
    if args.threshold is not None:
        threshold, source = args.threshold, "--threshold"
    else:
        threshold, source = entry.threshold, entry.threshold_source
    try:
        model = load_named_model(name)
    except (ModelIntegrityError, ValueError) as exc:
        log.error("%s", exc)
        return 1, None
    path = CONFIG.model_path(name)
    ev = evaluate(
        predictor_for(model, name, entry), atlas, args.split, threshold,
        model_name=name, threshold_source=source, model_sha256=sha256_file(path), model_file=path.name,
        limit=args.limit, choose=args.choose_threshold, batch_size=args.batch_size,
        progress=not args.no_progress, command=command, calibration=entry.calibration,
    )
    written = write_report(ev, args.out)
    log.info("%s: wrote %s", name, ", ".join(str(p) for p in written))
    if args.ship:
        log.info("%s: shipped %s", name, ", ".join(str(p) for p in ship(ev, written)))
    if args.choose_threshold and ev.report["threshold_choice"]["chosen"] is not None and not args.write_manifest:
        log.info("%s: threshold %.2f (%s = %.4f) chosen; %s left unchanged (add --write-manifest to record it)",
                 name, ev.report["threshold_choice"]["chosen"], CRITERION, ev.report["threshold_choice"]["value"],
                 CONFIG.manifest_path)
    elif args.choose_threshold and ev.report["threshold_choice"]["chosen"] is not None:
        try:
            write_threshold_to_manifest(CONFIG.manifest_path, name, ev.report)
        except (OSError, KeyError, ValueError) as exc:
            log.error("%s: threshold not recorded: %s", name, exc)
            return 1, ev.report
        log.info("%s: threshold %.2f (%s = %.4f) written to %s", name, ev.report["threshold"], CRITERION,
                 ev.report["threshold_choice"]["value"], CONFIG.manifest_path)
    return 0, ev.report


def _open_source(args):
    """The data set the split is read from (``FracAtlas`` or ``BoneFractureYolo8``); UsageError when missing."""
    if args.source == "yolo8":
        from fracture.bone_fracture_yolo8 import BoneFractureYolo8

        return BoneFractureYolo8(require_yolo8_dir(args.yolo8_data))
    try:
        return FracAtlas(require_data_dir(args.data))
    except DatasetError as exc:
        raise UsageError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        _check_combination(args)
        from cli import quiet_tf

        quiet_tf.import_tensorflow()  # before any Keras import: no TensorFlow start-up lines
        atlas = _open_source(args)
    except UsageError as exc:
        return report_usage_error("evaluate.py", exc)

    try:
        manifest = read_manifest()
    except ManifestError as exc:
        log.error("%s", exc)
        return 1
    names = MODEL_NAMES if args.model == "all" else (args.model,)
    command = "python evaluate.py " + " ".join(argv)
    results = [_run_model(name, args, atlas, manifest, command) for name in names]
    codes = [code for code, _ in results]
    reports = [rep for _, rep in results if rep is not None]
    if reports:
        table = markdown_table(reports)
        if len(reports) > 1:
            Path(args.out, f"models_{args.split}.md").write_text(table, encoding="utf-8")
        sys.stdout.write(table)
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
