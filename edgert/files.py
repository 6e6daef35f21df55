"""Small private files written whole: the fleet's desired configs, the loss counts.

`write_private_atomic(path, data)` leaves at `path` either the old file or the
new one, never a mix, even across a power cut: the bytes go to a temporary file
beside it (mode 0600, since what is written may carry credentials), which is
fsynced and renamed over `path`, and then the directory is fsynced so the
rename itself is on disk. On an error the temporary file is removed and the
error raised; the old file is untouched. Only the standard library: the
supervisor's process writes with it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["write_private_atomic"]


def write_private_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace the file at `path` with `data`, whole or not at all, mode 0600."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, 0o600)  # a temporary file an earlier crash left, looser
            f.write(data)
            f.flush()
            os.fsync(fd)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(p.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
