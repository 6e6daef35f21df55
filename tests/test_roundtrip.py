"""A NATS round trip given up on does not leave the connection deaf.

With nats-py's `flush(timeout)`, a PONG that comes after the timeout ends the
client's reader (it completes a cancelled future): the connection stays open
and delivers nothing more. `edgert.roundtrip.round_trip` is what the bridge
and the fleet service use instead. The server is frozen (SIGSTOP) so that the
PONG comes late for certain.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import nats

from edgert.roundtrip import round_trip
from edgert.testing import wait_for


def stopped(pid: int) -> bool:
    """Every thread of `pid` stopped (SIGSTOP takes effect per thread, not at once)."""
    states = []
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            states.append((t / "stat").read_text().rsplit(")", 1)[1].split()[0])
        except OSError:  # a thread that ended since the listing is not running either
            continue
    return bool(states) and all(st in ("T", "t") for st in states)


def test_a_round_trip_given_up_on_leaves_the_connection_reading(nats_server) -> None:
    async def main() -> tuple[bool, bool, list[bytes]]:
        nc = await nats.connect(nats_server.url, allow_reconnect=False)
        other = await nats.connect(nats_server.url, allow_reconnect=False)
        got: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_msg(msg) -> None:
            await got.put(msg.data)

        try:
            await nc.subscribe("rt", cb=on_msg)
            assert await round_trip(nc, 10.0)  # the server has the subscription
            os.kill(nats_server.proc.pid, signal.SIGSTOP)
            try:
                wait_for(lambda: stopped(nats_server.proc.pid), 10, "nats-server stopped")
                late = await round_trip(nc, 0.2)  # no PONG while it is frozen
            finally:
                os.kill(nats_server.proc.pid, signal.SIGCONT)
            again = await round_trip(nc, 10.0)  # the late PONG, then this one
            await other.publish("rt", b"after")
            await other.flush(timeout=10)
            data = [await asyncio.wait_for(got.get(), 10)]
            return late, again, data
        finally:
            await other.close()
            await nc.close()

    late, again, data = asyncio.run(main())
    assert late is False
    assert again is True
    assert data == [b"after"]


def test_a_round_trip_on_a_closed_connection_says_so(nats_server) -> None:
    async def main() -> None:
        nc = await nats.connect(nats_server.url, allow_reconnect=False)
        await nc.close()
        try:
            await round_trip(nc, 1.0)
        except nats.errors.ConnectionClosedError:
            return
        raise AssertionError("a closed connection answered")

    asyncio.run(main())


def test_a_round_trip_comes_back_after_the_server_has_the_subscription(nats_server) -> None:
    """Subscribe, round trip, and another connection's message right after is received:
    every time (nats-py's bare `flush` lost it a few times in a hundred)."""

    async def trial(i: int) -> bool:
        a = await nats.connect(nats_server.url, allow_reconnect=False)
        b = await nats.connect(nats_server.url, allow_reconnect=False)
        try:
            sub = await a.subscribe(f"order.{i}")
            assert await round_trip(a, 10.0)
            await b.publish(f"order.{i}", b"x")
            assert await round_trip(b, 10.0)
            try:
                await sub.next_msg(timeout=2.0)
            except nats.errors.TimeoutError:
                return False
            return True
        finally:
            await a.close()
            await b.close()

    async def main() -> list[int]:
        return [i for i in range(60) if not await trial(i)]

    assert asyncio.run(main()) == []
