"""`streamlit run` on a free localhost port for the length of a ``with`` block: the one place that
starts, health-checks and stops the real app for benchmarks and the browser tests.

    with streamlit_server("server.py", log_path=Path("test-artifacts/streamlit-server.log")) as server:
        ...  # server.url answers /_stcore/health with "ok"; server.proc is the streamlit process
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEALTH_TIMEOUT_S = 180.0  # streamlit imports in seconds; a busy 2-core machine needs more
HEALTH_POLL_S = 0.1  # cold_start.py reports the time to the first "ok", so poll finely (a refused connect is cheap)
STOP_TIMEOUT_S = 20.0  # after SIGTERM, before SIGKILL


class ServerError(RuntimeError):
    """The server exited or did not answer its health check in time (one-line message naming the log)."""


@dataclass
class Server:
    url: str  # http://127.0.0.1:<port>
    proc: subprocess.Popen
    log_path: Path | None  # None: the output was discarded
    up_s: float  # seconds from the start of the process to the first healthy answer


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(entry: str = "app.py", *, log_path: Path | None = None, timeout_s: float = HEALTH_TIMEOUT_S,
                     env: Mapping[str, str] | None = None) -> Iterator[Server]:
    """`streamlit run <entry>` (a path relative to the repository root) until the block ends.

    Headless, bound to 127.0.0.1 on a free port, with no usage statistics and no file watcher
    (it would walk .venv): what .streamlit/config.toml says too, repeated on the command line so
    a benchmark or test does not depend on that file. ``env`` is added to this process's environment
    (``TF_CPP_MIN_LOG_LEVEL=2`` unless it says otherwise).
    Output goes to ``log_path`` (created with its folder) or is discarded. Raises
    ServerError when the process exits or ``/_stcore/health`` does not answer "ok" within
    ``timeout_s``; the process is stopped by its pid (SIGTERM, then SIGKILL) either way.
    """
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", entry, "--server.port", str(port), "--server.address", "127.0.0.1",
           "--server.headless", "true", "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"]
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") if log_path is not None else open(os.devnull, "wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(proc, url, timeout_s, log_path)
            yield Server(url, proc, log_path, time.monotonic() - started)
        finally:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float, log_path: Path | None) -> None:
    see = f"; see {log_path}" if log_path is not None else ""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise ServerError(f"streamlit exited with code {proc.returncode}{see}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ServerError(f"streamlit did not answer {url}/_stcore/health within {timeout_s:.0f} s{see}")
        time.sleep(HEALTH_POLL_S)
