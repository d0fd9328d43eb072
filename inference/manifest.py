"""The model manifest (``Saved_model/manifest.json``): the one module that reads or writes it.

The manifest lists, per model name, the weights file, its SHA-256 and what the
tools learned about it (threshold chosen on valid, training facts, ...)::

    {"models": {"unet": {"file": "unet.keras", "sha256": "…", "threshold": 0.8, …}, …}}

Everyone else asks this module: the app, ``predict.py``, ``evaluate.py``, the
trainers and the benchmarks. Unknown keys of an entry are kept on every update, so
other tools may add their own (``borderline_margin``, ``calibration``,
``image_score``, ``inference``, …); :class:`ModelEntry` has getters that return None
when a key is absent.

One trust rule (:func:`verify_model_file`): a ``.keras`` file is loaded only when the
``manifest.json`` next to it lists it by file name with a SHA-256 that matches the
file's bytes. A file the manifest does not list is refused unless the caller
explicitly allows unverified files (``predict.py --allow-unverified``, a trainer's
own checkpoint); a listed file whose hash differs is refused always.

No TensorFlow here: the UI reads thresholds without importing Keras.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from important_variables import CONFIG, ENSEMBLE_MEMBERS

#: File name of a manifest, next to the weights it vouches for (the one spelling: CONFIG's).
MANIFEST_NAME = CONFIG.manifest_path.name


class ManifestError(ValueError):
    """The manifest exists but cannot be read or parsed (message is one line)."""


class ModelIntegrityError(RuntimeError):
    """A model file is missing, modified, truncated or unlisted (message is one line)."""


# --------------------------------------------------------------------------- reading
def manifest_path_for(model_file: Path | str) -> Path:
    """The manifest that vouches for ``model_file``: ``manifest.json`` in the same folder."""
    return Path(model_file).parent / MANIFEST_NAME


def read_manifest(path: Path | str | None = None) -> dict:
    """The parsed manifest ({} when the file is absent). Default path: ``CONFIG.manifest_path``.

    Raises :class:`ManifestError` when it exists but is unreadable or not a JSON object.
    """
    path = Path(path) if path else CONFIG.manifest_path
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: unreadable manifest ({exc})".splitlines()[0]) from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: unreadable manifest (not a JSON object)")
    return data


def read_manifest_or_empty(path: Path | str | None = None) -> dict:
    """Like :func:`read_manifest` but {} for an unreadable file too (for display only, e.g. the UI)."""
    try:
        return read_manifest(path)
    except ManifestError:
        return {}


def _models(manifest: Mapping) -> Mapping:
    models = manifest.get("models", {}) if isinstance(manifest, Mapping) else {}
    return models if isinstance(models, Mapping) else {}


def valid_threshold(value: Any) -> float | None:
    """``value`` as a float when it is a usable threshold (finite, strictly in (0, 1)), else None."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        return None
    return t if math.isfinite(t) and 0.0 < t < 1.0 else None


#: bf16 inference is allowed only when a model's valid metrics (findings F1, Dice, AUC) under it
#: stay within this of float32 (the entry's ``bf16_inference`` check, ``tools/check_bf16.py``).
BF16_INFERENCE_TOLERANCE = 0.005


def bf16_check_refusal(check, sha256: str | None) -> str | None:
    """Why a manifest's ``bf16_inference`` check does not allow bf16 for these weights, in words; None when it does.

    check: ``{"model_sha256", "allowed", "max_delta", "native_bf16", ...}`` as ``tools/check_bf16.py``
    writes it. Allowed only by a check of these very weights (their SHA-256), on the whole valid
    split (``allowed``), within ``BF16_INFERENCE_TOLERANCE``, run with native bf16 (``native_bf16``
    names an instruction set: emulation rounds differently from the native kernels). ``members``
    (optional, an ensemble's): the members that ran bf16 in the check, the only ones it allows.
    """
    if not isinstance(check, Mapping) or sha256 is None or check.get("model_sha256") != sha256:
        return "bf16 not checked on the validation images for these weights"
    native = check.get("native_bf16")
    if not isinstance(native, list) or not native:
        return "bf16 checked on the validation images only with emulated bf16"
    delta = check.get("max_delta")
    if not isinstance(delta, (int, float)) or isinstance(delta, bool) or not 0 <= delta <= BF16_INFERENCE_TOLERANCE:
        return f"bf16 changed the valid metrics by {delta} (tolerance {BF16_INFERENCE_TOLERANCE})"
    if check.get("allowed") is not True:
        return "bf16 not allowed by its valid check (a limited check allows nothing)"
    members = check.get("members")
    if members is not None and not (isinstance(members, list) and members
                                    and all(m in ENSEMBLE_MEMBERS for m in members)):
        return f"bf16 checked for members {members!r}, which are not ensemble members"
    return None


def bf16_check_allows(check, sha256: str | None) -> bool:
    """True when a manifest's ``bf16_inference`` check says bf16 kept these very weights' valid metrics
    (:func:`bf16_check_refusal` finds nothing against it)."""
    return bf16_check_refusal(check, sha256) is None


@dataclass(frozen=True)
class ModelEntry:
    """One model's manifest entry. ``data`` is the raw dict (unknown keys included, do not mutate)."""

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    @property
    def listed(self) -> bool:
        """True when the manifest has an entry for this model."""
        return bool(self.data)

    @property
    def file(self) -> str | None:
        return self.data.get("file")

    @property
    def sha256(self) -> str | None:
        return self.data.get("sha256") or None

    @property
    def threshold(self) -> float:
        """The model's threshold; the one fallback rule: ``CONFIG.default_threshold`` when the
        entry has no usable value (absent, not a number, not strictly in (0, 1))."""
        t = valid_threshold(self.data.get("threshold"))
        return CONFIG.default_threshold if t is None else t

    @property
    def threshold_source(self) -> str:
        """Where :attr:`threshold` comes from, in words (written into every report)."""
        if valid_threshold(self.data.get("threshold")) is None:
            return "default (no manifest entry)"
        return f"manifest: {self.data.get('threshold_source', 'unknown')}"

    # Keys added by other tools; None when absent.
    @property
    def borderline_margin(self) -> float | None:
        v = self.data.get("borderline_margin")
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None

    @property
    def calibration(self) -> dict | None:
        v = self.data.get("calibration")
        return dict(v) if isinstance(v, Mapping) else None

    @property
    def image_score(self) -> str | None:
        v = self.data.get("image_score")
        return v if isinstance(v, str) else None

    @property
    def inference(self) -> dict | None:
        v = self.data.get("inference")
        return dict(v) if isinstance(v, Mapping) else None


def model_entry(name: str, manifest: Mapping | None = None) -> ModelEntry:
    """The entry of model ``name`` (empty :class:`ModelEntry` when unlisted).

    ``manifest`` None reads ``CONFIG.manifest_path`` (raises :class:`ManifestError` if unreadable).
    """
    manifest = read_manifest() if manifest is None else manifest
    data = _models(manifest).get(name)
    return ModelEntry(name, data if isinstance(data, Mapping) else {})


def entry_for_file(model_file: Path | str, manifest: Mapping | None = None) -> ModelEntry | None:
    """The entry whose ``file`` is ``model_file``'s name, in the manifest next to it; None if unlisted."""
    model_file = Path(model_file)
    manifest = read_manifest(manifest_path_for(model_file)) if manifest is None else manifest
    for name, data in _models(manifest).items():
        if isinstance(data, Mapping) and data.get("file") == model_file.name:
            return ModelEntry(name, data)
    return None


def model_threshold(name: str, manifest: Mapping | None = None) -> float:
    """Shortcut: ``model_entry(name, manifest).threshold``."""
    return model_entry(name, manifest).threshold


# --------------------------------------------------------------------------- trust
def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class VerifiedModel:
    """A model file that passed :func:`verify_model_file`.

    entry: its manifest entry, None for an unlisted file loaded with ``allow_unverified``.
    sha256: the file's actual hash (computed during the check).
    """

    path: Path
    sha256: str
    entry: ModelEntry | None

    @property
    def verified(self) -> bool:
        return self.entry is not None


def verify_model_file(path: Path | str, allow_unverified: bool = False, expected_sha256: str | None = None) -> VerifiedModel:
    """The one trust rule (see the module docstring). Raises :class:`ModelIntegrityError`.

    ``expected_sha256`` given: the file must have exactly that hash (a caller that
    tracks the hash itself); the manifest is then only consulted for the entry.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelIntegrityError(f"{path.name}: model file not found at {path}")
    try:
        entry = entry_for_file(path)
    except ManifestError as exc:
        raise ModelIntegrityError(str(exc)) from exc
    expected = expected_sha256 or (entry.sha256 if entry else None)
    if expected is None and not allow_unverified:
        raise ModelIntegrityError(
            f"{path.name}: not listed with a SHA-256 in {manifest_path_for(path)}; "
            "refusing unverified weights (pass --allow-unverified to load it anyway)"
        )
    actual = sha256_file(path)
    if expected is not None and actual != expected:
        raise ModelIntegrityError(
            f"{path.name}: SHA-256 {actual[:12]}… does not match the manifest "
            f"({expected[:12]}…); the file is modified or truncated, refusing to load it"
        )
    return VerifiedModel(path, actual, entry if entry is not None and entry.sha256 else None)


# --------------------------------------------------------------------------- writing
def write_manifest(manifest: Mapping, path: Path | str | None = None) -> None:
    """Write the whole manifest atomically (temp file + rename), sorted keys, 2-space indent."""
    path = Path(path) if path else CONFIG.manifest_path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def update_entry(name: str, changes: Mapping[str, Any], path: Path | str | None = None, *, create: bool = True,
                 drop: tuple[str, ...] = ()) -> dict:
    """Merge ``changes`` into model ``name``'s entry (other keys untouched) and write atomically.

    ``create`` False: raise KeyError when the model has no entry yet (e.g. a threshold
    for a model that was never shipped). ``drop``: keys to remove first (facts about
    weights that ``changes`` replaces). Returns the updated entry.
    """
    path = Path(path) if path else CONFIG.manifest_path
    manifest = read_manifest(path) or {"models": {}}
    models = manifest.setdefault("models", {})
    if name not in models and not create:
        raise KeyError(f"{path}: no entry for model {name!r}")
    entry = {k: v for k, v in models.get(name, {}).items() if k not in drop}
    entry.update(changes)
    models[name] = entry
    write_manifest(manifest, path)
    return entry


__all__ = [
    "MANIFEST_NAME", "ManifestError", "ModelIntegrityError", "ModelEntry", "VerifiedModel",
    "BF16_INFERENCE_TOLERANCE", "bf16_check_allows", "bf16_check_refusal",
    "manifest_path_for", "read_manifest", "read_manifest_or_empty", "valid_threshold", "model_entry",
    "entry_for_file", "model_threshold", "sha256_file", "verify_model_file", "write_manifest", "update_entry",
]
