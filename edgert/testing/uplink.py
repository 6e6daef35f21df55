"""Stand-ins for what an `edgert.bridge.uplink.Uplink` asks of the bridge it runs in,
for tests that drive an uplink alone on a real nats-server."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

__all__ = ["Confirmed", "uplink_run"]


class Confirmed:
    """The forwarder's side: what NATS took, per `published` call."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def published(self, session: int, now: float, n: int) -> list[Any]:
        self.calls.append(n)
        return []


def uplink_run(fwd: Confirmed, ack_timeout: float = 5.0) -> Any:
    """The bridge's run as an uplink sees it: base subject `edgert.gw`, msgpack,
    `fwd` told what NATS took, nothing fed back to the drivers."""
    return SimpleNamespace(
        cfg=SimpleNamespace(nats=SimpleNamespace(ack_timeout=ack_timeout)),
        base="edgert.gw",
        enc="msgpack",
        fwd=fwd,
        feed=lambda actions, **kw: None,
        wake_at=lambda when: None,
        clock_check=lambda a: (a.data, ""),
        poke=asyncio.Event(),
    )
