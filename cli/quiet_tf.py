"""Import TensorFlow/Keras without their start-up lines on the terminal.

TensorFlow 2.21's C++ side prints "All log messages before absl::InitializeLog() ...",
"oneDNN custom operations are on ..." and the CPU-feature notice straight to file
descriptor 2 while it is imported; ``TF_CPP_MIN_LOG_LEVEL`` no longer hides them (they
are logged before absl reads it). Users of the app and of the CLIs should not see
them, so the import runs with fd 2 sent through a pipe that drops exactly those
lines and passes everything else (a real error or warning) on to stderr.

Call :func:`import_tensorflow` before the first ``import keras`` / ``import
tensorflow`` of a process (the CLIs' ``main``, the app's model loader); later
imports are cached by Python and print nothing anyway.
"""

from __future__ import annotations

import os
import re
import sys
import threading

#: The start-up notices dropped; anything else written to stderr during the import is kept.
NOISE = re.compile(
    rb"absl::InitializeLog\(\)|oneDNN custom operations are on|cpu_feature_guard|"
    rb"To enable the following instructions|rebuild TensorFlow with the appropriate compiler flags"
)
_lock = threading.Lock()


def import_tensorflow():
    """Import ``tensorflow`` and ``keras`` once per process with the start-up notices filtered out.

    Returns the tensorflow module. Thread-safe (the app's background loader and a
    session may both get here); a no-op after the first call.
    """
    with _lock:
        if "tensorflow" in sys.modules and "keras" in sys.modules:
            return sys.modules["tensorflow"]
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            err_fd = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):  # stderr replaced (pytest capture, IDE): nothing to filter
            err_fd = None
        if err_fd is None:
            import keras  # noqa: F401
            import tensorflow as tf

            return tf
        sys.stderr.flush()
        saved = os.dup(err_fd)
        read_end, write_end = os.pipe()
        os.dup2(write_end, err_fd)
        os.close(write_end)
        kept: list[bytes] = []

        def drain() -> None:
            with os.fdopen(read_end, "rb") as pipe:
                kept.extend(line for line in pipe if not NOISE.search(line))

        reader = threading.Thread(target=drain, name="tf-import-stderr", daemon=True)
        reader.start()
        try:
            import keras  # noqa: F401
            import tensorflow as tf
        finally:
            os.dup2(saved, err_fd)  # closes the pipe's last write end: the reader sees EOF
            os.close(saved)
            reader.join(10)
            if kept:
                os.write(err_fd, b"".join(kept))
        return tf


__all__ = ["NOISE", "import_tensorflow"]
