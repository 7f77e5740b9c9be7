"""Console hygiene: the native libraries' start-up logging is dropped unless --verbose."""

from __future__ import annotations

import contextlib
import os
import sys

# Commands whose start-up loads TensorFlow (seqio data) and/or a jax backend: their native
# libraries log start-up chatter to stderr (oneDNN, CUDA probing on CPU machines, absl's
# "before InitializeLog" line) that no Python setting silences in TF 2.21 / jaxlib 0.10.
NEEDS_TF, NEEDS_JAX = ("train", "demo", "data"), ("train", "demo", "data", "eval", "init-embeddings",
                                                   "convert", "export", "fetch-demo-model")


@contextlib.contextmanager
def native_stderr_silenced():
    """File descriptor 2 points at /dev/null inside (native libraries write there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def quiet_startup(command: str) -> None:
    """Load the heavy native libraries once, with their start-up logging dropped (--verbose keeps
    it); what they log later, once running, is shown as usual."""
    if command not in NEEDS_JAX:
        return
    with native_stderr_silenced():
        if command in NEEDS_TF:
            with contextlib.suppress(ImportError):
                import tensorflow as tf

                tf.config.list_physical_devices("GPU")  # TF probes CUDA (and logs) only here
        import jax

        if command != "train":  # train initialises jax.distributed first (then the backend)
            jax.devices()
