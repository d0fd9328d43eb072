"""Publishing a test-split evaluation next to the shipped models (``evaluate.py --ship``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from evaluation.evaluator import Evaluation
from important_variables import CONFIG


def ship(ev: Evaluation, written: list[Path]) -> list[Path]:
    """Copy the report to ``Saved_model/<model>.metrics.json`` and the plots to ``Saved_model/report/``."""
    name = ev.report["model"]
    CONFIG.report_dir.mkdir(parents=True, exist_ok=True)
    shipped = [CONFIG.metrics_path(name)]
    shutil.copyfile(written[0], shipped[0])
    for p in written[1:]:
        dest = CONFIG.report_dir / p.name
        shutil.copyfile(p, dest)
        shipped.append(dest)
    return shipped
