"""Bootstrap intervals of a report's image-level numbers, and the paired comparison of two reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.intervals import INTERVAL_METRICS, image_intervals, paired_differences
from important_variables import CONFIG, MODEL_NAMES
from tools import compare_reports


def _rows(n_frac: int, n_neg: int, seed: int = 0, dice_shift: float = 0.0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_frac):
        rows.append({"image_id": f"f{i}", "fractured": True, "dice": float(np.clip(rng.random() + dice_shift, 0, 1)),
                     "fracture_score": float(rng.uniform(0.3, 1.0)), "n_findings": int(rng.integers(0, 3))})
    for i in range(n_neg):
        rows.append({"image_id": f"n{i}", "fractured": False, "dice": None,
                     "fracture_score": float(rng.uniform(0.0, 0.7)), "n_findings": int(rng.random() < 0.2)})
    return rows


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_the_value_is_the_shipped_reports_own_number_inside_its_interval(model):
    report = json.loads((CONFIG.saved_model_dir / f"{model}.metrics.json").read_text())
    iv = image_intervals(report["per_image"], n=300)["metrics"]
    own = {"dice_mean": report["segmentation"]["dice_mean"], **{k: report["image_level"][k] for k in INTERVAL_METRICS[1:]}}
    for name, value in own.items():
        assert iv[name]["value"] == pytest.approx(value, abs=1e-6), name
        assert iv[name]["low"] <= iv[name]["value"] <= iv[name]["high"], name
        assert iv[name]["low"] < iv[name]["high"], name  # 61 fractured images: never a point


def test_intervals_shrink_with_more_images_and_are_reproducible():
    small, large = image_intervals(_rows(20, 60), n=400), image_intervals(_rows(500, 1500), n=400)
    width = {k: v["high"] - v["low"] for k, v in small["metrics"].items()}
    assert all(large["metrics"][k]["high"] - large["metrics"][k]["low"] < width[k] for k in INTERVAL_METRICS)
    assert image_intervals(_rows(20, 60), n=400) == small


def test_a_perfect_separation_has_an_auc_interval_at_one_and_no_negatives_means_none():
    rows = _rows(15, 30)
    for r in rows:
        r["fracture_score"] = 0.9 if r["fractured"] else 0.1
    assert image_intervals(rows, n=200)["metrics"]["roc_auc"] == {"value": 1.0, "low": 1.0, "high": 1.0}
    only_fractured = image_intervals([r for r in rows if r["fractured"]], n=200)["metrics"]
    assert only_fractured["roc_auc"] == {"value": None, "low": None, "high": None}
    assert only_fractured["false_findings_per_negative_image"]["value"] is None
    assert only_fractured["dice_mean"]["value"] is not None


def test_paired_difference_of_a_report_with_itself_is_zero_and_a_better_one_wins_every_resample():
    a = _rows(30, 90, seed=1)
    same = paired_differences(a, list(reversed(a)), n=300)["metrics"]  # row order does not matter: paired by image id
    assert all(same[m]["difference"] == 0 and same[m]["low"] == 0 == same[m]["high"] for m in INTERVAL_METRICS)
    b = [dict(r, dice=min(r["dice"] + 0.2, 1.0) if r["fractured"] else None,
              n_findings=0 if not r["fractured"] else r["n_findings"]) for r in a]
    d = paired_differences(a, b, n=300)["metrics"]
    assert d["dice_mean"]["low"] > 0 and d["dice_mean"]["share_b_better"] == 1.0
    # Fewer false findings is better: the share counts the lower ones.
    assert d["false_findings_per_negative_image"]["difference"] < 0 and d["false_findings_per_negative_image"]["share_b_better"] == 1.0
    with pytest.raises(ValueError, match="not on the same images"):
        paired_differences(a, a[:-1])


def test_compare_reports_prints_the_shipped_models_and_names_a_bad_file(tmp_path, capsys):
    out = tmp_path / "cmp.json"
    assert compare_reports.main(["--resamples", "200", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for model in MODEL_NAMES:
        assert f"{model} ({model}.metrics.json, FracAtlas test)" in text
    assert text.count("paired on 379 images") == len(MODEL_NAMES) - 1
    written = json.loads(out.read_text())
    assert len(written["reports"]) == len(MODEL_NAMES) and len(written["differences"]) == len(MODEL_NAMES) - 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": "unet"}')
    assert compare_reports.main([str(CONFIG.saved_model_dir / "unet.metrics.json"), str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.json" in err[0] and "per-image rows" in err[0]
    other = tmp_path / "other.json"
    report = json.loads((CONFIG.saved_model_dir / "unet.metrics.json").read_text())
    other.write_text(json.dumps(dict(report, per_image=report["per_image"][:-1])))
    assert compare_reports.main([str(CONFIG.saved_model_dir / "unet.metrics.json"), str(other)]) == 2
    assert "cannot be compared" in capsys.readouterr().err


def test_the_markdown_table_shows_the_intervals_and_copes_with_an_older_report():
    from evaluation.report import markdown_table

    report = json.loads((CONFIG.saved_model_dir / "unet.metrics.json").read_text())
    older = {k: v for k, v in report.items() if k != "intervals"}
    iv = image_intervals(report["per_image"], n=200)
    table = markdown_table([dict(report, intervals=iv), older])
    row = next(line for line in table.splitlines() if line.startswith("| 95 % interval"))
    d, a = iv["metrics"]["dice_mean"], iv["metrics"]["roc_auc"]
    assert f"{d['low']:.3f}–{d['high']:.3f} / {a['low']:.3f}–{a['high']:.3f}" in row  # as the Models page writes it
    assert row.rstrip().endswith("| n/a / n/a |")
