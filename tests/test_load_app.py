"""The load test of the real server, small: 2 concurrent browser sessions.

Runs ``benchmarks/load_app.py``'s own code: `streamlit run app.py`, two Playwright
contexts in Debian's Chromium, each uploading 3 FracAtlas X-rays and switching model;
every result must equal ``predict.py --json``'s, and no session may see an error.
Skips without /usr/bin/chromium or Playwright, except under CI (REQUIRE_BROWSER=1),
where it fails. The comparison itself is checked without a browser.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from benchmarks import load_app
from important_variables import MODEL_NAMES

pytestmark = pytest.mark.slow  # starts the real server

ROOT = Path(__file__).resolve().parents[1]
SESSIONS, FILES = 2, 3


@pytest.mark.browser
def test_two_concurrent_sessions_match_predict_py(data_dir):
    try:
        load_app.check_requirements()
    except load_app.SetupError as exc:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser load test is required under CI (REQUIRE_BROWSER=1): {exc}")
        pytest.skip(str(exc))
    rep = load_app.run_load_test(data_dir, sessions=SESSIONS, per_session=FILES, artifacts=ROOT / "test-artifacts",
                                 timeout_s=300)
    report = load_app.format_report(rep)
    assert rep.errors == [], report
    assert rep.mismatches == [], report
    assert rep.compared == SESSIONS * FILES * len(MODEL_NAMES), report
    assert rep.findings_compared > 0, "no finding at all on fractured X-rays: the comparison proved little\n" + report
    assert all(rep.seconds[m]["n"] == SESSIONS for m in MODEL_NAMES), report
    assert rep.peak_rss_mb > rep.idle_rss_mb > 0, report


REF = {
    "file": "/data/images/IMG1.jpg", "model": "unet", "width": 373, "height": 454, "threshold": 0.8,
    "fracture_score": 0.91, "findings": [{"box": [10, 20, 30, 40], "score": 0.91, "area_px": 120}], "error": None,
    "note": None,
}


def test_compare_records_identical_except_the_path():
    app = {k: v for k, v in copy.deepcopy(REF).items() if k != "note"} | {"file": "IMG1.jpg"}
    assert load_app.compare_records(app, REF) == []


@pytest.mark.parametrize(
    "change, expect",
    [
        (lambda r: r["findings"][0].update(score=0.9101), "finding 1"),
        (lambda r: r["findings"][0].update(box=[10, 20, 30, 41]), "finding 1"),
        (lambda r: r["findings"].append({"box": [1, 2, 3, 4], "score": 0.85, "area_px": 4}), "findings: app 2"),
        (lambda r: r.update(threshold=0.79), "threshold"),
        (lambda r: r.update(width=374), "width"),
        (lambda r: r.pop("findings"), "missing in the app"),
    ],
)
def test_compare_records_finds_each_difference(change, expect):
    app = copy.deepcopy(REF)
    change(app)
    diffs = load_app.compare_records(app, REF)
    assert diffs and any(expect in d for d in diffs), diffs


def test_percentile_nearest_rank():
    assert load_app.percentile([], 50) is None
    assert load_app.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert load_app.percentile([float(i) for i in range(1, 9)], 95) == 8.0
    assert load_app.percentile([float(i) for i in range(1, 21)], 95) == 19.0
