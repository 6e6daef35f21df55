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


def test_a_heartbeat_sent_while_an_areceive_wait_is_ending_leaves_that_wait_alone() -> None:
    """The bridge's bus task sends the heartbeat due (`beat`) in the loop's turn in which
    the `areceive` waiting for that heartbeat timed out (its Timeout expiring, its task
    not yet resumed): asyncio refuses to move such a Timeout, so `beat` must not."""
    import asyncio

    here, there = Pipe()
    ctx = Context(Idle(), name="bridge", link=there, heartbeat_interval=0.05)

    async def main() -> tuple[bool, int]:
        waiter = asyncio.create_task(ctx.areceive())
        while not (ctx._atimeout is not None and ctx._atimeout.expired()):
            await asyncio.sleep(0)  # our turn comes before the waiter's resumption
        before = len(_heartbeats(here))
        ctx.beat()  # asyncio raised RuntimeError here: the bus task, and the bridge, died
        sent = len(_heartbeats(here))
        ctx._actor.stop()  # wakes the waiter: it returns Stop
        await asyncio.wait_for(waiter, 5)
        return before > 0, sent

    try:
        first, sent = asyncio.run(main())
        assert first and sent == 1  # the first heartbeat went, then the one beat sent
    finally:
        ctx._close()
        here.close()
        there.close()
