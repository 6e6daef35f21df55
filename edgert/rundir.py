"""Where a gateway's runtime directory is: `[gateway] runtime_dir`, else one per user.

Standard library only, so `edgert status` and the other commands that find a
running gateway from its config read `[gateway]` and locate it without loading
the config's schema (`edgert.config`, which uses this too).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["runtime_dir_of"]


def runtime_dir_of(gateway_id: str, runtime_dir: str | None = None) -> Path:
    """`runtime_dir` when set, else `$XDG_RUNTIME_DIR/edgert/ID` or `/tmp/edgert-UID/ID`."""
    if runtime_dir:
        return Path(runtime_dir)
    base = os.environ.get("XDG_RUNTIME_DIR")
    root = Path(base) / "edgert" if base else Path(f"/tmp/edgert-{os.getuid()}")
    return root / gateway_id
