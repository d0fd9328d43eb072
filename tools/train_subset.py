"""Copy a small FracAtlas training subset (about 44 MB) for a training run on another machine.

    python tools/train_subset.py [--data DIR] [--out subsets/phase1/FracAtlas] [--negatives-mb 22]

What is kept, as the original files (no re-encoding, so train pixels are the data set's):
- every fractured image of train and valid (official split files);
- the valid negatives that ``train.py``'s per-epoch Validator scores (the first ``--valid-limit``
  by id), so the in-training valid numbers are those of the same images here;
- train negatives evenly spread over the sorted ids, as many as fit in ``--negatives-mb``.
- dataset.csv, the COCO annotations and the split files unchanged.

The copy is for a training run elsewhere only: ``subsets/`` is git-ignored and the images are
never committed. Prints what was kept.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fracture.dataset import COCO_RELPATH, SPLIT_DIR, FracAtlas  # noqa: E402
from important_variables import resolve_data_dir  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="FracAtlas directory (default: $FRACATLAS_DIR, then the default locations)")
    p.add_argument("--out", default="subsets/phase1/FracAtlas", help="where the subset goes (replaced)")
    p.add_argument("--negatives-mb", type=float, default=22.0, help="bytes budget of the train negatives, MB")
    p.add_argument("--valid-limit", type=int, default=82, help="valid images kept: every fractured one and the first N negatives by id")
    p.add_argument("--exclude-from", help="an earlier subset: its train negatives are not taken again (a second run sees others)")
    args = p.parse_args(argv)
    src = resolve_data_dir(args.data)
    atlas = FracAtlas(src)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    for rel in (Path("dataset.csv"), COCO_RELPATH):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, out / rel)
    shutil.copytree(src / SPLIT_DIR, out / SPLIT_DIR)

    keep = atlas.records("train", fractured=True) + atlas.records("valid", fractured=True)
    keep += atlas.records("valid", fractured=False)[: args.valid_limit]
    negs = atlas.records("train", fractured=False)
    if args.exclude_from:
        seen = {f.name for f in (Path(args.exclude_from) / "images").rglob("*.jpg")}
        negs = [r for r in negs if r.path.name not in seen]
    sizes = [r.path.stat().st_size for r in negs]
    n = min(len(negs), int(args.negatives_mb * 1e6 / (sum(sizes) / len(sizes))))
    chosen = [negs[round(i * len(negs) / n)] for i in range(n)] if n else []
    for rec in keep + chosen:
        dst = out / rec.path.relative_to(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(rec.path, dst)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {len(keep) + len(chosen)} images ({len(chosen)} of {len(negs)} train negatives), {total / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
