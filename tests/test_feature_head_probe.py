"""benchmarks/feature_head_probe.py: the fits and the read-out, on hand-made features (no model, no data)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from important_variables import CONFIG

sys.path.insert(0, str(CONFIG.repo_root / "benchmarks"))
import feature_head_probe as probe  # noqa: E402


def test_share_above_reads_the_cut_of_the_negatives():
    negatives = np.arange(10, dtype=float)  # the 0.8 quantile is 7.2
    assert probe.share_above(np.array([7.0, 7.5, 9.0, 100.0]), negatives, 0.8) == pytest.approx(0.75)
    assert probe.logit(np.array([0.5, 0.0, 1.0])).shape == (3, 1)
    assert probe.logit(np.array([0.5]))[0, 0] == pytest.approx(0.0)


def _set(rng, n_pos, n_neg, signal, score_signal):
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    feats = rng.normal(size=(y.size, 6))
    feats[:, 0] += signal * y  # one informative channel
    score = 1 / (1 + np.exp(-(rng.normal(size=y.size) + score_signal * y)))
    return feats.astype(np.float32), score, y


def test_a_head_on_informative_features_beats_a_weak_score():
    rng = np.random.default_rng(0)
    sets = {"train": _set(rng, 60, 120, 3.0, 0.3), "valid": _set(rng, 60, 120, 3.0, 0.3)}
    f, s, y = _set(rng, 40, 0, 3.0, 0.3)
    sets["yolo8"] = (f, s, y)
    rows = probe.probe(sets, [0.1], seed=0)
    alone, head = rows
    assert alone["fit"] == "map score alone" and head["fit"] == "head C=0.1"
    assert head["valid_auc_cross_validated"] > alone["valid_auc"] + 0.2
    assert head["valid_auc_fitted_on_train"] > alone["valid_auc"] + 0.2
    assert head["yolo8_sensitivity_at_spec0.9"] > alone["yolo8_sensitivity_at_spec0.9"]
    assert all(0 <= v <= 1 for r in rows for k, v in r.items() if k != "fit")
