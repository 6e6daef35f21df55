"""The gateway's status message, published on `<prefix>.<gateway>.status`.

Built from the supervisor's latest `Status` snapshot (actors, their states and
counters, drops at the source included), the spool (depth, drops by the cap)
and the bridge's own bus counters. `change_key` says when it is worth sending
at once rather than at the next `status_interval`.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["status_message", "change_key", "nats_state"]


def nats_state(connected: bool, error: str, commands_connected: bool, commands_error: str) -> str:
    """The NATS link in one line, the same in `edgert status` and on the status subject:
    "connected", "down: <why>", or "connected; commands down: <why>" when only the
    command connection (the gateway's second one) is missing."""
    if not connected:
        return f"down: {error or 'connecting'}"
    if not commands_connected:
        return f"connected; commands down: {commands_error or 'connecting'}"
    return "connected"


def status_message(
    gateway: str,
    snapshot: dict[str, Any],
    connected: bool,
    server: str,
    spool: dict[str, int],
    bus: dict[str, int],
    error: str = "",
    duplicate_id: str = "",
    clock: dict[str, Any] | None = None,
    commands_connected: bool = True,
    commands_error: str = "",
) -> dict[str, Any]:
    actors = []
    for a in snapshot.get("actors", []):
        err = (a.get("last_error") or "").strip().splitlines()
        actors.append(
            {
                "name": a.get("name"),
                "kind": a.get("kind"),
                "pid": a.get("pid"),
                "state": a.get("state"),
                "restarts": a.get("restarts"),
                "last_error": err[-1] if err else "",
                "uptime": a.get("uptime"),
                "points_out": a.get("points_out"),
                "buffered": a.get("buffered"),
                "dropped": a.get("dropped"),
                "lost_at_stop": a.get("lost_at_stop", 0),
            }
        )
    return {
        "gateway": gateway,
        "time": time.time_ns(),
        # `connected`: the point session; `commands_*`: the command connection;
        # `state`: both in one line, as `edgert status` shows it
        "nats": {
            "connected": connected,
            "server": server,
            "error": error,
            "commands_connected": commands_connected,
            "commands_error": "" if commands_connected else commands_error,
            "state": nats_state(connected, error, commands_connected, commands_error),
        },
        "spool": {
            "points": spool.get("spool_points", 0),
            "batches": spool.get("spool_batches", 0),
            "bytes": spool.get("spool_bytes", 0),
            "dropped": spool.get("spool_dropped", 0),
        },
        "bus": {
            k: bus.get(k, 0)
            for k in ("bad_frames", "duplicates", "out_of_order", "bus_disconnects")
        },
        "actors": actors,
        # points lost at stop by actors a reload removed, by name (their rows are gone)
        "removed_lost_at_stop": dict(snapshot.get("removed_lost_at_stop") or {}),
        # "" unless another gateway with this id is on NATS: who ("host H pid N")
        "duplicate_id": duplicate_id,
        # "synchronized" or not; messages sent unsynced, points whose time was corrected
        "clock": clock or {"state": "synchronized", "unsynced_out": 0, "corrected": 0},
    }


def change_key(snapshot: dict[str, Any], spool_dropped: int, connected: Any) -> Any:
    """What, when it changes, is sent at once (actor states, new drops, the NATS link:
    `connected` may be the state line, so a change of reason counts too)."""
    return (
        tuple(
            (a.get("name"), a.get("state"), a.get("pid"), a.get("restarts"))
            for a in snapshot.get("actors", [])
        ),
        spool_dropped,
        connected,
    )
