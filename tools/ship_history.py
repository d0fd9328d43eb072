"""Write a shipped model's training history beside its weights, from the run records kept elsewhere.

    python tools/ship_history.py --model unet --run-dir docs/experiments/2026-11-30-gpu/phase2_topk_unet

``train.py --ship-from`` writes ``Saved_model/<model>.history.csv`` and ``.history.png`` itself;
this tool does the same for weights whose run folder now lives in ``docs/experiments/``. The
shipped epoch is the manifest entry's ``epochs``; the run folder must be the one behind the
weights: its ``history.csv`` row of that epoch must hold the entry's ``valid_at_epoch`` scores.
Exit status 0, or 2 with one line when the entry or the run folder does not match.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.common import Parser, UsageError, run_tool  # noqa: E402
from important_variables import CONFIG, TRAINED_MODELS  # noqa: E402


def parser() -> Parser:
    p = Parser(prog="ship_history.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, choices=TRAINED_MODELS, help="which shipped model")
    p.add_argument("--run-dir", required=True, type=Path, help="the run folder (history.csv) of the shipped weights")
    p.add_argument("--out-dir", type=Path, default=CONFIG.saved_model_dir, help="where the model and manifest are")
    return p


def matching_epoch(entry: dict, rows: list[dict]) -> int:
    """The entry's 1-based shipped epoch, checked against the run's row of it; UsageError otherwise."""
    epoch, scores = entry.get("epochs"), entry.get("valid_at_epoch") or {}
    if not isinstance(epoch, int) or not scores:
        raise UsageError("the manifest entry names no shipped epoch with its valid scores (a weight average has no run)")
    row = next((r for r in rows if int(float(r["epoch"])) + 1 == epoch), None)
    if row is None:
        raise UsageError(f"the run's history.csv has no epoch {epoch}")
    for key, value in scores.items():
        if not math.isclose(float(row.get(key) or "nan"), float(value), rel_tol=1e-4, abs_tol=1e-6):
            raise UsageError(f"epoch {epoch} of the run has {key} {row.get(key)!r}, the shipped weights {value}: another run")
    return epoch


def run(args) -> None:
    from inference.manifest import ManifestError, read_manifest
    from training.history import read_history, ship_history

    try:
        entry = read_manifest(args.out_dir / "manifest.json")["models"][args.model]
    except (ManifestError, KeyError) as exc:
        raise UsageError(f"{args.out_dir / 'manifest.json'}: no entry for {args.model} ({exc})") from exc
    history = args.run_dir / "history.csv"
    rows = read_history(history)
    if not rows:
        raise UsageError(f"{history}: no history rows")
    epoch = matching_epoch(entry, rows)
    ship_history(args.model, args.run_dir, epoch, args.out_dir)


def main(argv: list[str] | None = None) -> int:
    return run_tool("ship_history.py", parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
