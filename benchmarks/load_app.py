"""Load test of the real server: concurrent browser sessions against `streamlit run app.py`.

    python benchmarks/load_app.py [--sessions 8] [--files 3] [--data DIR] [--json FILE] [--artifacts DIR]

Starts the app itself (free localhost port, headless, no file watcher), waits for
``/_stcore/health``, then drives ``--sessions`` concurrent browser sessions (one
Playwright context each, in one Debian Chromium at /usr/bin/chromium). Each session
opens the dashboard, uploads ``--files`` FracAtlas test X-rays of its own (no two
sessions share a file, so results leaking between sessions would show), waits for
every file's result, switches to the other model in the sidebar and waits again.
Each result is read from the app's "Findings JSON" download and compared with
``predict.py --json`` on the same files and model: same threshold, the same findings
(count, boxes, scores) and every other field both carry, except the file's path.
No session may show an error (``st.error`` or an exception element).

Prints p50/p95 (nearest rank) of the time from the upload to the last of the
session's results, the same for the model switch, and the server's peak memory: the
summed RSS of the streamlit process and its children, sampled every 0.2 s from
/proc. Exit status: 0 all sessions matched predict.py without error, 1 any mismatch,
error or timeout, 2 set-up problem (no Chromium, Playwright or data set).
Images are read from the data set at run time; none is copied or kept.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.app_server import streamlit_server  # noqa: E402
from important_variables import CONFIG, MODEL_LABELS, MODEL_NAMES, is_fracatlas_dir, resolve_data_dir  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RESULT_TIMEOUT_S = 900  # 8 sessions x 3 files on 2 shared cores, cold model load included
MEMORY_SAMPLE_S = 0.2
# Fields of the findings JSON that name the input rather than describe the result:
# predict.py writes the path it was given, the app the uploaded file's name.
NOT_COMPARED = {"file", "note"}
REQUIRED_FIELDS = ("threshold", "findings")

EXIT_OK, EXIT_MISMATCH, EXIT_SETUP = 0, 1, 2

# The page is "ready" when the script run is over (no running icon, no stale element
# left from the previous run) and either n findings downloads or an error are shown.
_READY_JS = """n => {
  if (document.querySelector('[data-testid=stStatusWidgetRunningIcon], [data-testid=stStatusWidgetRunningManIcon], '
      + '[data-testid=stElementContainer][data-stale=true]')) return false;
  if (document.querySelector('[data-testid=stAlertContentError], [data-testid=stException]')) return true;
  const json = [...document.querySelectorAll('[data-testid=stDownloadButton]')]
    .filter(b => /json/i.test(b.textContent));
  return json.length >= n;
}"""
# A rerun has started: the running icon is up or the old elements are marked stale.
_RUNNING_JS = """() => !!document.querySelector('[data-testid=stStatusWidgetRunningIcon], '
  + '[data-testid=stStatusWidgetRunningManIcon], [data-testid=stElementContainer][data-stale=true]')"""
_ERRORS_JS = """() => [...document.querySelectorAll('[data-testid=stAlertContentError], [data-testid=stException]')]
  .map(e => e.textContent.trim().slice(0, 300))"""


class SetupError(Exception):
    """Something the load test needs is missing (exit status 2)."""


# --------------------------------------------------------------------------- memory
def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc; empty when it has gone)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(c) for c in task.read_text().split()]
        except OSError:
            pass
    return out


def tree_rss_bytes(pid: int) -> int:
    """Summed resident memory (bytes) of ``pid`` and all its descendants, from /proc/<pid>/statm."""
    page = os.sysconf("SC_PAGE_SIZE")
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue  # exited between the listing and the read
        todo += _children(p)
    return total


class PeakMemory:
    """Samples :func:`tree_rss_bytes` of a process every ``interval_s`` in a thread; ``peak`` in bytes."""

    def __init__(self, pid: int, interval_s: float = MEMORY_SAMPLE_S):
        self.pid, self.interval_s = pid, interval_s
        self.peak = self.first = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = tree_rss_bytes(self.pid)
            self.first = self.first or rss
            self.peak = max(self.peak, rss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- inputs and reference
def _complete_jpeg(path: Path) -> bool:
    """False for the truncated JPEGs FracAtlas keeps on purpose (no end-of-image marker)."""
    with open(path, "rb") as fh:
        fh.seek(-2, os.SEEK_END)
        return fh.read(2) == b"\xff\xd9"


def pick_files(data_dir: Path, sessions: int, per_session: int) -> list[list[Path]]:
    """Distinct FracAtlas test-split X-rays for each session: about 2/3 fractured, the rest not."""
    from fracture.dataset import FracAtlas

    atlas = FracAtlas(data_dir)
    n_frac = math.ceil(per_session * 2 / 3)
    frac = [r.path for r in atlas.records("test", fractured=True) if _complete_jpeg(r.path)]
    neg = [r.path for r in atlas.records("test", fractured=False) if _complete_jpeg(r.path)]
    need_frac, need_neg = sessions * n_frac, sessions * (per_session - n_frac)
    if len(frac) < need_frac or len(neg) < need_neg:
        raise SetupError(f"{data_dir}: not enough test images for {sessions} sessions x {per_session} files")
    return [frac[i * n_frac:(i + 1) * n_frac] + neg[i * (per_session - n_frac):(i + 1) * (per_session - n_frac)]
            for i in range(sessions)]


def predict_reference(files: list[Path], model: str) -> dict[str, dict]:
    """``predict.py --json`` on ``files`` with ``model`` (its default threshold), keyed by file name.

    One image per model call, as the app runs them. Raises when predict.py fails.
    """
    with tempfile.TemporaryDirectory(prefix="load_app_") as tmp:
        out = Path(tmp) / "reference.json"
        cmd = [sys.executable, str(ROOT / "predict.py"), *map(str, files), "--model", model, "--json", str(out),
               "--no-progress", "--batch-size", "1"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"predict.py --model {model} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
        records = json.loads(out.read_text(encoding="utf-8"))
    return {Path(r["file"]).name: r for r in records}


def compare_records(app: dict, ref: dict) -> list[str]:
    """Differences between the app's findings JSON and predict.py's record for one file (empty: identical).

    Compares the required fields and every other field both carry (except the file's
    path), exactly: both sides round scores and thresholds to 4 decimals the same way.
    """
    diffs = [f"{k}: missing in the app's JSON" for k in REQUIRED_FIELDS if k not in app]
    diffs += [f"{k}: missing in predict.py's JSON" for k in REQUIRED_FIELDS if k not in ref]
    for key in sorted((app.keys() & ref.keys()) - NOT_COMPARED):
        a, r = app[key], ref[key]
        if key == "findings" and isinstance(a, list) and isinstance(r, list):
            if len(a) != len(r):
                diffs.append(f"findings: app {len(a)}, predict.py {len(r)}")
            diffs += [f"finding {i + 1}: app {fa}, predict.py {fr}" for i, (fa, fr) in enumerate(zip(a, r, strict=False)) if fa != fr]
        elif a != r:
            diffs.append(f"{key}: app {a!r}, predict.py {r!r}")
    return diffs


# --------------------------------------------------------------------------- browser sessions
@dataclass
class SessionResult:
    index: int
    files: list[str]
    seconds: dict[str, float] = field(default_factory=dict)  # model -> time from the action to all results
    results: dict[str, dict[str, dict]] = field(default_factory=dict)  # model -> file name -> findings JSON
    errors: list[str] = field(default_factory=list)


async def _findings_downloads(page) -> list[dict]:
    """Every findings JSON the page offers right now, parsed (one download each)."""
    buttons = page.locator("[data-testid=stDownloadButton]").filter(has_text=re.compile("json", re.I))
    out = []
    for i in range(await buttons.count()):
        async with page.expect_download(timeout=60_000) as info:
            await buttons.nth(i).locator("button, a").first.click()
        download = await info.value
        path = await download.path()
        out.append(json.loads(Path(path).read_text(encoding="utf-8")))
        await download.delete()
    return out


async def wait_results(page, names: list[str], model: str, timeout_s: float) -> tuple[dict[str, dict], float]:
    """Wait until the page shows ``model``'s result for every file in ``names``.

    Returns (file name -> findings JSON, monotonic time the page became ready). Raises
    RuntimeError with the page's message when it shows an error.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        remaining_ms = max(1, (deadline - time.monotonic()) * 1000)
        await page.wait_for_function(_READY_JS, arg=len(names), timeout=remaining_ms, polling=100)
        ready = time.monotonic()
        errors = await page.evaluate(_ERRORS_JS)
        if errors:
            raise RuntimeError("the app shows an error: " + " | ".join(errors))
        got = {r.get("file"): r for r in await _findings_downloads(page) if r.get("model") == model}
        if all(n in got for n in names):
            return {n: got[n] for n in names}, ready
        # The old run's results were still up (the rerun had not begun): wait for the new ones.
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {model} result for {sorted(set(names) - got.keys())} within {timeout_s:.0f} s")
        await page.wait_for_timeout(300)


async def select_model(page, model: str) -> None:
    """Pick ``model`` in the sidebar: a selectbox labelled "Model" if there is one, else the radio option."""
    sidebar = page.locator("[data-testid=stSidebar]")
    label = MODEL_LABELS[model]
    select = sidebar.locator("[data-testid=stSelectbox]").filter(has_text=re.compile(r"\bmodel\b", re.I))
    if await select.count():
        await select.first.locator("[role=combobox], input").first.click()
        await page.get_by_role("option", name=label, exact=True).click()
    else:
        await sidebar.get_by_text(label, exact=True).first.click()


async def _start_wait(page, timeout_ms: float = 5_000) -> None:
    """Wait (briefly) for the rerun an action triggers to begin, so the old results are not taken for new ones."""
    try:
        await page.wait_for_function(_RUNNING_JS, timeout=timeout_ms, polling="raf")
    except Exception:  # noqa: BLE001 - a fast rerun may already be over; wait_results checks the model anyway
        pass


async def run_session(browser, url: str, index: int, files: list[Path], models: tuple[str, ...],
                      timeout_s: float, artifacts: Path | None) -> SessionResult:
    """One user: open the dashboard, upload ``files`` with ``models[0]``, then switch to each other model."""
    res = SessionResult(index, [p.name for p in files])
    context = await browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = await context.new_page()
    page.set_default_timeout(timeout_s * 1000)
    try:
        await page.goto(f"{url}/dashboard")
        await page.locator("[data-testid=stSidebar]").wait_for()
        await page.locator("input[type=file]").first.wait_for(state="attached")
        await select_model(page, models[0])  # the default already: no rerun, but say which
        await page.wait_for_timeout(300)
        for i, model in enumerate(models):
            start = time.monotonic()
            if i == 0:
                await page.locator("input[type=file]").first.set_input_files([str(p) for p in files])
            else:
                await select_model(page, model)
            await _start_wait(page)
            res.results[model], ready = await wait_results(page, res.files, model, timeout_s)
            res.seconds[model] = round(ready - start, 3)
    except Exception as exc:  # noqa: BLE001 - one session's failure is a finding to report, not a crash
        res.errors.append(f"session {index}: {type(exc).__name__}: {str(exc).splitlines()[0][:400] if str(exc) else ''}")
        if artifacts is not None:
            try:
                await page.screenshot(path=str(artifacts / f"load-session-{index}.png"), full_page=True)
            except Exception:  # noqa: BLE001 - the screenshot is a courtesy
                pass
    finally:
        await context.close()
    return res


async def run_sessions(url: str, file_sets: list[list[Path]], models: tuple[str, ...], timeout_s: float,
                       artifacts: Path | None) -> list[SessionResult]:
    """All sessions at once: one Chromium, one context per session."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            return list(await asyncio.gather(*(run_session(browser, url, i, files, models, timeout_s, artifacts)
                                               for i, files in enumerate(file_sets))))
        finally:
            await browser.close()


# --------------------------------------------------------------------------- whole run
def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


@dataclass
class LoadReport:
    sessions: int
    files_per_session: int
    models: list[str]
    seconds: dict[str, dict[str, float | None]]  # model -> {"p50", "p95", "max"}
    peak_rss_mb: float
    idle_rss_mb: float
    compared: int  # (session, file, model) results compared with predict.py
    findings_compared: int  # findings in those results
    mismatches: list[str]
    errors: list[str]
    session_seconds: list[dict[str, float]]
    load_avg: list[float]
    command: str

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.errors


def check_requirements() -> None:
    """Raise SetupError when Chromium or Playwright is missing."""
    if not CHROMIUM.is_file():
        raise SetupError(f"{CHROMIUM} not found (apt-get install -y chromium)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError as exc:
        raise SetupError("the playwright Python package is not installed (pip install -r requirements-dev.txt)") from exc


def run_load_test(data_dir: Path, sessions: int = 8, per_session: int = 3, models: tuple[str, ...] = MODEL_NAMES,
                  artifacts: Path | None = None, timeout_s: float = RESULT_TIMEOUT_S, command: str = "") -> LoadReport:
    """predict.py references first (the server is not up yet), then the server and the concurrent sessions."""
    check_requirements()
    file_sets = pick_files(data_dir, sessions, per_session)
    all_files = [p for fs in file_sets for p in fs]
    reference = {m: predict_reference(all_files, m) for m in models}
    artifacts = artifacts or Path(tempfile.mkdtemp(prefix="load_app_"))
    artifacts.mkdir(parents=True, exist_ok=True)
    with streamlit_server("app.py", log_path=artifacts / "load-streamlit-server.log") as server, PeakMemory(server.proc.pid) as mem:
        results = asyncio.run(run_sessions(server.url, file_sets, models, timeout_s, artifacts))
    mismatches, errors, compared, n_findings = [], [], 0, 0
    for r in results:
        errors += r.errors
        for model, by_file in r.results.items():
            for name, app_rec in by_file.items():
                compared += 1
                n_findings += len(app_rec.get("findings") or [])
                ref = reference[model].get(name)
                diffs = ["predict.py has no record of this file"] if ref is None else compare_records(app_rec, ref)
                mismatches += [f"session {r.index}, {name}, {model}: {d}" for d in diffs]
    seconds = {}
    for m in models:
        vals = [r.seconds[m] for r in results if m in r.seconds]
        seconds[m] = {"p50": percentile(vals, 50), "p95": percentile(vals, 95), "max": max(vals, default=None),
                      "n": len(vals)}
    return LoadReport(sessions, per_session, list(models), seconds, round(mem.peak / 2**20, 1),
                      round(mem.first / 2**20, 1), compared, n_findings, mismatches, errors, [r.seconds for r in results],
                      [round(x, 2) for x in os.getloadavg()], command)


def format_report(rep: LoadReport) -> str:
    first, *others = rep.models
    lines = [f"{rep.sessions} concurrent sessions x {rep.files_per_session} files, models {', '.join(rep.models)}"]
    for i, m in enumerate(rep.models):
        s = rep.seconds[m]
        what = "upload -> all results" if i == 0 else "model switch -> all results"
        if s["n"]:
            lines.append(f"  {what} ({MODEL_LABELS[m]}): p50 {s['p50']:.1f} s, p95 {s['p95']:.1f} s, max {s['max']:.1f} s "
                         f"(n={s['n']})")
        else:
            lines.append(f"  {what} ({MODEL_LABELS[m]}): no session got there")
    lines.append(f"  server memory (streamlit + children, RSS): {rep.idle_rss_mb:.0f} MB at start, peak {rep.peak_rss_mb:.0f} MB")
    lines.append(f"  load average at the end: {' '.join(map(str, rep.load_avg))}")
    lines.append(f"  results compared with predict.py: {rep.compared} ({rep.findings_compared} findings); "
                 f"mismatches: {len(rep.mismatches)}, session errors: {len(rep.errors)}")
    lines += [f"  MISMATCH {m}" for m in rep.mismatches[:50]]
    lines += [f"  ERROR {e}" for e in rep.errors]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Concurrent browser sessions against the real app; results vs predict.py.")
    ap.add_argument("--sessions", type=int, default=8, help="concurrent browser sessions (default: 8)")
    ap.add_argument("--files", type=int, default=3, help="X-rays each session uploads (default: 3)")
    ap.add_argument("--data", help=f"FracAtlas folder (default: ${CONFIG.data_env_var} or the usual places)")
    ap.add_argument("--timeout", type=float, default=RESULT_TIMEOUT_S,
                    help=f"seconds a session may wait for its results (default: {RESULT_TIMEOUT_S})")
    ap.add_argument("--artifacts", help="folder for the server log and failure screenshots (default: a temp folder)")
    ap.add_argument("--json", help="also write the report as JSON here")
    args = ap.parse_args(argv)
    if args.sessions < 1 or args.files < 1:
        ap.error("--sessions and --files must be at least 1")
    data_dir = resolve_data_dir(args.data)
    if not is_fracatlas_dir(data_dir):
        print(f"load_app.py: error: FracAtlas not found; pass --data or set ${CONFIG.data_env_var}", file=sys.stderr)
        return EXIT_SETUP
    command = "python benchmarks/load_app.py " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        rep = run_load_test(data_dir, args.sessions, args.files, artifacts=Path(args.artifacts) if args.artifacts else None,
                            timeout_s=args.timeout, command=command.strip())
    except SetupError as exc:
        print(f"load_app.py: error: {exc}", file=sys.stderr)
        return EXIT_SETUP
    print(format_report(rep))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**asdict(rep), "ok": rep.ok}, indent=2) + "\n", encoding="utf-8")
    return EXIT_OK if rep.ok else EXIT_MISMATCH


if __name__ == "__main__":
    sys.exit(main())
