"""Command-line bits shared by ``predict.py``, ``evaluate.py`` and the trainers.

One error style for every tool: ``<prog>: error: <one line>`` on stderr, exit status 2
for a usage error (argparse's own errors included, without the usage block).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from important_variables import CONFIG, is_fracatlas_dir, is_yolo8_dir, resolve_data_dir, resolve_yolo8_dir

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command line, missing data set or unusable model: exit status 2, one-line message."""


class DefaultsFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already says its default
    in words (options whose default is None or False say it themselves)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default:" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """ArgumentParser with one-line errors and every option's default shown in ``--help``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line instead of usage + message
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def report_usage_error(prog: str, exc: Exception) -> int:
    """Write ``<prog>: error: <exc>`` (one line) to stderr; returns EXIT_USAGE."""
    sys.stderr.write(f"{prog}: error: {' '.join(str(exc).split())}\n")
    return EXIT_USAGE


def threshold_arg(text: str) -> float:
    """argparse type: a probability threshold strictly between 0 and 1."""
    try:
        t = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"threshold {text!r} is not a number") from None
    if not 0.0 < t < 1.0:
        raise argparse.ArgumentTypeError(f"threshold {t} must be strictly between 0 and 1")
    return t


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} must be at least 1")
    return n


def require_data_dir(cli_value: str | None) -> Path:
    """The FracAtlas directory from ``--data`` / ``$FRACATLAS_DIR`` / the default places.

    Raises UsageError when none is found or the one given holds no ``dataset.csv``.
    """
    data_dir = resolve_data_dir(cli_value)
    if data_dir is None:
        raise UsageError(f"FracAtlas not found: pass --data DIR or set ${CONFIG.data_env_var}")
    if not is_fracatlas_dir(data_dir):
        raise UsageError(f"{data_dir}: not a FracAtlas directory (no dataset.csv); pass --data DIR or set ${CONFIG.data_env_var}")
    return data_dir


def require_yolo8_dir(cli_value: str | None = None) -> Path:
    """The BoneFractureYolo8 directory from ``--yolo8-data`` / ``$BONEFRACTURE_YOLO8_DIR`` / the default places.

    Raises UsageError when none is found or the one given is not laid out as the export.
    """
    root = resolve_yolo8_dir(cli_value)
    if not is_yolo8_dir(root):
        raise UsageError(f"{root or 'BoneFractureYolo8'}: BoneFractureYolo8 not found; pass --yolo8-data DIR or set "
                         f"${CONFIG.yolo8_env_var}")
    return root


def load_listed_model(name: str, saved_model_dir: Path):
    """(Keras model, ``inference.manifest.ModelEntry``) of model ``name`` of ``saved_model_dir``'s manifest,
    its file verified against the manifest's SHA-256 as the app does; UsageError with one line otherwise."""
    from cli import quiet_tf

    quiet_tf.import_tensorflow()
    from create_segmentation_model import load_segmentation_model
    from inference.manifest import ManifestError, ModelIntegrityError, model_entry, read_manifest

    try:
        entry = model_entry(name, read_manifest(saved_model_dir / "manifest.json"))
    except ManifestError as exc:
        raise UsageError(str(exc)) from exc
    if not entry.listed or not entry.file:
        raise UsageError(f"no model {name!r} with a file in {saved_model_dir / 'manifest.json'}")
    try:
        return load_segmentation_model(saved_model_dir / entry.file), entry
    except ModelIntegrityError as exc:
        raise UsageError(f"model refused: {exc}") from exc


def run_tool(prog: str, parser: argparse.ArgumentParser, run, argv: list[str] | None = None) -> int:
    """Parse ``argv``, log warnings to stderr, call ``run(args)``: EXIT_OK, or EXIT_USAGE with one line
    on a UsageError (``<prog>: error: ...``). The ``main`` of the tools under ``tools/``."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        run(args)
    except UsageError as exc:
        return report_usage_error(prog, exc)
    return EXIT_OK
