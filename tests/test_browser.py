"""The app in a real browser: Debian's Chromium driven by Playwright against `streamlit run server.py`.

Open home → dashboard, upload a real X-ray, wait for the result image and the findings,
switch model, download the findings JSON and check it; go to Models and back and find the
result still there (a returning user, each earlier upload removable on its own); the
compare view with its downloads; new uploads on top; the "unlike the training images"
warning on a drawn picture; no all-clear anywhere (no "No fracture found", no green box);
the header button whole at 1440 px; and every request the browser made in all that
went to the app's own host and port. Screenshots go to test-artifacts/.
Skips without /usr/bin/chromium, except under CI (REQUIRE_BROWSER=1), where it fails.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

import pytest

from benchmarks.app_server import ServerError, streamlit_server
from important_variables import DEFAULT_MODEL, MODEL_LABELS, MODEL_NAMES

try:
    from playwright.sync_api import expect
except ImportError:  # the app_url fixture skips, or fails under REQUIRE_BROWSER=1
    expect = None

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SLOW_MS = 240_000  # first prediction imports TensorFlow and loads a model on a busy machine
PAGE_MS = 60_000  # anything else the page draws (Playwright's expect() waits 5 s unless told)

pytestmark = pytest.mark.browser


def _need(what: str, reason: str):
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"{what} is required under CI (REQUIRE_BROWSER=1): {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def app_url():
    """`streamlit run server.py` (what `make run` serves: app.py, models loaded at server start) on a
    free localhost port; stopped (by its pid) after the module."""
    if not CHROMIUM.is_file():
        _need("Chromium", f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _need("Playwright", "the playwright Python package is not installed")
    try:
        with streamlit_server("server.py", log_path=ARTIFACTS / "streamlit-server.log") as server:
            yield server.url
    except ServerError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def requests_seen() -> list[str]:
    """Every URL the browser asked for during this module (HTTP requests and websockets)."""
    return []


@pytest.fixture(scope="module")
def browser_page(app_url, requests_seen):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1500, "height": 1100}, accept_downloads=True)
        # Recorded on the context, from before the first page load: favicons, fonts, scripts,
        # images, XHR and the app's websocket, whatever page or frame asks.
        context.on("request", lambda request: requests_seen.append(request.url))
        page = context.new_page()
        page.on("websocket", lambda ws: requests_seen.append(ws.url))
        page.set_default_timeout(PAGE_MS)
        yield page
        context.close()
        browser.close()


def test_home_dashboard_upload_switch_model_download(app_url, browser_page, real_xray_paths, tmp_path):
    page = browser_page
    xray = Path(real_xray_paths[0])

    page.goto(app_url)
    # The first page view shares the CPU with the models loading in the background.
    page.get_by_role("heading", name="Bone-fracture localization").wait_for(timeout=SLOW_MS)
    # The heading comes first in the run: the privacy note may not be drawn yet.
    expect(page.get_by_text("never stored").first).to_be_visible(timeout=PAGE_MS)
    _wait_app_idle(page)
    page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)

    page.get_by_role("button", name="Open the dashboard").click()
    page.get_by_role("heading", name="Dashboard").wait_for()
    _wait_app_idle(page)  # a file set during a script run can be dropped (see the compare test)
    page.locator("input[type=file]").set_input_files(str(xray))

    # Result: two images (input + annotated) and the findings (table, borderline or a neutral "no finding").
    page.get_by_text(f"{MODEL_LABELS[DEFAULT_MODEL]}, threshold").wait_for(timeout=SLOW_MS)  # the default model
    findings = (page.locator("[data-testid=stDataFrame]").or_(page.get_by_text("No finding at threshold"))
                .or_(page.get_by_text("Borderline: no region reached threshold")))
    expect(findings.first).to_be_visible(timeout=SLOW_MS)
    _assert_no_all_clear(page)
    _wait_app_idle(page)
    expect(page.locator("[data-testid=stImage] img")).to_have_count(2, timeout=PAGE_MS)
    _wait_images_painted(page, 2)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{DEFAULT_MODEL}.png"), full_page=True)

    # Switch model in the sidebar: new result without re-uploading.
    page.locator("[data-testid=stSidebar]").get_by_text("Simple encoder-decoder", exact=True).click()
    page.get_by_text("Simple encoder-decoder, threshold").wait_for(timeout=SLOW_MS)
    _wait_app_idle(page)  # a click during the rerun would hit a stale button whose file is gone
    expect(page.locator("[data-testid=stImage] img")).to_have_count(2, timeout=PAGE_MS)
    _wait_images_painted(page, 2)
    page.screenshot(path=str(ARTIFACTS / "dashboard-encoder_decoder.png"), full_page=True)

    with page.expect_download() as dl:
        page.get_by_role("button", name="Findings JSON").click()
    download = dl.value
    assert download.suggested_filename == f"{xray.stem}_encoder_decoder_findings.json"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    report = json.loads(saved.read_text(encoding="utf-8"))
    assert report["file"] == xray.name and report["model"] == "encoder_decoder" and report["error"] is None
    assert report["threshold"] == pytest.approx(0.5, abs=0.5)
    assert report["width"] > 0 and report["height"] > 0
    assert isinstance(report["findings"], list)
    # The keys of predict.py --json, with the app's words and the image score the manifest names.
    assert {"status", "reading", "review_box", "note", "image_score_name", "image_score", "unlike_training_images"} <= set(report)
    assert report["status"] in ("finding", "borderline", "no_finding") and "No fracture" not in report["reading"]
    for f in report["findings"]:
        x0, y0, x1, y1 = f["box"]
        assert 0 <= x0 < x1 <= report["width"] and 0 <= y0 < y1 <= report["height"]

    page.get_by_role("link", name="Models").click()
    page.get_by_role("heading", name="Models").first.wait_for()
    page.wait_for_timeout(1000)
    page.screenshot(path=str(ARTIFACTS / "models.png"), full_page=True)


def test_returning_user_finds_uploads_results_and_settings(app_url, browser_page, real_xray_paths):
    """Dashboard → Models → Dashboard: the upload, its result and the chosen model are still there."""
    page = browser_page  # continues from the previous test: on Models, after an upload on the Dashboard
    xray = Path(real_xray_paths[0])
    if page.get_by_role("heading", name="Models").count() == 0:
        pytest.skip("needs the upload of test_home_dashboard_upload_switch_model_download")
    page.locator("[data-testid=stSidebarNav]").get_by_role("link", name="Dashboard").click()
    page.get_by_role("heading", name="Dashboard").wait_for()
    # No new upload: the earlier one is shown again with the model chosen before leaving.
    page.get_by_text("Simple encoder-decoder, threshold").wait_for(timeout=SLOW_MS)
    _wait_app_idle(page)
    _wait_images_painted(page, 2)
    assert page.get_by_text(xray.name).count() >= 1
    assert page.get_by_text("earlier upload").count() == 1
    assert page.get_by_text("as well").count() == 0  # the uploader is empty: nothing is shown "as well"
    expect(page.get_by_role("button", name="Remove")).to_have_count(1)  # each earlier upload can go on its own
    sidebar = page.locator("[data-testid=stSidebar]")
    assert sidebar.get_by_role("radio", name="Simple encoder-decoder").is_checked()
    page.screenshot(path=str(ARTIFACTS / "dashboard-returning.png"), full_page=True)


def test_compare_view_of_the_drawn_illustration(app_url, browser_page):
    """Both models side by side in a real browser, on assets/home.png (drawn, not a patient image;
    its numbered box is part of the drawing). Screenshot: test-artifacts/dashboard-compare.png."""
    page = _empty_dashboard(browser_page, app_url)
    sidebar = page.locator("[data-testid=stSidebar]")
    sidebar.get_by_text("Compare all", exact=True).click()
    # A file set while the rerun of this click is pending or running is dropped by the uploader
    # (seen in 2 of 16 tries with no wait at all; the old _wait_app_idle alone can pass before
    # the rerun starts). So wait for what only the compare run draws, one threshold per model,
    # and for that run to end, before uploading.
    expect(sidebar.get_by_text("Simple encoder-decoder threshold", exact=True)).to_be_visible(timeout=SLOW_MS)
    _wait_app_idle(page)
    page.locator("input[type=file]").set_input_files(str(ROOT / "assets" / "home.png"))
    for name in MODEL_NAMES:
        expect(page.get_by_text(f"{MODEL_LABELS[name]}, threshold")).to_be_visible(timeout=SLOW_MS)
    _wait_app_idle(page)
    _wait_images_painted(page, 1 + len(MODEL_NAMES))
    expect(page.locator("[data-testid=stImage] img")).to_have_count(1 + len(MODEL_NAMES), timeout=PAGE_MS)  # input + one overlay per model
    # The compare view has its downloads: one labelled row per model.
    for model in (MODEL_LABELS[n] for n in MODEL_NAMES):
        for what in ("Annotated PNG", "Findings JSON", "Mask PNG"):
            expect(page.get_by_role("button", name=f"{what} ({model})")).to_have_count(1)
    _assert_no_all_clear(page)
    page.screenshot(path=str(ARTIFACTS / "dashboard-compare.png"))
    sidebar.get_by_text("One model", exact=True).click()
    _wait_app_idle(page)


def test_new_uploads_on_top_and_a_picture_that_is_not_an_xray_is_flagged(app_url, browser_page, tmp_path):
    """Two uploads one after the other: the later one is drawn first. A drawn picture (not an X-ray)
    gets the plain "unlike the training images" warning next to its reading."""
    import sys

    import cv2

    sys.path.insert(0, str(ROOT / "tools"))
    from sample_pictures import synthetic_pictures

    page = _empty_dashboard(browser_page, app_url)
    pictures = synthetic_pictures()
    first, second = tmp_path / "first_shapes.png", tmp_path / "second_shapes.png"
    cv2.imwrite(str(first), cv2.cvtColor(pictures["synthetic_02_shapes"], cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(second), cv2.cvtColor(pictures["synthetic_08_shapes"], cv2.COLOR_RGB2BGR))
    results = page.locator("[data-testid=stMainBlockContainer]").get_by_text(", threshold 0.")  # one caption per result
    page.locator("input[type=file]").set_input_files(str(first))
    expect(results).to_have_count(1, timeout=SLOW_MS)
    _wait_app_idle(page)
    page.locator("input[type=file]").set_input_files(str(second))
    expect(results).to_have_count(2, timeout=SLOW_MS)
    _wait_app_idle(page)
    headings = page.locator("[data-testid=stMainBlockContainer] h3").all_inner_texts()
    names = [h for h in headings if h.endswith("_shapes.png")]
    assert names == ["second_shapes.png", "first_shapes.png"], headings
    expect(page.get_by_text("Unlike the training images").first).to_be_visible(timeout=PAGE_MS)
    _assert_no_all_clear(page)
    page.screenshot(path=str(ARTIFACTS / "dashboard-not-an-xray.png"), full_page=True)


def test_header_button_is_not_cut_off_at_1440_px(app_url, browser_page):
    page = browser_page
    page.set_viewport_size({"width": 1440, "height": 900})
    try:
        page.goto(f"{app_url}/dashboard")
        page.get_by_role("heading", name="Dashboard").wait_for()
        _wait_app_idle(page)
        button = page.get_by_role("button", name="How reliable are the models?")
        expect(button).to_be_visible()
        # The label is cut when the button or its text paragraph is narrower than its content.
        cut = button.evaluate("b => [b, ...b.querySelectorAll('p')].some(e => e.scrollWidth > e.clientWidth + 1)")
        assert not cut, "the header button's label is cut off"
        assert button.inner_text().strip().endswith("How reliable are the models?")
    finally:
        page.set_viewport_size({"width": 1500, "height": 1100})


def test_no_request_leaves_the_machine(app_url, browser_page, requests_seen):
    """Every URL the browser requested in this module went to the app's own host and port."""
    page = browser_page
    page.goto(app_url)  # one more fresh page load (favicon, fonts, scripts) on top of the flows above
    page.get_by_role("heading", name="Bone-fracture localization").wait_for()
    _wait_app_idle(page)
    page.wait_for_timeout(1000)
    own = urllib.parse.urlsplit(app_url).netloc
    assert len(requests_seen) > 10, requests_seen  # the recorder really saw the traffic
    outside = sorted({u for u in requests_seen if urllib.parse.urlsplit(u).scheme not in ("data", "blob")
                      and urllib.parse.urlsplit(u).netloc != own})
    (ARTIFACTS / "browser-requests.txt").write_text("\n".join(requests_seen) + "\n", encoding="utf-8")
    assert outside == [], f"requests to other hosts than {own}: {outside}"
    icon = page.locator("link[rel*=icon]").first.get_attribute("href")
    assert icon and not icon.startswith(("http://", "https://", "//")) or urllib.parse.urlsplit(icon).netloc == own, icon


def _assert_no_all_clear(page) -> None:
    """No "No fracture found", and no green (success) box for a result."""
    assert page.get_by_text("No fracture found").count() == 0
    main = page.locator("[data-testid=stMainBlockContainer]")
    assert main.locator("[data-testid=stAlertContentSuccess]").count() == 0
    for text in ("≈ 0 %", "≈ 100 %"):
        assert page.get_by_text(text).count() == 0


def _empty_dashboard(page, app_url: str):
    """The Dashboard, loaded and idle, with the uploads of earlier tests of this browser forgotten."""
    page.goto(f"{app_url}/dashboard")
    page.get_by_role("heading", name="Dashboard").wait_for()
    _wait_app_idle(page)
    forget = page.get_by_role("button", name="Forget all")
    if forget.count():
        forget.click()
        _wait_app_idle(page)
    return page


def _wait_images_painted(page, n: int) -> None:
    """Wait until ``n`` result images are decoded by the browser (not just in the DOM)."""
    page.wait_for_function(
        "n => [...document.querySelectorAll('[data-testid=stImage] img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length >= n",
        arg=n,
        timeout=SLOW_MS,
    )


def _wait_app_idle(page) -> None:
    """Wait until the script run is over: no "running" status icon and no stale element
    (Streamlit keeps the previous run's elements, marked data-stale, until replaced)."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=stStatusWidgetRunningIcon], "
        "[data-testid=stStatusWidgetRunningManIcon], [data-testid=stElementContainer][data-stale=true]')",
        timeout=SLOW_MS,
    )
