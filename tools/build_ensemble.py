"""Write the ensemble model from the shipped members: ``Saved_model/ensemble.keras`` and its manifest entry.

    python tools/build_ensemble.py [--out-dir Saved_model]

The members and their weights are ``important_variables.ENSEMBLE_MEMBERS``; their files are read
from ``--out-dir`` and verified against its manifest. Run it again after re-shipping a member
(the tests check that the ensemble's recorded member hashes are the shipped files'), then
``evaluate.py --model ensemble --split valid --choose-threshold --write-manifest``.
Exit status 0, or 2 with one line when a member file is missing or fails its check.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.common import Parser, UsageError, run_tool  # noqa: E402
from important_variables import CONFIG  # noqa: E402


def parser() -> Parser:
    p = Parser(prog="build_ensemble.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", type=Path, default=CONFIG.saved_model_dir, help="where the members, the manifest and the ensemble are")
    return p


def run(args) -> None:
    from inference.manifest import ManifestError, ModelIntegrityError
    from training.ensemble import write_ensemble

    command = "python tools/build_ensemble.py" + ("" if args.out_dir == CONFIG.saved_model_dir else
                                                 f" --out-dir {shlex.quote(args.out_dir.name)}")
    try:
        path = write_ensemble(args.out_dir, command)
    except (ManifestError, ModelIntegrityError, FileNotFoundError, KeyError) as exc:
        raise UsageError(f"{args.out_dir}: {exc}".splitlines()[0]) from exc
    print(f"wrote {path.name}")


def main(argv: list[str] | None = None) -> int:
    return run_tool("build_ensemble.py", parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
