"""Core NATS confirmations: a marker behind the messages, one per `MARK_EVERY` at most
(but for a few spare ones, which let the rounds of a quiet bridge go with their own).

The uplink learns that the server took its messages from a marker it publishes
to its own inbox behind them. Rounds that come sooner than `MARK_EVERY` after a
marker go without one of their own; `mark_due` (`MARK_EVERY` after the oldest
of them) tells the bus task when its next turn must come, and that turn's `send` publishes the marker behind them, so
every message is confirmed, the last round's too, with no further round to
carry it. A real nats-server and the uplink's own session; the test plays the
bus task; `MARK_EVERY` is made long so that the rounds surely fall inside it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgpack
import nats
import pytest

from edgert.bridge import uplink as uplink_module
from edgert.bridge.forwarder import Publish
from edgert.bridge.uplink import Session, Uplink
from edgert.point import Point
from edgert.testing.nats import NatsProcess
from edgert.testing.uplink import Confirmed, uplink_run


def test_rounds_inside_mark_every_share_the_marker_of_the_next_turn(
    nats_server: NatsProcess, monkeypatch
) -> None:
    monkeypatch.setattr(uplink_module, "MARK_EVERY", 0.5)
    monkeypatch.setattr(uplink_module, "MARK_SPARE", 0)  # the pacing alone
    fwd = Confirmed()

    async def main() -> tuple[list[int], list[bytes], list[int]]:
        nc = await nats.connect(nats_server.url)
        seen = await nc.subscribe("edgert.gw.p.>")
        up = Uplink(uplink_run(fwd))
        sess = up.session = Session(nc, None, 1, nc.new_inbox())
        markers: list[bytes] = []

        async def marked(msg: Any) -> None:
            markers.append(msg.data)
            up._marked(sess, msg)

        await nc.subscribe(sess.inbox, cb=marked)
        acks = asyncio.create_task(up._core_acks(sess))
        try:
            assert up.mark_due() is None
            for seq in range(1, 4):  # three rounds, one message each, back to back
                data = msgpack.packb([Point("gen", "n", "0", seq).to_map()])
                up.publish(Publish(1, "gen", f"e:{seq}:gen", data, 1, 0))
                await up.send()
            due = up.mark_due()  # two messages without a marker: a turn is due then
            assert due == sess.unmarked_since + 0.5  # the oldest without a marker
            await up.send()  # a turn before it: no marker yet
            assert sess.unmarked == 2
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await up.send()  # the turn at `mark_due`
            assert up.mark_due() is None
            deadline = time.monotonic() + 10
            while sum(fwd.calls) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            got = []
            while len(got) < 3:
                msg = await seen.next_msg(timeout=5)
                got += [p["value"] for p in msgpack.unpackb(msg.data)]
            return fwd.calls, markers, got
        finally:
            acks.cancel()
            await nc.close()

    calls, markers, got = asyncio.run(main())
    assert got == [1, 2, 3]
    assert sum(calls) == 3  # every message confirmed, the last round's too
    assert markers == [b"1", b"2"]  # the first round's, then one behind the other two
    assert calls == [1, 2]


def test_a_quiet_bridge_spends_spare_markers_then_paces_them(
    nats_server: NatsProcess, monkeypatch
) -> None:
    """Rounds sooner than `MARK_EVERY` after a marker each get their own while the
    bucket of `MARK_SPARE` lasts (an idle bridge's few rounds a second wait for no
    timer); then they wait for `mark_due` again, and the bucket fills with time."""
    monkeypatch.setattr(uplink_module, "MARK_EVERY", 5.0)
    monkeypatch.setattr(uplink_module, "MARK_SPARE", 2)
    monkeypatch.setattr(uplink_module, "MARK_SPARE_EVERY", 0.2)
    fwd = Confirmed()

    async def main() -> tuple[list[int], list[int], int, int]:
        nc = await nats.connect(nats_server.url)
        up = Uplink(uplink_run(fwd))
        sess = up.session = Session(nc, None, 1, nc.new_inbox())

        async def marked(msg: Any) -> None:
            up._marked(sess, msg)

        await nc.subscribe(sess.inbox, cb=marked)
        unmarked = []
        try:
            for seq in range(1, 5):  # the first goes with a marker (none went for 5 s)
                data = msgpack.packb([Point("gen", "n", "0", seq).to_map()])
                up.publish(Publish(1, "gen", f"e:{seq}:gen", data, 1, 0))
                await up.send()
                unmarked.append(sess.unmarked)
            await asyncio.sleep(0.25)  # the bucket gets one back
            data = msgpack.packb([Point("gen", "n", "0", 5).to_map()])
            up.publish(Publish(1, "gen", "e:5:gen", data, 1, 0))
            await up.send()
            after = sess.unmarked
            deadline = time.monotonic() + 10
            while sum(fwd.calls) < 5 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return fwd.calls, unmarked, after, sess.mark
        finally:
            await nc.close()

    calls, unmarked, after, marks = asyncio.run(main())
    assert unmarked == [0, 0, 0, 1]  # the first by MARK_EVERY, two spare, then none left
    assert after == 0 and marks == 4  # the spare that came back covers the 4th and 5th
    assert calls == [1, 1, 1, 2]


def test_a_round_of_many_points_gets_its_marker_at_once(
    nats_server: NatsProcess, monkeypatch
) -> None:
    """A fast path's credit does not wait for `MARK_EVERY`: a round that brings
    `MARK_POINTS` points without a marker gets one in its own turn."""
    monkeypatch.setattr(uplink_module, "MARK_EVERY", 5.0)
    monkeypatch.setattr(uplink_module, "MARK_SPARE", 0)  # the pacing alone
    fwd = Confirmed()

    async def main() -> tuple[list[int], list[bytes], int]:
        nc = await nats.connect(nats_server.url)
        up = Uplink(uplink_run(fwd))
        sess = up.session = Session(nc, None, 1, nc.new_inbox())
        markers: list[bytes] = []

        async def marked(msg: Any) -> None:
            markers.append(msg.data)
            up._marked(sess, msg)

        await nc.subscribe(sess.inbox, cb=marked)
        try:
            small, big = 1, uplink_module.MARK_POINTS
            for seq, points in ((1, small), (2, small), (3, big)):
                data = msgpack.packb([Point("gen", "n", "0", seq).to_map()])
                up.publish(Publish(1, "gen", f"e:{seq}:gen", data, points, 0))
                await up.send()
            unmarked = sess.unmarked  # the big round's marker covered the small one too
            deadline = time.monotonic() + 10
            while sum(fwd.calls) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return fwd.calls, markers, unmarked
        finally:
            await nc.close()

    calls, markers, unmarked = asyncio.run(main())
    assert unmarked == 0
    assert markers == [b"1", b"2"]
    assert calls == [1, 2]


def test_a_wait_whose_end_came_is_not_moved() -> None:
    """Another task brings the bus task's wait forward in the loop's turn in which
    that wait's end came (asyncio's Timeout is expiring, its task not yet resumed):
    nothing is moved, nothing raises, and the wait ends as it would have."""
    from edgert.bridge.actor import bring_forward

    async def main() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        held: list[asyncio.Timeout] = []
        ended = asyncio.Event()

        async def waiter() -> None:
            try:
                async with asyncio.timeout_at(loop.time() + 0.01) as t:
                    held.append(t)
                    await asyncio.Event().wait()
            except TimeoutError:
                ended.set()

        task = asyncio.create_task(waiter())
        while not (held and held[0].expired()):
            await asyncio.sleep(0)  # our turn comes before the waiter's resumption
        expiring = not ended.is_set()
        bring_forward(held[0], loop.time() + 60)  # asyncio would raise RuntimeError
        bring_forward(held[0], loop.time() - 1)
        await asyncio.wait_for(task, 5)
        return expiring, ended.is_set()

    assert asyncio.run(main()) == (True, True)


def test_a_wait_is_brought_forward_never_put_off() -> None:
    from edgert.bridge.actor import bring_forward

    async def main() -> list[float | None]:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(loop.time() + 30) as t:
            now = loop.time()
            bring_forward(t, now + 60)  # later: kept
            a = t.when()
            bring_forward(t, now + 5)  # sooner: moved
            b = t.when()
            bring_forward(None, now)  # no wait: nothing
        return [a and a - now, b and b - now]

    a, b = asyncio.run(main())
    assert a is not None and 29 < a <= 30 and b == pytest.approx(5)
