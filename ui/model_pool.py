"""The models loading in the background, once per process. No Streamlit here.

The app creates one :class:`ModelPool` per server process (behind
``st.cache_resource``) on its first script run, so TensorFlow's import and the
models' loading and warm-up run while the user is still on the Home page or picking
a file, instead of after the first upload. A page asks ``state(name)`` to show
progress and ``get(name, timeout)`` to wait for a predictor.

A load that fails (a model file that fails its SHA-256 check, a broken install) is
not kept: the next ``get`` / ``ensure`` tries again, so a fixed file is picked up
without restarting the server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

LOADING, READY, FAILED = "loading", "ready", "failed"


class ModelPool:
    """Loads ``names`` one after the other in a single background thread.

    ``loader(name)`` returns the object to hand out (the app: a ``prediction.Predictor``).
    One worker thread: the machine has few cores and two parallel TensorFlow loads
    would only compete; the first-listed model is ready first.
    """

    def __init__(self, names: Iterable[str], loader: Callable[[str], object]):
        self._loader = loader
        self._names = tuple(names)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-pool")
        self._lock = threading.Lock()
        self._futures: dict[str, Future] = {}
        self._started: dict[str, float] = {}
        self.created = time.monotonic()
        for name in self._names:
            self.ensure(name)

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    def ensure(self, name: str) -> Future:
        """The future of ``name``'s load; submitted when absent (never loaded, or its failure was reported)."""
        with self._lock:
            fut = self._futures.get(name)
            if fut is None:
                self._started[name] = time.monotonic()
                fut = self._executor.submit(self._loader, name)
                self._futures[name] = fut
            return fut

    def state(self, name: str) -> str:
        """"loading", "ready" or "failed" (a failed load is retried by the ``get`` after the one that raised it)."""
        fut = self._futures.get(name)
        if fut is None or not fut.done():
            return LOADING
        return FAILED if fut.exception() is not None else READY

    def waited_s(self, name: str) -> float:
        """Seconds since ``name``'s current load was queued."""
        return time.monotonic() - self._started.get(name, self.created)

    def get(self, name: str, timeout: float | None = None):
        """The loaded object for ``name``; blocks up to ``timeout`` seconds (None: until done).

        Raises the load's exception (and forgets it, so the next call retries), or
        ``concurrent.futures.TimeoutError`` while it is still loading.
        """
        fut = self.ensure(name)
        try:
            return fut.result(timeout)
        except BaseException:
            if fut.done():  # the load failed (not merely still running): report once, retry next time
                with self._lock:
                    if self._futures.get(name) is fut:
                        del self._futures[name]
            raise


__all__ = ["LOADING", "READY", "FAILED", "ModelPool"]
