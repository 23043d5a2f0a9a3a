"""A child process that must not outlive its parent: a training attempt under its Celery worker, the other ranks of
a multi-GPU run under the first. Imports nothing heavy, so a parent can use it before starting the child."""

from __future__ import annotations

import contextlib
import ctypes
import signal


def die_with_parent() -> None:
    """Asks Linux to kill this process when its parent dies (PR_SET_PDEATHSIG); elsewhere the parent's own
    shutdown still stops it."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
