"""Run import-linter on the project: the contracts in pyproject.toml ([tool.importlinter]).

grimp (import-linter's graph builder) analyses packages only, and the entry points and root
owners are single-file modules (``prediction.py``, ``app.py``, …). So this script builds a
throw-away folder where each root module is a package of the same name
(``prediction/__init__.py`` → a symlink to ``prediction.py``) and the real packages
(``inference/``, ``ui/``, …) are symlinked as they are, then runs ``lint-imports`` there.
Module names in the contracts are the project's own: ``prediction``, ``inference.reading``, …

Usage: python tools/check_imports.py   (exit status: lint-imports', 0 = all contracts kept)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cli", "evaluation", "fracture", "imaging", "inference", "training", "ui")


def build_shim(dest: Path) -> list[str]:
    """Create the shim packages in ``dest``; returns the root package names."""
    names = []
    for py in sorted(ROOT.glob("*.py")):
        pkg = dest / py.stem
        pkg.mkdir()
        (pkg / "__init__.py").symlink_to(py)
        names.append(py.stem)
    for name in PACKAGES:
        (dest / name).symlink_to(ROOT / name, target_is_directory=True)
        names.append(name)
    return names


def main() -> int:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"])
    missing = sorted(({p.stem for p in ROOT.glob("*.py")} | set(PACKAGES)) - listed)
    if missing:  # an unlisted module would be treated as external and escape every contract
        print(f"check_imports: add {', '.join(missing)} to [tool.importlinter] root_packages in pyproject.toml", file=sys.stderr)
        return 1
    lint = Path(sys.executable).with_name("lint-imports")
    with tempfile.TemporaryDirectory(prefix="import-shim-") as tmp:
        build_shim(Path(tmp))
        env = {**os.environ, "PYTHONPATH": tmp}
        return subprocess.call([str(lint), str(ROOT / "pyproject.toml")], cwd=tmp, env=env)


if __name__ == "__main__":
    sys.exit(main())
