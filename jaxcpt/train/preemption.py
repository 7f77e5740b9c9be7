"""SIGTERM → a flag the train loop polls (single process; on a pod jax's preemption sync point
decides instead, so all hosts stop at the same step).

`jaxcpt train` installs the handler first thing, before any heavy import, so a SIGTERM during
start-up (imports, data and model set-up, restore, compilation) never kills the process with a
half-written MODEL_DIR: set-up stops at its next check and the run exits 0 like any preemption.
A `train()` called from Python installs it for its own duration only.
"""

from __future__ import annotations

import contextlib
import signal
import threading

_requested = False
_installed = False


def _handle(signum, frame) -> None:
    global _requested
    _requested = True


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install() -> None:
    """For the rest of the process (the CLI); only the main thread may install handlers."""
    global _installed
    if not _installed and _main_thread():
        signal.signal(signal.SIGTERM, _handle)
        _installed = True


@contextlib.contextmanager
def handling_sigterm():
    """Within the block SIGTERM sets the flag; the earlier handler comes back afterwards (unless
    the process-wide handler of `install()` was already there, which stays)."""
    global _installed, _requested
    if _installed or not _main_thread():
        yield
        return
    _requested = False
    previous = signal.signal(signal.SIGTERM, _handle)
    _installed = True
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _installed = False


def requested() -> bool:
    return _requested
