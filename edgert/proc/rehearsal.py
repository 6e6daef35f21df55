"""A driver's publish path, run once before the fork that makes the zygote.

Python 3.11 writes into what it runs for the first times: a function's code is
specialized in place after a few calls (its bytecode and inline caches are in
the code object), and first calls fill caches (struct formats, the name cache
of `edgert.point`, methods looked up on types) with objects allocated into
the free slots of pages the processes share. Done in each actor after its
fork, every one of those writes copies a page. `rehearse()` runs, in this
process and before the fork, what every driver runs as it publishes: its
ring file (in a scratch directory), its outbox and Context, points published
one at a time and as a series on an `every()` timer, sent, decoded as the
bridge decodes them, acknowledged, heartbeats and a report over a link, and
the tear-down. The ring file leaves the disk as soon as it is mapped, so a
process killed during the rehearsal leaves no scratch file behind.

Its two sockets are stand-ins that hand frames over in memory: ZeroMQ itself
is left alone. A context made here (even one terminated at once) leaves
libzmq's and the C heap's pages written in this process, which then cost
more than the rehearsal saves (0.5-0.9 MB of the demo's PSS, measured). All
it opens is closed before it returns; an error only ends it early (the actors
then do that work themselves).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections import deque
from typing import Any

__all__ = ["rehearse"]

ROUNDS = 9  # more than the calls after which 3.11 specializes a function (8)
NAME = "rehearsal"
LINGER = 0.001  # seconds each round waits: past its outbox's linger, so its batch goes


def rehearse() -> bool:
    """Run a driver's publish path once on scratch resources; True if it ran."""
    d = tempfile.mkdtemp(prefix="edgert-rehearsal-")
    try:
        _rehearse(d)
        return True
    except Exception as e:  # noqa: BLE001 - a rehearsal that fails costs nothing but pages
        logging.getLogger("edgert.proc").debug("rehearsal: %s", e)
        return False
    finally:
        shutil.rmtree(d, ignore_errors=True)


class _Socket:
    """What the outbox and the Context use of a ZeroMQ DEALER, in memory: its FD is a
    pipe's end, readable while frames wait (as ZeroMQ's signals them)."""

    def __init__(self) -> None:
        self.fd, self._w = os.pipe()
        os.set_blocking(self.fd, False)
        self.frames: deque[bytes] = deque()  # to read
        self.sent: deque[bytes] = deque()

    def put(self, data: bytes) -> None:
        self.frames.append(data)
        os.write(self._w, b"\0")

    def send(self, data: bytes, flags: int = 0) -> None:
        self.sent.append(data)

    def recv(self, flags: int = 0) -> bytes:
        import zmq

        if not self.frames:
            try:
                os.read(self.fd, 4096)
            except BlockingIOError:
                pass
            raise zmq.Again()
        return self.frames.popleft()

    def get(self, option: int) -> int:
        import zmq

        if option == zmq.EVENTS:
            return int(zmq.POLLIN) if self.frames else 0
        return self.fd

    getsockopt = get

    def close(self) -> None:
        os.close(self.fd)
        os.close(self._w)


def _rehearse(d: str) -> None:
    from ..actor import Actor
    from ..bus import encode_frame, new_epoch, outbox, p_head
    from ..bus.frames import decode_points_after
    from ..bus.ring import Ring, ring_capacity, ring_path
    from ..context import Context
    from ..point import Point
    from ..timers import every
    from .link import Link

    # its lines are no actor's; a driver of that name, forked later, logs as usual
    logger = logging.getLogger(f"edgert.actor.{NAME}")
    was_disabled, logger.disabled = logger.disabled, True
    ours, theirs = Link.pair()
    bus: Any = _Socket()  # for the outbox, a DEALER
    acks: Any = _Socket()
    ring = ctx = None
    get = outbox._sock_get
    outbox._sock_get = _Socket.get  # type: ignore[assignment] - a stand-in's EVENTS
    try:

        def bridge() -> None:
            """What the bridge does with the frames sent: decode them, ack them."""
            while bus.sent:
                data = bus.sent.popleft()
                frame = decode_points_after(data, p_head(data))
                acks.put(encode_frame("A", frame[1], frame[2]))

        class Rehearsal(Actor):
            def run(self, ctx: Any) -> None:
                t = time.time_ns()
                slots = every(LINGER)  # a polling driver's timer
                for i in range(ROUNDS):
                    ctx.publish(Point(ctx.name, "v", "0", float(i), t + i))
                    ctx.publish_series("s", [i, i + 1], [t + i, t + i + 1])
                    slots.take(now=ctx.now())
                    # past the outbox's linger: the batch goes
                    ctx.receive(timeout=ctx.until(max(slots.next, ctx.now() + LINGER)))
                    bridge()
                    ctx.receive(timeout=0)  # its ack
                    ctx.report(now=str(i))
                    ctx.beat()
                    while ours.recv_nowait() is not None:
                        pass

        ring = Ring.open(ring_path(d, NAME), new_epoch(NAME), ring_capacity(1000))
        # mapped: off the disk at once, so a process killed from here leaves nothing
        shutil.rmtree(d, ignore_errors=True)
        box = outbox.Outbox(
            bus, ring.epoch, max_points=1000, linger=LINGER / 2, ring=ring, acks=acks
        )
        actor = Rehearsal(None, name=NAME)
        ctx = Context(actor, name=NAME, outbox=box, link=theirs)
        actor.run(ctx)
    finally:
        outbox._sock_get = get
        logger.disabled = was_disabled
        if ring is not None:
            ring.close()
        if ctx is not None:
            ctx._close()
        bus.close()
        acks.close()
        ours.close()
        theirs.close()
