"""The bodies of the bare processes the core benchmarks compare edgert with.

Apart from `edgert.bench.core` (and its imports), so a spawned baseline process
loads only what a bare one needs: its cost is the interpreter's, not edgert's.
"""

from __future__ import annotations

import os
import time
from typing import Any

__all__ = ["report_now", "idle"]


def report_now(w: Any) -> None:
    """Send the monotonic time this process got to run, and exit."""
    w.send(time.monotonic())
    w.close()


def idle(w: Any, r: Any) -> None:
    """Send this process's pid, then wait for the parent to say "done"."""
    w.send(os.getpid())
    r.recv()
