"""A change of an actor's state reaches the supervisor at once: `report(now=...)`
sends a heartbeat of its own, without waiting for the next one on the grid."""

from __future__ import annotations

from multiprocessing import Pipe

from edgert.actor import Actor
from edgert.context import Context
from edgert.proc.link import decode_link


class Idle(Actor):
    def run(self, ctx: Context) -> None:  # never run: the test drives the Context
        pass


def _heartbeats(conn) -> list[dict]:
    out = []
    while conn.poll(0):
        kind, data = decode_link(conn.recv_bytes())[:2]
        if kind == "hb":
            out.append(data)
    return out


def test_a_new_now_goes_at_once_and_an_unchanged_one_waits_for_the_grid() -> None:
    here, there = Pipe()
    # a heartbeat an hour apart: any heartbeat read below is one `report` sent
    ctx = Context(Idle(), name="drv", link=there, heartbeat_interval=3600.0)
    try:
        ctx.report(now="waiting for /dev/ttyUSB0")
        assert [hb.get("now") for hb in _heartbeats(here)] == ["waiting for /dev/ttyUSB0"]
        ctx.report(now="waiting for /dev/ttyUSB0", polls=3)  # same state: the grid's
        assert _heartbeats(here) == []
        ctx._last_hb -= 1.0  # as if the last heartbeat went a second ago
        ctx.report(now="polling 3 devices")
        assert [(hb.get("now"), hb.get("polls")) for hb in _heartbeats(here)] == [
            ("polling 3 devices", 3)
        ]
    finally:
        ctx._close()
        here.close()
        there.close()
