"""A benchmark's scratch space: a short temporary directory and a nats-server in it.

The directory's path is short because ZeroMQ ipc socket paths are limited to
107 bytes; it holds the gateway's runtime and data directories and the
server's JetStream store, and is removed with everything in it when the
`with` block ends, as is the server.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgert.testing.nats import NatsProcess

__all__ = ["workdir"]


@contextmanager
def workdir() -> Iterator[tuple[str, NatsProcess]]:
    """A fresh directory and a running nats-server (JetStream on) for the block."""
    d = tempfile.mkdtemp(prefix="ebp-")
    try:
        with NatsProcess(Path(d) / "nats") as srv:
            yield d, srv
    finally:
        shutil.rmtree(d, ignore_errors=True)
