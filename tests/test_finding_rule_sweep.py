"""The grow-level sweep re-cuts findings from cached maps and chooses on valid as evaluate.py does."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import finding_rule_sweep
from evaluation.cases import Case
from inference.findings import FindingRule
from inference.results import PredictionResult


def _case() -> Case:
    prob = np.zeros((40, 40), np.float32)
    prob[10:30, 10:30] = 0.5   # a halo that only a low grow level joins
    prob[18:22, 18:22] = 0.95  # the seed
    result = PredictionResult.from_prob(prob, 40, 40, 0.9, FindingRule(low_ratio=0.8, score="mean"), "max_prob")
    return Case(SimpleNamespace(fractured=True, image_id="x"), result)


def test_recut_grows_findings_to_the_new_level_and_keeps_the_rest_of_the_rule():
    case = _case()
    (tight,) = case.findings(0.9)
    (wide,) = finding_rule_sweep.recut([case], 0.5)[0].findings(0.9)
    assert tight.area_px == 16 and wide.area_px == 400
    assert wide.score < tight.score  # the "mean" score is kept: the halo lowers it
    assert finding_rule_sweep.recut([case], 0.5)[0].result.rule.score == "mean"
    assert case.result.rule.low_ratio == 0.8  # the cached case is not changed


@pytest.mark.slow
def test_sweep_prints_a_row_per_ratio(data_dir, capsys):
    assert finding_rule_sweep.main(["--model", "encoder_decoder", "--ratios", "0.5", "1.0", "--limit", "2",
                                    "--data", str(data_dir)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["low_ratio"] for r in rows[:-1]] == [0.5, 1.0]
    assert all("dice" in r["fracatlas"] and r["threshold"] is not None for r in rows[:-1])
    assert "minutes" in rows[-1]
