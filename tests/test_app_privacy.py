"""Uploads are processed in memory only: driving the dashboard writes no file anywhere we can see.

Watched during and after an upload + analysis + threshold change + model switch:
- the working directory and the repository (recursively);
- the temp directory (a fresh, private one for this test, so other processes on the
  machine cannot add noise; nothing in it may be added or change);
- Streamlit's folders (~/.streamlit, <repo>/.streamlit, ~/.cache/streamlit);
- every ``open()`` in a writing mode made by this process while the app runs;
- and the machine's real temp directory, where no new file may contain the upload's bytes.

Before the watch starts, another session loads both models (as on a server that is
already up): TensorFlow's autograph writes the generated source of the forward
function to the temp dir once per process when a model is first traced. That is
code, not user data, and happens before any upload is analysed; the watched session
then must not write anything at all.
"""

from __future__ import annotations

import builtins
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from important_variables import DEFAULT_MODEL, MODEL_NAMES

pytestmark = pytest.mark.slow  # runs the app while watching the file system

ROOT = Path(__file__).resolve().parents[1]
SECOND_MODEL = next(m for m in MODEL_NAMES if m != DEFAULT_MODEL)  # the model the user switches to


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """{path: (size, mtime_ns)} for every file under ``root`` (missing root: empty)."""
    out = {}
    for dirpath, _dirs, files in os.walk(root, onerror=lambda e: None):
        for f in files:
            p = os.path.join(dirpath, f)
            try:
                st = os.stat(p)
            except OSError:
                continue
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def changed(before: dict, after: dict) -> list[str]:
    return sorted(p for p, sig in after.items() if before.get(p) != sig)


@pytest.fixture
def private_tmp(tmp_path_factory, monkeypatch):
    # tmp_path_factory's base already exists; a fresh subdir becomes the process temp dir.
    d = tmp_path_factory.mktemp("privacy_tmp")
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    for var in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.setenv(var, str(d))
    return d


def test_upload_leaves_no_file_behind(real_xray_paths, private_tmp, monkeypatch):
    from streamlit.testing.v1 import AppTest

    path = Path(real_xray_paths[0])
    data = path.read_bytes()
    signature = data[len(data) // 2 : len(data) // 2 + 64]  # a slice only this upload contains
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # .pyc of our own code is not user data

    real_tmp = Path("/tmp")
    watched = [Path.cwd(), ROOT, private_tmp, Path.home() / ".streamlit", ROOT / ".streamlit",
               Path.home() / ".cache" / "streamlit"]
    writes: list[str] = []
    real_open = builtins.open

    def watching_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            writes.append(f"{file} ({mode})")
        return real_open(file, mode, *args, **kwargs)

    seen_during: set[str] = set()
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            for w in watched:
                seen_during.update(changed(before[w], snapshot(w)))
            time.sleep(0.05)

    def dashboard():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
        return at.button(key="home_to_dashboard").click().run()

    other = Path(real_xray_paths[-1])
    warm = dashboard()
    for model in (DEFAULT_MODEL, SECOND_MODEL):  # each model's first load happens here, before the watch
        warm.radio(key="model").set_value(model).run()
        warm.file_uploader(key="uploads").set_value((other.name, other.read_bytes(), "image/jpeg")).run()
        assert not warm.exception and len(warm.image) == 2

    at = dashboard()
    before = {w: snapshot(w) for w in watched}
    before_real_tmp = snapshot(real_tmp)
    private_tmp_entries = sorted(os.listdir(private_tmp))  # incl. empty dirs, which snapshot() misses
    watcher = threading.Thread(target=poll, daemon=True)
    monkeypatch.setattr(builtins, "open", watching_open)
    watcher.start()
    try:
        at.file_uploader(key="uploads").set_value((path.name, data, "image/jpeg")).run()
        assert not at.exception and not at.error and len(at.image) == 2
        at.slider(key=f"threshold_{DEFAULT_MODEL}").set_value(0.3).run()  # the dashboard opens on the default
        at.radio(key="model").set_value(SECOND_MODEL).run()
        assert not at.exception and len(at.image) == 2
        at.file_uploader(key="uploads").set_value(None).run()  # the user removes the file
        assert not at.exception
    finally:
        stop.set()
        watcher.join(5)
        monkeypatch.setattr(builtins, "open", real_open)

    assert writes == [], f"files opened for writing while the app ran: {writes}"
    assert sorted(seen_during) == [], f"files appeared during the run: {sorted(seen_during)}"
    for w in watched:
        assert changed(before[w], snapshot(w)) == [], f"new or changed files under {w}"
    assert sorted(os.listdir(private_tmp)) == private_tmp_entries
    # The shared /tmp: other processes write there, but none of it may hold the upload.
    for p in changed(before_real_tmp, snapshot(real_tmp)):
        try:
            if os.path.getsize(p) <= 200 * 2**20:
                with real_open(p, "rb") as fh:
                    assert signature not in fh.read(), f"{p} contains the uploaded image's bytes"
        except OSError:
            continue
    # And the session forgot the analysis once the file was removed.
    assert at.session_state["_analyses"] == {}
