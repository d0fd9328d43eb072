"""Weight-space average ("model soup") of snapshots fine-tuned from one parent, ready for ``train.py --ship-from``.

    python tools/average_weights.py --model unet OUT.weights.h5 A.weights.h5 B.weights.h5 [--coef 0.7 0.3]

Why: the phase-2 GPU runs started from the same phase-1 snapshot and differ only in the
loss (``ce_dice_topk`` vs the recipe's loss with 25 % fracture crops). Fine-tunes of one
parent usually sit in one basin, so their average can keep what each one learned at no
training cost. Whether it does is measured on valid with ``benchmarks/ablation_valid.py``,
like every other lever.

Writes OUT and ``OUT`` with ``.soup.json`` for ``.weights.h5`` (the ingredients, their
weights and this command), which ``train.py --ship-from OUT`` turns into the manifest's
training facts. The averaging itself is ``train.average_snapshots``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from important_variables import ARCHITECTURES  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=ARCHITECTURES, required=True, help="architecture of the snapshots")
    p.add_argument("out", help="where the averaged weights go (.weights.h5)")
    p.add_argument("snapshots", nargs="+", help="two or more .weights.h5 / .keras files of that architecture")
    p.add_argument("--coef", type=float, nargs="+", help="one weight per snapshot, normalised to sum 1 (default: equal)")
    args = p.parse_args(argv)

    from cli import quiet_tf

    quiet_tf.import_tensorflow()
    from cli.common import UsageError
    from training.soup import write_soup

    command = "python tools/average_weights.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    missing = [s for s in args.snapshots if not Path(s).is_file()]
    try:
        if missing:
            raise UsageError(f"{missing[0]}: no such weights file")
        print(write_soup(args.model, args.out, args.snapshots, args.coef, command))
    except UsageError as e:
        print(f"average_weights: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
