"""The outbox's flow control: at most `window` points in flight to the bridge,
and the linger that coalesces points published one at a time.

Without the window a driver faster than the bridge fills the ZeroMQ pipes with
batches whose acks come later than `resend_after`, and the resends it then makes
multiply the load (measured: 355k points/s delivered with it, near 0 without).

The linger (README, "The point path"): a point published while nothing is in
flight leaves at the end of the turn; while a batch is in flight, new points wait
for its ack until `linger` (5 ms) after the last batch was sent while acks are
quick, `max_linger` (0.25 s) at most while they are slow, and go as one batch; a
driver that polls less often than the linger never waits for an ack. The outbox's clock is set by
the test, so each bound is checked as which batches a socket received by when,
never by timing a run.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import zmq

from edgert.bus import Outbox, decode_frame, encode_frame
from edgert.bus import outbox as outbox_module
from edgert.point import Point


def received(router: zmq.Socket) -> list[int]:
    seqs = []
    while router.poll(200):
        _, data = router.recv_multipart()
        seqs.append(decode_frame(data)[2])
    return seqs


def batch(n: int) -> list[Point]:
    return [Point("drv", "n", "0", i) for i in range(n)]


def test_no_more_than_the_window_is_in_flight(pair) -> None:
    router, dealer = pair
    box = Outbox(dealer, "drv.1.a", window=3000, max_batch=1000)
    for _ in range(10):
        box.publish(batch(1000))
    assert received(router) == [1, 2, 3]
    router.send_multipart([b"drv", encode_frame("A", "drv.1.a", 2)])
    assert dealer.poll(1000)
    box.on_readable()
    assert received(router) == [4, 5]


def test_points_dropped_by_a_full_outbox_do_not_open_the_window(pair) -> None:
    router, dealer = pair
    box = Outbox(dealer, "drv.1.a", window=2000, max_batch=1000, max_points=4000)
    for _ in range(10):
        box.publish(batch(1000))
    assert box.dropped == 6000
    assert received(router) == [1, 2]  # batches 1 and 2 are still in the pipe


class Clock:
    """The outbox's monotonic clock, moved by the test."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(outbox_module, "time", SimpleNamespace(monotonic=c.monotonic))
    return c


def sizes(router: zmq.Socket) -> list[int]:
    """The number of points in each batch the bridge's socket has received."""
    out = []
    while router.poll(200):
        _, data = router.recv_multipart()
        out.append(len(decode_frame(data)[4]))
    return out


def test_a_lone_point_leaves_within_the_linger_while_acks_are_quick(pair, clock) -> None:
    router, dealer = pair
    box = Outbox(dealer, "drv.1.a")
    assert (box.linger, box.max_linger) == (0.005, 0.25)  # the defaults README states
    box.publish(batch(1))  # nothing in flight: goes at the end of the turn
    box.tick(clock.now)
    assert sizes(router) == [1]

    clock.now += 0.001  # batch 1 is in flight (1 ms old): the next point waits
    box.publish(batch(1))
    deadline = box.next_deadline()  # until the linger after batch 1 was sent
    assert deadline is not None and deadline - clock.now == pytest.approx(0.004)
    clock.now += 0.003
    box.publish(batch(3))  # more points in the same wait join it
    box.tick(deadline - 0.0001)
    assert sizes(router) == []  # still lingering
    box.tick(deadline)
    assert sizes(router) == [4]  # at the bound: one batch, every waiting point

    clock.now = deadline + 0.001
    box.publish(batch(2))
    router.send_multipart([b"drv", encode_frame("A", "drv.1.a", 2)])
    assert dealer.poll(1000)
    box.on_readable()  # the ack came before the linger ended: they go at once
    assert sizes(router) == [2]


def test_a_driver_polling_slower_than_the_linger_never_waits_for_an_ack(pair, clock) -> None:
    router, dealer = pair
    box = Outbox(dealer, "drv.1.a")
    for _ in range(5):  # a poll every 10 ms; no ack comes back at all
        box.publish(batch(10))
        assert box.next_deadline() == 0.0  # at the end of this turn
        box.tick(clock.now)
        assert sizes(router) == [10]
        clock.now += 0.01


def test_an_ack_some_tens_of_ms_late_keeps_the_linger(pair, clock) -> None:
    router, dealer = pair
    box = Outbox(dealer, "drv.1.a", window=100)
    box.publish(batch(1))
    box.tick(clock.now)
    assert sizes(router) == [1]

    clock.now += 0.05  # a busy machine: this ack is 50 ms late, the path is not slow
    box.publish(batch(1))
    assert box.next_deadline() == 0.0  # the linger since batch 1 is over: this turn
    box.tick(clock.now)
    assert sizes(router) == [1]
    clock.now += 0.001
    box.publish(batch(1))  # but the next one waits the linger after that batch
    assert box.next_deadline() == pytest.approx(clock.now + 0.004)
    clock.now = box.next_deadline()
    box.tick(clock.now)
    assert sizes(router) == [1]

    clock.now += 0.001  # but a half-full window is slow: wait for company
    box.publish(batch(60))
    box.flush()
    assert sizes(router) == [60]
    box.publish(batch(1))  # the oldest in flight is 56 ms old: as long
    assert box.next_deadline() == pytest.approx(clock.now + 0.056)


def test_while_acks_are_slow_the_linger_grows_to_at_most_max_linger(pair, clock) -> None:
    router, dealer = pair
    box = Outbox(dealer, "drv.1.a")
    box.publish(batch(1))
    box.tick(clock.now)
    assert sizes(router) == [1]
    sent = clock.now

    clock.now = sent + 0.05
    box.publish(batch(1))
    box.tick(clock.now)
    assert sizes(router) == [1]
    clock.now = sent + 0.1  # no ack for 100 ms: wait as long for company
    box.publish(batch(1))
    assert box.next_deadline() == pytest.approx(sent + 0.15)
    box.tick(box.next_deadline())
    assert sizes(router) == [1]

    clock.now = sent + 1.0  # an outage: acks a second apart
    box.publish(batch(1))  # the last batch left long ago: this one goes now...
    box.tick(clock.now)
    assert sizes(router) == [1]
    box.publish(batch(1))  # ...and the next waits, capped at max_linger
    deadline = box.next_deadline()
    assert deadline == pytest.approx(clock.now + 0.25)
    for _ in range(99):  # what a 400 points/s driver publishes meanwhile
        clock.now += 0.0025
        box.publish(batch(1))
    box.tick(deadline - 0.0001)
    assert sizes(router) == []
    box.tick(deadline)
    assert sizes(router) == [100]  # one batch for the 0.25 s, not a hundred


def test_a_linger_grown_on_a_stall_shrinks_once_acks_come_again(pair, clock) -> None:
    router, dealer = pair
    box = Outbox(dealer, "drv.1.a")
    for _ in range(3):  # a batch every 50 ms, none acked: a stall of the bridge
        box.publish(batch(10))
        box.tick(clock.now)
        clock.now += 0.05
    assert sizes(router) == [10, 10, 10]
    box.publish(batch(10))  # the oldest in flight is 150 ms old: wait as long
    assert box.next_deadline() == pytest.approx(clock.now - 0.05 + 0.15)

    clock.now += 0.001  # the bridge is back: it acks the first two batches
    router.send_multipart([b"drv", encode_frame("A", "drv.1.a", 2)])
    assert dealer.poll(1000)
    box.on_readable()  # the oldest left 50 ms ago: the linger is over, they go now
    assert sizes(router) == [10]


def test_a_drain_sends_what_the_bridge_was_not_there_to_take(tmp_path: Path) -> None:
    """A driver stopped while the bridge starts: its batch could not be sent (no bridge
    yet); the drain sends it once the bridge binds, not `resend_after` later."""
    import threading

    zctx = zmq.Context(1)
    dealer = zctx.socket(zmq.DEALER)
    router = zctx.socket(zmq.ROUTER)
    for s in (router, dealer):
        s.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.ROUTING_ID, b"drv")
    dealer.setsockopt(zmq.IMMEDIATE, 1)  # as the actors' sockets: no queue without a bridge
    dealer.connect(f"ipc://{tmp_path}/b.sock")
    box = Outbox(dealer, "e1", resend_after=600.0)  # no resend within the test
    box.publish(batch(3))
    box.flush()
    assert box.stats()["buffered"] == 3
    drained: list[bool] = []
    t = threading.Thread(target=lambda: drained.append(box.drain(30.0)))
    t.start()
    try:
        router.bind(f"ipc://{tmp_path}/b.sock")  # the bridge comes up
        assert router.poll(30_000), "the batch never reached the bridge"
        ident, data = router.recv_multipart()
        frame = decode_frame(data)
        router.send_multipart([ident, encode_frame("A", frame[1], frame[2])])
        t.join(30)
        assert drained == [True]
    finally:
        t.join(30)
        router.close(0)
        dealer.close(0)
        zctx.term()


def test_one_read_takes_every_frame_waiting_and_says_when_none_is_left(pair) -> None:
    """A wake-up reads the acks and commands that came together in one go, and the
    outbox then says the socket is empty (it is asked, not emptied by an error)."""
    router, dealer = pair
    out = Outbox(dealer, "e1", window=100, max_batch=10)
    assert not out.readable()
    for _ in range(3):
        out.publish(batch(2))
        out.flush()
    assert received(router) == [1, 2, 3]
    router.send_multipart([b"drv", encode_frame("A", "e1", 2)])
    router.send_multipart([b"drv", encode_frame("C", 7, [Point("drv", "n", "0", 1).to_map()])])
    router.send_multipart([b"drv", encode_frame("A", "e1", 3)])
    cmds: list = []
    for _ in range(50):  # the three frames may reach the socket a few microseconds apart
        dealer.poll(100)
        cmds += out.on_readable()
        if out.points_acked == 6:
            break
    assert [c.id for c in cmds] == [7] and out.points_acked == 6 and out.buffered == 0
    assert not out.readable() and out.on_readable() == []


def test_a_batch_after_a_quiet_spell_is_sent_once(pair, clock) -> None:
    """A driver polling less often than `resend_after` (a meter read every 5 s): each
    batch leaves once, and is resent only when its own ack is `resend_after` late."""
    router, dealer = pair
    box = Outbox(dealer, "drv.1.a", resend_after=2.0)
    for seq in (1, 2, 3):
        box.publish(batch(1))
        box.tick(clock.now)
        assert received(router) == [seq]  # not also a resend of it
        router.send_multipart([b"drv", encode_frame("A", "drv.1.a", seq)])
        assert dealer.poll(1000)
        box.on_readable()
        clock.now += 5.0
    box.publish(batch(1))
    box.tick(clock.now)
    assert received(router) == [4]
    clock.now += 1.9
    box.tick(clock.now)
    assert received(router) == []  # its ack is not late yet
    clock.now += 0.2
    box.tick(clock.now)
    assert received(router) == [4]  # now it is: sent again


def test_acks_on_their_own_socket_are_wanted_only_when_they_change_something(
    tmp_path: Path, clock
) -> None:
    """The owner waits on the ack socket only while an ack would change what the
    outbox does before its next wake-up; otherwise it reads them when it wakes."""
    zctx = zmq.Context(1)
    bus, acks = zctx.socket(zmq.ROUTER), zctx.socket(zmq.ROUTER)
    dealer, ack_dealer = zctx.socket(zmq.DEALER), zctx.socket(zmq.DEALER)
    for i, (r, d) in enumerate(((bus, dealer), (acks, ack_dealer))):
        for s in (r, d):
            s.setsockopt(zmq.LINGER, 0)
        d.setsockopt(zmq.ROUTING_ID, b"drv")
        r.bind(f"ipc://{tmp_path}/{i}.sock")
        d.connect(f"ipc://{tmp_path}/{i}.sock")
    try:
        box = Outbox(dealer, "e1", window=100, resend_after=2.0, acks=ack_dealer)
        assert not box.wants_acks(None)  # nothing in flight
        box.publish(batch(1))
        assert box.wants_acks(clock.now + 1.0)  # the point waits for the end of the turn
        box.tick(clock.now)
        assert received(bus) == [1]
        assert not box.wants_acks(clock.now + 1.0)  # back before the resend is due
        assert box.wants_acks(clock.now + 2.0) and box.wants_acks(None)  # or not
        acks.send_multipart([b"drv", encode_frame("A", "e1", 1)])
        acks.send_multipart([b"drv", encode_frame("C", 7, [])])  # commands come on the bus
        assert ack_dealer.poll(1000)
        for _ in range(50):  # the two frames may reach the socket a few microseconds apart
            box.read_acks()
            if box.bad_frames:
                break
            ack_dealer.poll(100)
        assert box.points_acked == 1 and box.buffered == 0 and box.bad_frames == 1
        assert not box.acks_waiting() and not box.wants_acks(None)
        box.publish(batch(60))
        box.flush()
        assert box.wants_acks(clock.now + 0.1)  # more than half the window in flight
    finally:
        for s in (bus, acks, dealer, ack_dealer):
            s.close(0)
        zctx.term()
