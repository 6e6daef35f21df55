"""The few figures of one gateway that `edgert fleet ls` shows, from a status snapshot.

Put in the `data` of the status endpoint's `$SRV.STATS` entry, so one STATS
request to the whole fleet brings every gateway's line.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

__all__ = ["summary"]


def summary(snapshot: dict[str, Any]) -> dict[str, Any]:
    actors = snapshot.get("actors", [])
    return {
        "actors": dict(sorted(Counter(str(a.get("state")) for a in actors).items())),
        "buffered": sum(int(a.get("buffered") or 0) for a in actors),
        "dropped": sum(int(a.get("dropped") or 0) for a in actors),
        "config_revision": snapshot.get("config_revision"),
    }
