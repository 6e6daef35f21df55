"""A benchmark's scratch space: a short temporary directory and a nats-server in it.

The directory's path is short because ZeroMQ ipc socket paths are limited to
107 bytes; it holds the gateway's runtime and data directories and the
server's JetStream store, and is removed with everything in it when the
`with` block ends, as is the server.

`runtime_dir()` is a short temporary directory on a tmpfs when the machine
has one (/dev/shm), as a gateway's runtime directory is where it is deployed
(/run): the drivers' outbox ring files live there.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgert.testing.nats import NatsProcess

__all__ = ["workdir", "runtime_dir"]

TMPFS = "/dev/shm"


@contextmanager
def runtime_dir() -> Iterator[str]:
    """A fresh directory for a gateway's runtime_dir, on a tmpfs when there is one."""
    d = tempfile.mkdtemp(prefix="ebr-", dir=TMPFS if Path(TMPFS).is_dir() else None)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextmanager
def workdir() -> Iterator[tuple[str, NatsProcess]]:
    """A fresh directory and a running nats-server (JetStream on) for the block."""
    d = tempfile.mkdtemp(prefix="ebp-")
    try:
        with NatsProcess(Path(d) / "nats") as srv:
            yield d, srv
    finally:
        shutil.rmtree(d, ignore_errors=True)
