"""The NATS bridge: points from the local bus up to NATS, commands from NATS down.

- `actor`: the `Bridge` actor, one asyncio loop that owns all state and carries
  out the forwarder's actions (bus, tail, spool worker thread, uplink);
- `forwarder`: every decision of the point path, a synchronous state machine;
- `uplink`: the NATS connection, sessions, publishing and acks, reconnects;
- `commands`: requests on `<prefix>.<gateway>.cmd.<node>` to the owning driver;
- `status`: the message on `<prefix>.<gateway>.status`;
- `payload`: encodings, content types, splitting big batches;
- `natsimport`: nats-py imported without importlib.metadata.

The names below are imported lazily, so that `edgert tail` or `edgert cmd`
need not load asyncio, sqlite or the bridge's loop.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Bridge", "BridgeConfig", "tail_endpoint", "nats_options", "CONTENT_TYPES"]

_WHERE = {
    "Bridge": "actor",
    "BridgeConfig": "actor",
    "nats_options": "uplink",
    "CONTENT_TYPES": "payload",
}


def tail_endpoint(runtime_dir: Any) -> str:
    """Where the bridge publishes every accepted batch for `edgert tail`."""
    return f"ipc://{runtime_dir}/tail.sock"


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)
