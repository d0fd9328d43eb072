"""Pack the useful part of finished training runs into a few files (what comes back from the GPU machine).

    python tools/pack_run.py OUT_DIR RUN_DIR [RUN_DIR ...]

RUN_DIR is a ``train.py`` checkpoint folder ``<checkpoint-dir>/<model>``, tagged
``<checkpoint-dir name>_<model>``. For each run it writes ``<tag>_weights_N.tar`` files (two
weight snapshots at most in each, so every file stays under 16 MiB) holding the epochs that
were best by valid Dice, by AP@25 and by image AUC in the run's ``history.csv``, and the last
epoch; and one ``runs_logs.tar.gz`` with every run's history.csv, runs.jsonl, best.json and
prior.json, and the ``*.log`` files found in OUT_DIR (moved in: at most 8 files come back).
The snapshot is chosen again on the valid split with evaluate's own code after the run
(``benchmarks/ablation_valid.py``); the trainer's per-epoch numbers only shortlist it.
"""

from __future__ import annotations

import csv
import math
import sys
import tarfile
from pathlib import Path

MONITORS = ("val_dice", "val_ap25", "val_auc")


def shortlist(run_dir: Path) -> list[int]:
    """1-based epochs worth bringing back: the best by each of MONITORS, then the last."""
    with open(run_dir / "history.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    picks: list[int] = []
    for key in MONITORS:
        vals = [(float(r[key]), int(float(r["epoch"])) + 1) for r in rows if r.get(key) not in (None, "", "nan")]
        vals = [v for v in vals if math.isfinite(v[0])]
        if vals:
            picks.append(max(vals)[1])
    if rows:
        picks.append(int(float(rows[-1]["epoch"])) + 1)
    out: list[int] = []
    for e in picks:
        if e not in out and (run_dir / "epochs" / f"ep{e:03d}.weights.h5").is_file():
            out.append(e)
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "runs_logs.tar.gz", "w:gz") as logs:
        loose = sorted(out.glob("*.log"))
        for f in loose:
            logs.add(f, arcname=f"logs/{f.name}")
        for run in map(Path, argv[1:]):
            tag = f"{run.parent.name}_{run.name}"
            for name in ("history.csv", "runs.jsonl", "best.json", "prior.json"):
                if (run / name).is_file():
                    logs.add(run / name, arcname=f"{tag}/{name}")
            if not (run / "history.csv").is_file():
                continue
            epochs = shortlist(run)
            for k in range(0, len(epochs), 2):
                with tarfile.open(out / f"{tag}_weights_{k // 2}.tar", "w") as tar:
                    for e in epochs[k : k + 2]:
                        tar.add(run / "epochs" / f"ep{e:03d}.weights.h5", arcname=f"{tag}/epochs/ep{e:03d}.weights.h5")
            print(f"{tag}: epochs {epochs}")
    for f in loose:
        f.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
