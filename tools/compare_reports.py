"""Compare evaluation reports with bootstrap intervals: is a difference larger than the split's noise?

    python tools/compare_reports.py                                   # the shipped test reports, Saved_model/*.metrics.json
    python tools/compare_reports.py A.json B.json [--json out.json]   # any reports on the same images, e.g. two versions

For each report: mean Dice, ROC-AUC, sensitivity, specificity and false findings per negative
with their 95 % intervals; then, for each report after the first, the paired difference to the
first (on the same images, ``evaluation.intervals.paired_differences``) with its interval and the
share of resamples in which it is better. Without arguments the first report is the default
model's. Reads JSON only: no model, no data set. Exit status 0, or 2 with one line naming the
file that cannot be read or compared.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.common import Parser, UsageError, positive_int, run_tool  # noqa: E402
from evaluation.intervals import INTERVAL_METRICS, RESAMPLES, image_intervals, paired_differences  # noqa: E402
from important_variables import CONFIG, DEFAULT_MODEL, MODEL_NAMES  # noqa: E402
from inference.model_card import with_interval  # noqa: E402

LABELS = {"dice_mean": "Dice mean", "roc_auc": "ROC-AUC", "sensitivity": "sensitivity", "specificity": "specificity",
          "false_findings_per_negative_image": "false findings / negative"}


def shipped_reports(saved: Path) -> list[Path]:
    """The shipped test reports in ``saved``, the default model's first."""
    names = [DEFAULT_MODEL, *(n for n in MODEL_NAMES if n != DEFAULT_MODEL)]
    return [saved / f"{n}.metrics.json" for n in names if (saved / f"{n}.metrics.json").is_file()]


def read_report(path: Path) -> dict:
    """The report JSON at ``path``; ValueError naming the file when it is not one with per-image rows."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read a report ({exc})") from exc
    if not isinstance(report, dict) or not isinstance(report.get("per_image"), list) or not report["per_image"]:
        raise ValueError(f"{path}: not an evaluation report with per-image rows (evaluate.py writes them)")
    return report


def _name(report: dict, path: Path) -> str:
    return f"{report.get('model', path.stem)} ({path.name}, {report.get('source', 'FracAtlas')} {report.get('split', '?')})"


def _short(report: dict, path: Path) -> str:
    return f"{report.get('model', path.stem)} ({path.name})"


def compare(paths: list[Path], resamples: int = RESAMPLES) -> tuple[list[str], dict]:
    """(lines to print, the same as JSON) for the reports at ``paths``; ValueError naming a file that fails."""
    reports = [read_report(p) for p in paths]
    lines, out = [], {"reports": [], "differences": []}
    for path, rep in zip(paths, reports, strict=True):
        iv = image_intervals(rep["per_image"], n=resamples)
        out["reports"].append({"file": path.name, "model": rep.get("model"), "intervals": iv})
        lines.append(_name(rep, path))
        lines += [f"  {LABELS[m]:<26} {with_interval(**iv['metrics'][m])}" for m in INTERVAL_METRICS]
    base_path, base = paths[0], reports[0]
    for path, rep in zip(paths[1:], reports[1:], strict=True):
        try:
            diff = paired_differences(base["per_image"], rep["per_image"], n=resamples)
        except ValueError as exc:
            raise ValueError(f"{path}: cannot be compared with {base_path}: {exc}") from exc
        out["differences"].append({"a": base_path.name, "b": path.name, **diff})
        lines.append(f"{_short(rep, path)} minus {_short(base, base_path)}, paired on {diff['n_images']} images:")
        for m in INTERVAL_METRICS:
            d = diff["metrics"][m]
            better = "" if d["share_b_better"] is None else f"   better in {d['share_b_better']:.0%} of resamples"
            lines.append(f"  {LABELS[m]:<26} {with_interval(d['difference'], d['low'], d['high'], signed=True)}{better}")
    lines.append(f"({out['reports'][0]['intervals']['method']})")
    return lines, out


def parser() -> Parser:
    p = Parser(prog="compare_reports.py", description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="*", type=Path, help="report JSON files; the first is the reference "
                   "(default: the shipped Saved_model/<model>.metrics.json, the default model's first)")
    p.add_argument("--saved", type=Path, default=CONFIG.saved_model_dir, help="where the shipped reports are")
    p.add_argument("--resamples", type=positive_int, default=RESAMPLES, help="bootstrap resamples")
    p.add_argument("--json", type=Path, help="also write the intervals and differences here (default: none)")
    return p


def run(args) -> None:
    """Print the comparison; UsageError (one line) when a report is missing, unreadable or not comparable."""
    paths = args.reports or shipped_reports(args.saved)
    if not paths:
        raise UsageError(f"no report given and none shipped in {args.saved}")
    try:
        lines, out = compare(paths, args.resamples)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    return run_tool("compare_reports.py", parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
