"""The latest value of every point the bridge accepted: `edgert values`, `tail --last`.

A Modbus register on `report = "change"` or a GPIO input is silent until it
moves, so watching the live flow does not show its value. The bridge keeps the
latest point of every (node, type, key) and answers for them on a ROUTER socket
at `ipc://<runtime_dir>/values.sock`: a request is a msgpack map `{"node": NODE
or nil}`, the reply `{"points": [point maps], "now": ns, "full": bool}`.

Kept light on the point path: `add` only appends what the bus decode kept of
a node's part for this table (packed msgpack, already checked: the last map
alone when every point of the part is one (node, type, key), as a signal at
full speed sends them, else the whole part); parts are unpacked and folded
into the table when someone asks, or once `FOLD_BYTES` of them wait. The table
holds at most `MAX_POINTS` entries; points of new (node, type, key)s past that
are not kept (`full` says so). It lives in the bridge's memory: it starts empty
with the bridge, and the values come back as the drivers publish.
"""

from __future__ import annotations

import time
from typing import Any

import msgpack

__all__ = ["Latest", "values_endpoint", "MAX_POINTS"]

MAX_POINTS = 20_000  # (node, type, key) entries kept at most
FOLD_BYTES = 1 << 20  # unpack the waiting parts once this much waits


def values_endpoint(runtime_dir: Any) -> str:
    """Where the bridge answers for the latest values."""
    return f"ipc://{runtime_dir}/values.sock"


class Latest:
    """The latest point map of every (node, type, key); owned by the bridge's loop."""

    def __init__(self, max_points: int = MAX_POINTS) -> None:
        self.max_points = max_points
        self.table: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.full = False

    def add(self, packed: bytes) -> None:
        """A msgpack array of point maps accepted from the bus (oldest first)."""
        self.pending.append(packed)
        self.pending_bytes += len(packed)
        if self.pending_bytes >= FOLD_BYTES:
            self.fold()

    def fold(self) -> None:
        parts, self.pending, self.pending_bytes = self.pending, [], 0
        table = self.table
        for packed in parts:
            try:
                maps = msgpack.unpackb(packed, raw=False)
            except Exception:  # noqa: BLE001 - checked on the bus already; never fail here
                continue
            for m in maps:
                k = (m["node"], m["type"], m["key"])
                if k not in table and len(table) >= self.max_points:
                    self.full = True
                    continue
                table[k] = m  # parts come in order per node (resends never reach here)

    def points(self, node: str | None = None) -> list[dict[str, Any]]:
        self.fold()
        if node is None:
            return list(self.table.values())
        return [m for (n, _, _), m in self.table.items() if n == node]

    def reply(self, request: bytes) -> bytes:
        """The answer to one request on the values socket."""
        try:
            req = msgpack.unpackb(request, raw=False)
            node = req.get("node") if isinstance(req, dict) else None
        except Exception:  # noqa: BLE001 - a garbled request gets everything
            node = None
        points = self.points(node if isinstance(node, str) else None)
        out = {"points": points, "now": time.time_ns(), "full": self.full}
        return msgpack.packb(out, use_bin_type=True)
