"""Loss counts that outlive the gateway: `<data_dir>/losses.json`.

The supervisor counts, per actor, the points a driver could not hand over when
it stopped (`lost_at_stop`). Those counts are kept in a small JSON file in the
data directory, rewritten whole (`edgert.files.write_private_atomic`: a new
file renamed over the old one, mode 0600) each time one grows, which is rare,
and read back when the gateway starts, so a restart does not make a loss
disappear from status. A file that cannot be read or written is logged, never
fatal: counting goes on in memory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..files import write_private_atomic

__all__ = ["load_losses", "save_losses"]

log = logging.getLogger("edgert.supervisor")


def load_losses(path: str | Path | None) -> dict[str, int]:
    """Actor name -> points lost at stop, as last saved; empty when there is none."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
        return {str(k): int(v) for k, v in data.get("lost_at_stop", {}).items() if int(v) > 0}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, AttributeError) as e:
        log.warning("loss counts in %s unreadable, counting from 0: %s", path, e)
        return {}


def save_losses(path: str | Path | None, lost_at_stop: dict[str, int]) -> None:
    """Write the counts, whole (`write_private_atomic`); an error is logged, not raised."""
    if path is None:
        return
    try:
        write_private_atomic(path, json.dumps({"lost_at_stop": lost_at_stop}).encode())
    except OSError as e:
        log.warning("cannot save loss counts to %s: %s", path, e)
