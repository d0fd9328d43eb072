"""calibration.py against hand-computed values (no data set, no model)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from inference.calibration import (
    apply_calibration,
    expected_calibration_error,
    fit_calibration,
    plot_reliability,
    reliability_bins,
    valid_calibration,
)


# --------------------------------------------------------------------------- ECE and bins
def test_ece_of_a_perfectly_calibrated_toy_set_is_zero():
    # 0.25 → 1 of 4 fractured; 0.75 → 3 of 4 fractured: each bin's mean equals its share.
    probs = [0.25] * 4 + [0.75] * 4
    labels = [1, 0, 0, 0] + [1, 1, 1, 0]
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_known_toy_value():
    # Bin [0.9, 1]: mean 0.9, share 0.5 → |0.4| x 2/4 = 0.2; bin [0.1, 0.2): mean 0.1,
    # share 0 → 0.1 x 2/4 = 0.05. ECE = 0.25.
    assert expected_calibration_error([0.9, 0.9, 0.1, 0.1], [1, 0, 0, 0]) == pytest.approx(0.25)
    # An always-wrong confident model: ECE 1.
    assert expected_calibration_error([1.0, 0.0], [0, 1]) == pytest.approx(1.0)


def test_reliability_bins_counts_and_edges():
    rows = reliability_bins([0.0, 0.05, 0.1, 0.95, 1.0], [0, 0, 1, 1, 0], bins=10)
    assert len(rows) == 10 and rows[0]["lo"] == 0.0 and rows[-1]["hi"] == 1.0
    assert [r["n"] for r in rows] == [2, 1, 0, 0, 0, 0, 0, 0, 0, 2]  # 1.0 falls in the last bin
    assert rows[0]["mean_prob"] == pytest.approx(0.025) and rows[0]["frac_pos"] == 0.0
    assert rows[9]["frac_pos"] == pytest.approx(0.5)
    assert rows[5]["mean_prob"] is None and rows[5]["frac_pos"] is None
    json.dumps(rows)  # stored in the manifest as is


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="length"):
        expected_calibration_error([0.1, 0.2], [1])
    with pytest.raises(ValueError, match="0 or 1"):
        reliability_bins([0.1], [2])
    with pytest.raises(ValueError, match="one class"):
        fit_calibration([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(ValueError, match="unknown calibration method"):
        fit_calibration([0.1, 0.2], [0, 1], method="beta")


# --------------------------------------------------------------------------- isotonic
def test_isotonic_toy_by_hand():
    # Pool-adjacent-violators on labels (0, 1, 0, 1): the middle pair pools to 0.5.
    cal = fit_calibration([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1], method="isotonic")
    assert cal["method"] == "isotonic" and cal["n"] == 4 and cal["n_positive"] == 2 and cal["fitted_on"] == "valid"
    assert apply_calibration(0.1, cal) == pytest.approx(0.0)
    assert apply_calibration(0.25, cal) == pytest.approx(0.5)
    assert apply_calibration(0.4, cal) == pytest.approx(1.0)
    assert apply_calibration(0.0, cal) == pytest.approx(0.0)  # below the range: clipped to the end value
    assert apply_calibration(0.99, cal) == pytest.approx(1.0)
    assert isinstance(apply_calibration(0.3, cal), float)


def test_isotonic_output_is_monotone_and_matches_scikit_learn():
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, 400)
    labels = (rng.uniform(0, 1, 400) < scores**2).astype(int)  # overconfident raw score
    cal = fit_calibration(scores, labels)
    assert valid_calibration(cal) is not None
    grid = np.linspace(-0.1, 1.1, 500)
    out = apply_calibration(grid, cal)
    assert out.shape == grid.shape
    assert np.all(np.diff(out) >= -1e-12) and out.min() >= 0 and out.max() <= 1
    ref = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(scores, labels).predict(grid)
    np.testing.assert_allclose(out, ref, atol=1e-5)  # knots stored with 8 decimals
    # Calibrating an overconfident score lowers the in-sample ECE.
    rel = cal["reliability"]
    assert rel["in_sample"] is True and rel["split"] == "valid" and rel["n"] == 400
    assert rel["ece"] < rel["ece_uncalibrated"]


def test_calibration_dict_survives_json_and_check_split():
    rng = np.random.default_rng(1)
    s = rng.uniform(0, 1, 200)
    y = (rng.uniform(0, 1, 200) < s).astype(int)
    cal = fit_calibration(s[:100], y[:100], check=(s[100:], y[100:]), check_split="test")
    back = json.loads(json.dumps(cal))
    assert back["reliability"]["split"] == "test" and back["reliability"]["in_sample"] is False
    assert back["reliability"]["n"] == 100
    assert apply_calibration(0.42, back) == pytest.approx(apply_calibration(0.42, cal))
    expected = expected_calibration_error(apply_calibration(s[100:], cal), y[100:])
    assert back["reliability"]["ece"] == pytest.approx(expected, abs=1e-6)


# --------------------------------------------------------------------------- Platt
def test_platt_matches_logistic_regression_and_is_monotone():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    s = rng.uniform(0, 1, 300)
    y = (rng.uniform(0, 1, 300) < 0.2 + 0.6 * s).astype(int)
    cal = fit_calibration(s, y, method="platt")
    assert cal["method"] == "platt" and cal["a"] > 0
    ref = LogisticRegression(C=1e6, max_iter=1000).fit(s[:, None], y)
    for v in (0.0, 0.13, 0.5, 0.871, 1.0):
        assert apply_calibration(v, cal) == pytest.approx(ref.predict_proba([[v]])[0, 1], abs=1e-3)
    assert np.all(np.diff(apply_calibration(np.linspace(0, 1, 50), cal)) > 0)


# --------------------------------------------------------------------------- validity, plot
@pytest.mark.parametrize("bad", [
    None, {}, {"x": [0.1], "y": [0.2]}, {"x": [0.2, 0.1], "y": [0.1, 0.2]}, {"x": [0.1, 0.2], "y": [0.5, 0.2]},
    {"x": [0.1, 0.2], "y": [0.1, 1.5]}, {"x": [0.1, "a"], "y": [0.1, 0.2]}, {"x": [0.1, 0.2, 0.3], "y": [0.1, 0.2]},
    "isotonic",
])
def test_malformed_calibration_is_not_used(bad):
    assert valid_calibration(bad) is None


def test_reliability_plot_draws_and_saves():
    rows = reliability_bins([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    fig = plot_reliability(rows, title="U-Net", ece=0.123)
    ax = fig.axes[0]
    assert "ECE 0.123" in ax.get_title()
    assert len(ax.patches) == sum(r["n"] > 0 for r in rows)  # one bar per non-empty bin
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_from_reports_uses_the_named_score_and_checks_on_test():
    from inference.calibration import fit_from_reports, scores_and_labels

    rng = np.random.default_rng(3)

    def report(split, n):
        s = rng.uniform(0, 1, n)
        return {"split": split, "per_image": [{"fractured": bool(rng.uniform() < v), "fracture_score": float(v),
                                                "topk_mean": float(v) / 2} for v in s]}

    valid, test = report("valid", 300), report("test", 200)
    cal = fit_from_reports(valid, "max_prob", test_report=test)
    assert cal["n"] == 300 and cal["fitted_on"] == "valid"
    assert cal["reliability"]["split"] == "test" and cal["reliability"]["n"] == 200
    s, y = scores_and_labels(valid["per_image"], "topk_mean")
    assert s.max() <= 0.5 and len(y) == 300
    with pytest.raises(ValueError, match="valid split"):
        fit_from_reports(test)
    with pytest.raises(ValueError, match="best_finding"):
        fit_from_reports(valid, "best_finding")
    assert scores_and_labels([{"fractured": True, "fracture_score": 0.3}], "max_prob") is None  # one class only


def test_scores_from_the_evaluations_image_scores_field():
    from inference.calibration import scores_and_labels

    per_image = [  # the evaluation's schema: fracture_score is the chosen score, image_scores has all of them
        {"fractured": True, "fracture_score": 0.4, "image_scores": {"max_prob": 0.9, "topk_mean": 0.4}},
        {"fractured": False, "fracture_score": 0.1, "image_scores": {"max_prob": 0.7, "topk_mean": 0.1}},
    ]
    s, y = scores_and_labels(per_image, "max_prob")
    assert s.tolist() == [0.9, 0.7] and y.tolist() == [1, 0]
    assert scores_and_labels(per_image, "topk_mean")[0].tolist() == [0.4, 0.1]
    assert scores_and_labels(per_image, "best_finding") is None
