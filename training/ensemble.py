"""The ensemble's file: the shipped members' weights copied into ``build_ensemble``, and its manifest entry.

The ensemble has no training of its own; it is written again whenever a member is re-shipped
(its entry's ``members`` name the SHA-256 of the member files it was written from, and
``members_current`` says whether they are still the shipped ones).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from important_variables import CONFIG, ENSEMBLE_MEMBERS, PAD_MULTIPLES
from inference.manifest import MANIFEST_NAME, read_manifest, sha256_file, update_entry
from training.ship import STALE_ON_SHIP, save_shipped

log = logging.getLogger("train")

NAME = "ensemble"


def copy_member_weights(ensemble, members: Mapping) -> None:
    """Set every weighted layer of ``ensemble`` (from ``build_ensemble``) from the member model of the same
    architecture in ``members`` ({name: keras.Model}); ValueError when a member's layers do not all map."""
    from create_segmentation_model import member_prefix

    if set(members) != set(ENSEMBLE_MEMBERS):
        raise ValueError(f"members {sorted(members)} are not the ensemble's {sorted(ENSEMBLE_MEMBERS)}")
    copied = 0
    for name, model in members.items():
        for layer in model.layers:
            if layer.weights:
                ensemble.get_layer(member_prefix(name) + layer.name).set_weights(layer.get_weights())
                copied += len(layer.weights)
    if copied != len(ensemble.weights):
        raise ValueError(f"copied {copied} of the ensemble's {len(ensemble.weights)} weights")


def members_record(saved_dir: Path) -> dict:
    """{member: {"weight", "file", "sha256"}} of the member files in ``saved_dir`` now."""
    return {name: {"weight": weight, "file": CONFIG.model_files[name],
                   "sha256": sha256_file(saved_dir / CONFIG.model_files[name])}
            for name, weight in ENSEMBLE_MEMBERS.items()}


def members_current(entry: Mapping, saved_dir: Path = CONFIG.saved_model_dir) -> bool:
    """True when the ensemble entry's ``members`` are the member files in ``saved_dir`` now, with the weights of
    ``ENSEMBLE_MEMBERS`` (False: a member was re-shipped since; write the ensemble again)."""
    recorded = entry.get("members") if isinstance(entry, Mapping) else None
    return isinstance(recorded, Mapping) and recorded == members_record(Path(saved_dir))


def write_ensemble(saved_dir: Path | str = CONFIG.saved_model_dir, command: str | None = None) -> Path:
    """Write ``<saved_dir>/ensemble.keras`` (seed 256x256x3 input, float32, compiled with the training loss) from
    the verified member files beside it, and its manifest entry: hash, params, members, the members' native
    scale and finding rule; the threshold back to the default until ``evaluate.py --choose-threshold`` picks one."""
    from cli import quiet_tf

    quiet_tf.import_tensorflow()
    import keras

    from create_segmentation_model import build_model, load_segmentation_model

    saved_dir = Path(saved_dir)
    keras.mixed_precision.set_global_policy("float32")
    members = {name: load_segmentation_model(saved_dir / CONFIG.model_files[name]) for name in ENSEMBLE_MEMBERS}
    ensemble = build_model(NAME)
    copy_member_weights(ensemble, members)
    path = save_shipped(ensemble, NAME, saved_dir)

    manifest = read_manifest(saved_dir / MANIFEST_NAME)["models"]
    first = manifest[next(iter(ENSEMBLE_MEMBERS))]
    words = " + ".join(f"{name} x {weight:g}" for name, weight in ENSEMBLE_MEMBERS.items())
    changes = {
        "file": path.name,
        "sha256": sha256_file(path),
        "params": int(ensemble.count_params()),
        "members": members_record(saved_dir),
        "inference": {"scale": "native", "long_side": CONFIG.native_long_side, "pad_multiple": PAD_MULTIPLES[NAME]},
        "findings": dict(first.get("findings") or {}),
        "threshold": CONFIG.default_threshold,
        "threshold_source": "default (not yet chosen on valid for these weights)",
        "training_note": f"no training of its own: the softmax maps of the shipped members averaged ({words})",
        **({"build_command": command} if command else {}),
    }
    update_entry(NAME, changes, saved_dir / MANIFEST_NAME, drop=(*STALE_ON_SHIP, "image_score"))
    log.info("wrote %s from %s", path, words)
    return path
