"""JetStream acks: matched by a counter on one inbox subscription, released in order.

`PubAcks` alone (acks out of order, split batches, repeats, a refusal), `ack_error`
on the replies a server sends, then the uplink's own JetStream session against a
real nats-server: every batch confirmed once and stored once (a resend under the
same id too), a stream that answers out of order releases nothing early, a
refusal releases what came before it and then ends the session, and a message
nobody acks ends it after `ack_timeout`. The tests play the bus task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import nats
import pytest
from nats.js.errors import APIError, BadRequestError, NoStreamResponseError

from edgert.bridge.forwarder import Publish
from edgert.bridge.pubacks import PubAcks, ack_error
from edgert.bridge.uplink import AckTimeout, Session, Uplink
from edgert.point import Point
from edgert.testing.nats import NatsProcess
from edgert.testing.uplink import Confirmed, uplink_run

# -- PubAcks alone ---------------------------------------------------------------------


def test_acks_out_of_order_release_batches_oldest_first() -> None:
    acks = PubAcks("_INBOX.x")
    a = acks.publish(1, 10, 1.0)
    b = acks.publish(2, 20, 2.0)  # a batch split in two messages
    c = acks.publish(1, 30, 3.0)
    assert a == ["_INBOX.x.1"] and b == ["_INBOX.x.2", "_INBOX.x.3"] and c == ["_INBOX.x.4"]
    assert [acks.number(s) for s in a + b + c] == [1, 2, 3, 4]
    assert acks.number("_INBOX.y.1") == 0 and acks.number("_INBOX.x.1a") == 0
    assert acks.acked(4, 5.0) == (0, 0)  # the newest first: waits for the older ones
    assert acks.acked(3, 5.0) == (0, 0)
    assert acks.progress == 1.0  # the oldest has waited since it went
    assert acks.acked(1, 6.0) == (1, 10)
    assert acks.oldest_sent() == 2.0
    assert acks.acked(2, 7.0) == (2, 50)  # b's two messages, and c behind them
    assert not acks.waiting and acks.progress == 7.0
    assert acks.acked(2, 8.0) == (0, 0)  # a repeat
    assert acks.acked(9, 8.0) == (0, 0)  # never published
    acks.publish(1, 1, 9.0)
    assert acks.progress == 9.0  # an empty pipeline's first message starts the wait


def test_a_refused_message_releases_those_before_it_then_fails() -> None:
    acks = PubAcks("_INBOX.x")
    for _ in range(3):
        acks.publish(1, 1, 0.0)
    no = BadRequestError(code=400, description="no")
    acks.refuse(2, no)
    assert acks.refused == 2 and acks.failure is None  # message 1 may still be stored
    assert acks.acked(3, 1.0) == (0, 0)
    assert acks.acked(1, 1.0) == (1, 1)
    assert acks.failure is no  # now the oldest without an ack: the session ends
    acks.refuse(3, BadRequestError(code=400, description="later"))
    assert acks.failure is no


def test_replies_read_without_parsing_an_ack() -> None:
    assert ack_error(b'{"stream":"EDGERT_gw","seq":7}', None) is None
    assert ack_error(b'{"stream":"EDGERT_gw","seq":7,"duplicate":true}', None) is None
    assert ack_error(b'{"stream":"error","seq":1}', None) is None
    assert ack_error(b'{"seq":1,"stream":"error"}', None) is None  # laid out otherwise
    e = ack_error(b'{"error":{"code":400,"err_code":10060,"description":"bad"},"stream":""}', None)
    assert isinstance(e, BadRequestError) and e.err_code == 10060 and e.description == "bad"
    assert isinstance(ack_error(b"", {"Status": "503"}), NoStreamResponseError)
    e = ack_error(b"", {"Status": "408", "Description": "Request Timeout"})
    assert isinstance(e, APIError) and e.code == 408
    for junk in (b"ok", b"", b"[]", b'{"seq":1}', b'{"error":"x"}'):
        assert isinstance(ack_error(junk, None), APIError), junk


# -- the uplink's JetStream session ----------------------------------------------------


def _batch(seq: int, msg_id: str | None = None) -> Publish:
    data = msgpack.packb([Point("gen", "n", "0", seq).to_map()])
    return Publish(1, "gen", msg_id or f"e:{seq}:gen", data, 1, 0)


async def _session(nc: Any, up: Uplink, js: Any) -> tuple[Session, asyncio.Task]:
    """The session, as `Uplink._session` makes it, and its sender (what the bus task
    does not publish: what waited behind an ack)."""
    sess = up.session = Session(nc, js, 1, nc.new_inbox())
    acks = sess.pubacks
    assert acks is not None

    async def stored(msg: Any) -> None:
        up._js_acked(sess, acks, msg)

    await nc.subscribe(acks.subject, cb=stored)
    return sess, asyncio.create_task(up._sender(sess))


async def _until(cond: Any, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def test_every_batch_is_confirmed_once_and_stored_once(nats_server: NatsProcess) -> None:
    fwd = Confirmed()

    async def main() -> tuple[list[int], int, bool]:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await js.add_stream(name="S", subjects=["edgert.gw.p.>"])
        up = Uplink(uplink_run(fwd))
        sess, sender = await _session(nc, up, js)
        try:
            for seq in range(1, 6):
                up.publish(_batch(seq))
                await up.send()
            up.publish(_batch(99, "e:3:gen"))  # a resend: JetStream drops it, and acks it
            await up.send()
            await _until(lambda: sum(fwd.calls) == 6, "six confirmations")
            info = await js.stream_info("S")
            return fwd.calls, info.state.messages, sess.failed is None
        finally:
            sender.cancel()
            await nc.close()

    calls, stored, ok = asyncio.run(main())
    assert sum(calls) == 6 and ok
    assert stored == 5  # the resend was not stored twice


class Responder:
    """A stand-in for a stream on `edgert.gw.p.>`: collects messages, replies as told."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.msgs: list[Any] = []

    async def start(self) -> None:
        async def took(msg: Any) -> None:
            self.msgs.append(msg)

        await self.nc.subscribe("edgert.gw.p.>", cb=took)
        # the server has the subscription once it delivers a message of ours behind it
        # (nats-py's flush may send its PING ahead of the SUB, so a PONG proves nothing)
        await self.nc.publish("edgert.gw.p.probe", b"")
        await _until(lambda: bool(self.msgs), "the responder's subscription")
        self.msgs.clear()

    async def reply(self, i: int, data: bytes | None = None) -> None:
        ack = json.dumps({"stream": "S", "seq": i + 1}).encode()
        await self.nc.publish(self.msgs[i].reply, ack if data is None else data)
        await self.nc.flush()


@contextlib.asynccontextmanager
async def _answered(
    url: str, fwd: Confirmed, ack_timeout: float = 5.0
) -> AsyncIterator[tuple[Uplink, Session, asyncio.Task, Responder]]:
    """An uplink's JetStream session whose messages a `Responder` takes (and acks as
    the test tells it), with the session's sender running."""
    nc = await nats.connect(url)
    other = await nats.connect(url)
    try:
        stream = Responder(other)
        await stream.start()
        up = Uplink(uplink_run(fwd, ack_timeout))
        sess, sender = await _session(nc, up, nc.jetstream())
        try:
            yield up, sess, sender, stream
        finally:
            sender.cancel()
    finally:
        await nc.close()
        await other.close()


def test_acks_out_of_order_are_released_oldest_first(nats_server: NatsProcess) -> None:
    fwd = Confirmed()

    async def main() -> tuple[list[int], list[int]]:
        async with _answered(nats_server.url, fwd) as (up, sess, sender, stream):
            up.publish(_batch(1))
            await up.send()
            await _until(lambda: len(stream.msgs) == 1, "the first message")
            for seq in (2, 3, 4):  # held: a session's first message goes alone
                up.publish(_batch(seq))
                await up.send()
            await stream.reply(0)
            await _until(lambda: fwd.calls == [1], "the first confirmation")
            await _until(lambda: len(stream.msgs) == 4, "the held messages, once it came")
            await stream.reply(3)
            await stream.reply(2)
            acks = sess.pubacks
            assert acks is not None
            await _until(lambda: acks.early == {3, 4}, "the two newest acks read")
            early = list(fwd.calls)
            await stream.reply(1)
            await _until(lambda: sum(fwd.calls) == 4, "every confirmation")
            assert sess.failed is None
            return early, fwd.calls

    early, calls = asyncio.run(main())
    assert early == [1]
    assert calls == [1, 3]  # the three at once, when the oldest of them was acked


def test_a_refusal_ends_the_session_after_the_acks_before_it(nats_server: NatsProcess) -> None:
    fwd = Confirmed()

    async def main() -> tuple[list[int], Exception | None, tuple[int, int]]:
        async with _answered(nats_server.url, fwd) as (up, sess, sender, stream):
            up.publish(_batch(1))
            await up.send()
            await _until(lambda: len(stream.msgs) == 1, "the first message")
            await stream.reply(0)
            for seq in (2, 3):
                up.publish(_batch(seq))
                await up.send()
            await _until(lambda: len(stream.msgs) == 3, "two more")
            refusal = b'{"error":{"code":503,"err_code":10008,"description":"no leader"}}'
            await stream.reply(2, refusal)  # the newest refused: held, not ended yet
            await _until(lambda: sess.pubacks is not None and sess.pubacks.refused, "refusal")
            up.publish(_batch(4))
            await up.send()  # held behind the refusal
            held = sess.pubacks.last, len(sess.outgoing)  # messages published; waiting
            assert sess.failed is None and not sender.done()
            await stream.reply(1)
            with pytest.raises(APIError):
                await asyncio.wait_for(sender, 10)
            return fwd.calls, sess.failed, held

    calls, failed, held = asyncio.run(main())
    assert calls == [1, 1]  # batch 2 is stored; 3 (refused) and 4 are not confirmed
    assert held == (3, 1)  # nothing went behind the refusal
    assert isinstance(failed, APIError) and failed.code == 503


def test_a_message_nobody_acks_ends_the_session_at_ack_timeout(
    nats_server: NatsProcess,
) -> None:
    fwd = Confirmed()

    async def main() -> tuple[float, list[int]]:
        async with _answered(nats_server.url, fwd, 0.3) as (up, sess, _, stream):
            # the stream takes the messages and never answers
            watch = asyncio.create_task(up._js_acks(sess))
            try:
                await asyncio.sleep(0.4)  # longer than ack_timeout: nothing waits, nothing ends
                assert not watch.done()
                t0 = time.monotonic()
                up.publish(_batch(1))
                await up.send()
                with pytest.raises(AckTimeout):
                    await asyncio.wait_for(watch, 10)
                return time.monotonic() - t0, fwd.calls
            finally:
                watch.cancel()

    took, calls = asyncio.run(main())
    assert calls == []
    assert took >= 0.3
