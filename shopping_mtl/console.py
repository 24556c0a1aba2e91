"""What a command-line run prints: the project's progress lines, not its libraries' chatter.

`configure_logging(verbosity)` sets the levels once per process; `quiet_native_stderr()` wraps
the first `import tensorflow`, whose C++ start-up writes lines straight to the process's stderr
before any setting can silence them (absl's "All log messages before absl::InitializeLog()",
oneDNN's and the CUDA stub's notices). Lines it does not know are written back unchanged, so an
import that fails still shows why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from typing import Iterator

QUIET, NORMAL, VERBOSE = 0, 1, 2

# Libraries whose INFO and WARNING lines are noise on a normal run: TensorFlow's "Gradients do
# not exist" for the heads a single-task comparison model leaves untrained, Keras's
# BackupAndRestore notice, absl's "Sharding callback duration", SavedModel "Assets written".
CHATTY_LOGGERS = ("tensorflow", "absl", "h5py", "mlflow", "alembic", "keras_tuner", "urllib3")

# What TensorFlow's C++ start-up writes to stderr on a machine without a GPU, every time.
START_UP_NOISE = ("All log messages before absl::InitializeLog()", "oneDNN custom operations are on",
                  "cudart_stub.cc", "Could not find cuda drivers", "cuda_platform.cc", "cuInit")


def configure_logging(verbosity: int = NORMAL) -> None:
    """Set up the process's log output for a command-line run.

    QUIET: warnings of the project only (and errors of anything). NORMAL: the project's
    progress (INFO), other libraries' errors only, TensorFlow's C++ log at FATAL. VERBOSE:
    everything, TensorFlow's C++ log included. Must run before TensorFlow is imported for the
    C++ level to apply (`TF_CPP_MIN_LOG_LEVEL` is read once).
    """
    logging.basicConfig(level=logging.WARNING if verbosity == QUIET else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        force=True)
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if verbosity == VERBOSE else "3"
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbosity == VERBOSE else logging.ERROR)
    # tf-keras warns at every SavedModel export that the TFRS index has no get_config(); the
    # export is a tf.function signature, which needs none. Dropped even when verbose.
    logging.getLogger("tensorflow").addFilter(
        lambda record: "non-serializable objects" not in record.getMessage())


@contextlib.contextmanager
def quiet_native_stderr(enabled: bool = True) -> Iterator[None]:
    """Hold back what native code writes to file descriptor 2 inside the block, then write back
    every line that is not `START_UP_NOISE`. Python's own `sys.stderr` is flushed first and
    works as usual. A no-op when `enabled` is False or stderr has no file descriptor."""
    try:
        fd = sys.stderr.fileno() if enabled else -1
    except (AttributeError, OSError, ValueError):  # a captured stream without a descriptor
        fd = -1
    if fd < 0:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(noise in line for noise in START_UP_NOISE)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
