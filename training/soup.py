"""Weight averages ("model soup"): averaging snapshots of one architecture, the recipe file beside
the average, and the manifest facts of an average."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cli.common import UsageError
from training.history import run_facts
from training.recipe import load_weights_model


def soup_sidecar(weights_path: Path | str) -> Path:
    """``X.weights.h5`` → ``X.soup.json``: the recipe of a weight-space average (see :func:`write_soup`)."""
    p = Path(weights_path)
    return p.with_name(p.name.removesuffix(".weights.h5") + ".soup.json")


def _soup_weights(n: int, coefs: list[float] | None) -> list[float]:
    """``coefs`` for ``n`` snapshots normalised to sum 1 (default: equal); UsageError when unusable."""
    coefs = [1.0] * n if coefs is None else [float(c) for c in coefs]
    if n < 2 or len(coefs) != n or min(coefs) < 0 or sum(coefs) <= 0:
        raise UsageError("a weight average needs two or more snapshots and one non-negative weight each, not all zero")
    total = sum(coefs)
    return [c / total for c in coefs]


def average_snapshots(name: str, paths: list[Path | str], coefs: list[float] | None = None):
    """A size-free ``name`` model holding the ``coefs``-weighted mean (normalised to sum 1; default equal)
    of every variable of the snapshots (``.weights.h5`` or ``.keras`` of that architecture).

    Why: fine-tunes of one parent usually sit in one basin, so their average ("model soup") can keep
    what each learned at no training cost; whether it does is measured on valid like any other lever.
    """
    model, acc = None, None
    for path, c in zip(paths, _soup_weights(len(paths), coefs), strict=True):
        model = load_weights_model(name, Path(path))
        w = [np.asarray(v, np.float64) * c for v in model.get_weights()]
        acc = w if acc is None else [a + b for a, b in zip(acc, w, strict=True)]
    model.set_weights([a.astype(np.float32) for a in acc])
    return model


def write_soup(name: str, out: Path | str, paths: list[Path | str], coefs: list[float] | None, command: str) -> Path:
    """Average ``paths`` into ``out`` (.weights.h5) and write its recipe next to it (:func:`soup_sidecar`),
    so that ``--ship-from out`` records the ingredients' training instead of an empty run folder."""
    out = Path(out)
    if not out.name.endswith(".weights.h5"):
        raise UsageError(f"{out}: the average is written as a .weights.h5 file")
    weights = _soup_weights(len(paths), coefs)
    model = average_snapshots(name, paths, weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(out)
    recipe = {"model": name, "command": command,
              "ingredients": [{"path": str(p), "weight": round(c, 6)} for p, c in zip(paths, weights, strict=True)]}
    soup_sidecar(out).write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")
    return out


def soup_facts(name: str, source: Path) -> dict:
    """Manifest facts of a weight average: each ingredient's :func:`run_facts` under ``soup``, and the
    totals (samples, minutes) of the ingredients' own runs; a shared parent's training is in theirs."""
    recipe = json.loads(soup_sidecar(source).read_text(encoding="utf-8"))
    parts = []
    for ing in recipe["ingredients"]:
        facts = run_facts(name, Path(ing["path"]))
        parts.append({"weight": ing["weight"], **facts})
    losses = dict.fromkeys(p.get("loss") for p in parts if p.get("loss"))
    return {
        "training_command": " ; ".join(p.get("training_command", p["shipped_from"]) for p in parts) + " && " + recipe["command"],
        "samples_seen": sum(p.get("samples_seen", 0) for p in parts),
        "training_minutes": round(sum(p.get("training_minutes", 0.0) for p in parts), 1),
        "training_precision": sorted({x for p in parts for x in p.get("training_precision", [])}) or None,
        "loss": "weight average of runs trained with: " + " | ".join(losses) if losses else None,
        "shipped_from": str(source),
        "soup": {"command": recipe["command"], "ingredients": parts},
    }
