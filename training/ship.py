"""Shipping a run's weights: the seed-shaped ``Saved_model/<model>.keras`` and its manifest entry
with the training facts read from the run folder (or a weight average's recipe)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from important_variables import CONFIG, PAD_MULTIPLES
from inference.manifest import MANIFEST_NAME, sha256_file, update_entry
from training.history import run_dir_of, run_facts, ship_history
from training.recipe import compile_model, load_weights_model
from training.soup import soup_facts, soup_sidecar

log = logging.getLogger("train")

#: Manifest keys that describe the weights a ship replaces: the 256-px trainer's facts, and what
#: ``evaluate.py --choose-threshold --write-manifest`` chose for those weights (a calibration curve or
#: margin fitted to another model's scores would mislead). The inference settings (``findings``,
#: ``image_score``, ``inference.tta``) stay: they may have been chosen for the new weights already.
#: The training facts (:func:`run_facts`, :func:`soup_facts`, the note) are replaced as a whole: a key
#: the new weights have no value for (a weight average has no epoch) must not keep the old one's.
STALE_ON_SHIP = ("threshold_criterion", "borderline_margin", "borderline_criterion", "calibration", "operating_points",
                 "valid_dice_at_0.5", "valid_dice_note", "valid_negatives_clean_at_0.5", "selected_on",
                 "training_command", "epochs", "samples_seen", "training_minutes", "training_precision", "loss",
                 "shipped_from", "valid_at_epoch", "prior_training", "soup", "training_note")


def save_shipped(model, name: str, out_dir: Path) -> Path:
    """Compile ``model`` with the training loss (so the file carries it) and write it to
    ``<out_dir>/<name>.keras`` atomically (a reader never sees half a file); returns the path."""
    compile_model(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CONFIG.model_files[name]
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
    return path


def ship(name: str, source: Path | str, out_dir: Path | str = CONFIG.saved_model_dir, note: str | None = None) -> Path:
    """Write ``<out_dir>/<name>.keras`` (seed 256x256x3 input, float32, compiled with the training loss) with
    the weights of ``source`` and update its manifest entry (hash, params, training facts, inference scale);
    ``<name>.history.csv`` and ``.history.png`` become those of the run of ``source``.

    The threshold goes back to the default until ``evaluate.py --split valid --choose-threshold --write-manifest``
    picks one.
    """
    from cli import quiet_tf

    quiet_tf.import_tensorflow()
    import keras

    from create_segmentation_model import build_model

    source, out_dir = Path(source), Path(out_dir)
    keras.mixed_precision.set_global_policy("float32")  # shipped files run anywhere; bf16 is chosen when loading
    trained = load_weights_model(name, source)
    seed = build_model(name)
    seed.set_weights(trained.get_weights())
    path = save_shipped(seed, name, out_dir)

    soup = soup_sidecar(source).is_file()
    facts = soup_facts(name, source) if soup else run_facts(name, source, trained.get_weights())
    # The history beside the weights is that of their run; a weight average has none (removed).
    ship_history(name, None if soup else run_dir_of(source), facts.get("epochs"), out_dir)
    changes = {
        "file": path.name,
        "sha256": sha256_file(path),
        "params": int(seed.count_params()),
        **facts,
        "inference": {"scale": "native", "long_side": CONFIG.native_long_side, "pad_multiple": PAD_MULTIPLES[name]},
        "threshold": CONFIG.default_threshold,
        "threshold_source": "default (not yet chosen on valid for these weights)",
    }
    if note:
        changes["training_note"] = note
    update_entry(name, {k: v for k, v in changes.items() if v is not None}, out_dir / MANIFEST_NAME, drop=STALE_ON_SHIP)
    log.info("shipped %s from %s to %s", name, source, path)
    return path
