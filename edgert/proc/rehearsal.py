"""A driver's start and publish path, run once in the supervisor before it forks.

Python 3.11 writes into what it runs for the first times: a function's code is
specialized in place after a few calls (its bytecode and inline caches are in
the code object), and first calls fill caches (struct formats, the name cache
of `edgert.point`, methods looked up on types) with objects allocated into
the free slots of pages the processes share. Done in each actor after its
fork, every one of those writes copies a page. `rehearse()` runs, in this
process and before the fork that makes the zygote, what every driver runs as
it starts and publishes: its ZeroMQ context and two sockets connected to a
bus and an ack ROUTER in a scratch directory, its ring file, its Context,
points published one at a time and as a series, received, acknowledged as the
bridge acknowledges them (the bridge's frame decoding runs too), heartbeats
and a report over a link, and the tear-down. All of it is closed before it
returns (the context terminated: its I/O thread is gone before the fork); an
error only makes it return early (the actors then do that work themselves).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from typing import Any

__all__ = ["rehearse"]

ROUNDS = 9  # more than the calls after which 3.11 specializes a function (8)


def rehearse() -> bool:
    """Run a driver's start and publish path once on scratch resources; True if it ran."""
    d = tempfile.mkdtemp(prefix="edgert-rehearsal-")
    try:
        _rehearse(d)
        return True
    except Exception as e:  # noqa: BLE001 - a rehearsal that fails costs nothing but pages
        logging.getLogger("edgert.proc").debug("rehearsal: %s", e)
        return False
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _rehearse(d: str) -> None:
    import zmq

    from ..actor import Actor
    from ..bus import ack_endpoint, bus_endpoint, encode_frame, p_head
    from ..bus.frames import decode_points_after
    from ..point import Point
    from .child import serve
    from .link import Link
    from .spec import ActorSpec

    logging.getLogger("edgert.actor.rehearsal").disabled = True  # its lines are no actor's
    zctx = zmq.Context(1)
    bus = zctx.socket(zmq.ROUTER)
    acks = zctx.socket(zmq.ROUTER)
    ours, theirs = Link.pair()
    try:
        for s in (bus, acks):
            s.setsockopt(zmq.LINGER, 0)
        bus.bind(bus_endpoint(d))
        acks.bind(ack_endpoint(d))

        def bridge() -> None:
            """What the bridge does with the frames that came: decode, ack."""
            while True:
                try:
                    who, data = bus.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    return
                head = p_head(data)
                frame = decode_points_after(data, head)
                if frame[0] == "P":
                    acks.send_multipart([who, encode_frame("A", frame[1], frame[2])])

        class Rehearsal(Actor):
            def run(self, ctx: Any) -> None:
                t = time.time_ns()
                for i in range(ROUNDS):
                    ctx.publish(Point(ctx.name, "v", "0", float(i), t + i))
                    ctx.publish_series("s", [i, i + 1], [t + i, t + i + 1])
                    ctx.receive(timeout=0.006)  # past the linger: the batch goes
                    bridge()
                    ctx.report(now=str(i))
                    ctx.beat()
                    ours.recv_nowait()
                    ctx.receive(timeout=0)  # its ack
                while ours.recv_nowait() is not None:
                    pass

        spec = ActorSpec(
            name="rehearsal", cls=Rehearsal, config=None, runtime_dir=d, drain_timeout=0.0
        )
        actor = Rehearsal(None, name=spec.name)
        serve(actor, spec, None, theirs)
    finally:
        bus.close(0)
        acks.close(0)
        zctx.term()
        ours.close()
        theirs.close()
