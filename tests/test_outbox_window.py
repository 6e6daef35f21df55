"""The outbox's flow control: at most `window` points in flight to the bridge.

Without it a driver faster than the bridge fills the ZeroMQ pipes with batches
whose acks come later than `resend_after`, and the resends it then makes
multiply the load (measured: 355k points/s delivered with it, near 0 without).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from edgert.bus import Outbox, decode_frame, encode_frame
from edgert.point import Point


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[zmq.Socket, zmq.Socket]]:
    zctx = zmq.Context(1)
    router = zctx.socket(zmq.ROUTER)
    dealer = zctx.socket(zmq.DEALER)
    for s in (router, dealer):
        s.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.ROUTING_ID, b"drv")
    router.bind(f"ipc://{tmp_path}/b.sock")
    dealer.connect(f"ipc://{tmp_path}/b.sock")
    try:
        yield router, dealer
    finally:
        router.close(0)
        dealer.close(0)
        zctx.term()


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
