"""Malformed frames on the bus: counted and skipped, never an exception out of the loop."""

from __future__ import annotations

from pathlib import Path

import msgpack
import zmq
from hypothesis import given
from hypothesis import strategies as st

from edgert.bridge.actor import Bridge, BridgeConfig, _Run
from edgert.bridge.forwarder import Forwarder
from edgert.bus import BadFrame, Outbox, bus_endpoint, decode_frame, p_header
from edgert.config import NatsSection
from edgert.context import Context
from edgert.point import Point
from edgert.testing import running_gateway, status, wait_for

ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what msgpack can carry
scalars = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=7)
    ),
    max_leaves=30,
)
point_maps = st.fixed_dictionaries(
    {
        "node": st.sampled_from(["gen", "a b", "", "x"]),
        "type": st.sampled_from(["n", "t", "."]),
        "key": st.sampled_from(["0", "1"]),
        "value": scalars,
        "time": st.integers(min_value=-5, max_value=2**64 - 1),
        "origin": st.sampled_from(["", "cmd"]) | ints,
    }
)
structured = st.one_of(
    st.tuples(
        st.sampled_from(["P", "A", "C", "R", "X"]),
        st.text(max_size=10) | ints,
        st.integers(min_value=-2, max_value=5),
        st.integers(min_value=-2, max_value=5),
        st.lists(point_maps, max_size=4) | values,
        st.integers(min_value=1, max_value=5),  # how many of the parts to keep
    ).map(lambda t: list(t[: t[-1]])),
    st.lists(values, max_size=6),
    values,
).map(lambda v: msgpack.packb(v, use_bin_type=True))
frames = st.binary(max_size=200) | structured


@given(frames)
def test_decode_frame_raises_only_bad_frame(data: bytes) -> None:
    head = p_header(data)  # never raises either
    try:
        frame = decode_frame(data)
    except BadFrame:
        return
    if head is not None and frame[0] == "P":
        assert head[:3] == frame[1:4]


def test_the_bridge_loop_survives_any_frames(tmp_path: Path) -> None:
    cfg = BridgeConfig("gw", str(tmp_path), str(tmp_path), NatsSection())
    actor = Bridge(cfg, name="bridge")
    ctx = Context(actor, name="bridge", config=cfg)
    run = _Run(ctx)
    zctx = zmq.Context(1)
    try:
        run.router = zctx.socket(zmq.ROUTER)
        run.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        run.tail = zctx.socket(zmq.PUB)
        run.fwd = Forwarder(spooling=True)  # its spool jobs queue up, unrun

        @given(
            st.lists(st.lists(frames | st.binary(max_size=8), min_size=1, max_size=3), max_size=8)
        )
        def burst(parts: list[list[bytes]]) -> None:
            run.receive(parts)
            run.feed(run.fwd.tick(0.0))

        burst()
        assert run.bad_frames > 0
    finally:
        for s in (run.router, run.tail):
            if s is not None:
                s.close(0)
        zctx.term()
        ctx._close()


def test_garbage_on_the_bus_is_counted_and_points_still_flow(make_config) -> None:
    cfg = make_config(
        '[nats]\nurl = "nats://127.0.0.1:1"\n'  # nobody there: points stay spooled
        '[[driver]]\nname = "gen"\ntype = "sim"\n'
        '[[driver.signal]]\nname = "n"\nshape = "counter"\nrate = 50.0\n'
    )
    with running_gateway(cfg):
        wait_for(lambda: status(cfg)["by_name"]["bridge"]["buffered"] > 0, 15, "points spooled")
        zctx = zmq.Context(1)
        try:
            sock = zctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.ROUTING_ID, b"intruder")
            sock.connect(bus_endpoint(cfg.runtime_dir))
            for junk in (b"", b"\xc1", b"\x93\xa1P", msgpack.packb(["P", "e", 1, 1, [{"x": 1}]])):
                sock.send(junk)
            sock.send_multipart([b"two", b"parts"])
            box = Outbox(sock, "intruder.1.x")  # and then a good batch from the same socket
            box.publish([Point("intruder", "n", "0", 1)])
            box.flush()
            b = wait_for(
                lambda: (
                    (b := status(cfg)["by_name"]["bridge"])["stats"]["bad_frames"] >= 5
                    and b["stats"]["points_in"] > 0
                    and b
                ),
                15,
                "bad frames counted",
            )
            wait_for(
                lambda: sock.poll(100) and box.on_readable() == [] and box.buffered == 0, 10, "ack"
            )
            sock.close(0)
        finally:
            zctx.term()
        before = b["stats"]["points_in"]
        wait_for(
            lambda: status(cfg)["by_name"]["bridge"]["stats"]["points_in"] > before + 20,
            10,
            "more points",
        )
        assert status(cfg)["by_name"]["bridge"]["restarts"] == 0
