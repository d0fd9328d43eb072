"""ModelPool (background loading) and quiet_tf (TensorFlow start-up lines), without the app."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import pytest

from ui.model_pool import FAILED, LOADING, READY, ModelPool

ROOT = Path(__file__).resolve().parents[1]


def test_pool_loads_in_background_in_order_and_once():
    gate = threading.Event()
    calls = []

    def loader(name):
        calls.append(name)
        gate.wait(5)
        return f"model:{name}"

    pool = ModelPool(["a", "b"], loader)
    assert pool.state("a") == LOADING and pool.state("b") == LOADING
    with pytest.raises(FutureTimeout):
        pool.get("a", timeout=0.05)  # still loading: the caller can show progress and poll
    gate.set()
    assert pool.get("b", timeout=5) == "model:b"
    assert pool.get("a") == "model:a" and pool.state("a") == READY
    assert calls == ["a", "b"]  # one thread, in the given order, each loaded once
    assert pool.get("a") == "model:a" and calls == ["a", "b"]


def test_failed_load_is_reported_then_retried():
    attempts = []

    def loader(name):
        attempts.append(name)
        if len(attempts) == 1:
            raise ValueError("bad checksum")
        return "ok"

    pool = ModelPool(["m"], loader)
    with pytest.raises(ValueError, match="bad checksum"):
        pool.get("m", timeout=5)
    assert pool.get("m", timeout=5) == "ok"  # the fixed file is picked up without a restart
    assert attempts == ["m", "m"] and pool.state("m") == READY


def test_state_failed_before_get():
    pool = ModelPool(["m"], lambda n: 1 / 0)
    pool._futures["m"].exception(5)  # wait for the background load to end
    assert pool.state("m") == FAILED


@pytest.mark.slow
def test_tensorflow_import_prints_no_start_up_lines():
    code = ("import sys; from cli import quiet_tf; quiet_tf.import_tensorflow(); import keras; "
            "sys.stderr.write('kept line\\n')")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "oneDNN" not in proc.stderr and "absl::InitializeLog" not in proc.stderr, proc.stderr
    assert "cpu_feature_guard" not in proc.stderr
    assert proc.stderr.strip() == "kept line"  # the filter drops only the start-up notices


def test_noise_filter_keeps_other_lines():
    from cli.quiet_tf import NOISE

    assert NOISE.search(b"I0000 port.cc:153] oneDNN custom operations are on. You may see")
    assert not NOISE.search(b"Traceback (most recent call last):")
    assert not NOISE.search(b"E0000 some real TensorFlow error")
