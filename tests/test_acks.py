"""Acks at idle: the bridge acknowledges every batch, and a driver that polls once
a second is not woken for it.

The bridge sends its acks on a socket of their own (`ack.sock`); a driver reads
them at its own wake-ups and waits on them only when one would change what it
does before then (points lingering, credit running low, a resend due), while
the commands on the bus still wake it at once. A sender with no ack socket
(another program on the bus) gets its acks on the bus.
"""

from __future__ import annotations

import msgpack
import zmq

from edgert.bus import bus_endpoint, decode_frame, p_frame
from edgert.point import Point
from edgert.testing import running_gateway, status, wait_for
from edgert.testing.configs import nats_section, sim_driver

BODY = nats_section("{url}") + sim_driver("slow", rate=1.0)  # a counter, once a second


def voluntary_switches(pid: int) -> int:
    """How often the main thread of `pid` went to sleep and was woken."""
    with open(f"/proc/{pid}/task/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


def test_a_driver_polling_once_a_second_wakes_once_per_poll_and_is_acked(
    make_config, nats_server, monkeypatch
) -> None:
    monkeypatch.delenv("EDGERT_HEARTBEAT_MAX", raising=False)  # the default beat: 2 s
    cfg = make_config(BODY.format(url=nats_server.url))
    with running_gateway(cfg):

        def delivered() -> dict | None:
            s = status(cfg)["by_name"]
            up = s["bridge"]["stats"].get("nats") == "connected"
            return s if up and s["slow"]["points_out"] >= 2 else None

        s = wait_for(delivered, 30, "the driver's points on NATS")
        pid, out0 = s["slow"]["pid"], s["slow"]["points_out"]
        woke0 = voluntary_switches(pid)
        s = wait_for(
            lambda: (s := status(cfg)["by_name"])["slow"]["points_out"] >= out0 + 5 and s,
            30,
            "five more polls",
        )
        woke = voluntary_switches(pid) - woke0
        polls = s["slow"]["points_out"] - out0  # one point per poll
        # one wake-up per poll (the heartbeat goes with it), not two (the ack of its batch)
        assert woke <= polls + 2, f"{woke} wake-ups for {polls} polls"
        assert s["slow"]["pid"] == pid and s["slow"]["restarts"] == 0
        # each ack was read at the next poll: at most the last batch is held, and the
        # driver never took an ack read late for a lost batch (no resend came in)
        wait_for(lambda: status(cfg)["by_name"]["slow"]["buffered"] <= 1, 10, "acks read")
        assert status(cfg)["by_name"]["bridge"]["stats"]["duplicates"] == 0


def test_a_sender_without_an_ack_socket_is_acked_on_the_bus(make_config, nats_server) -> None:
    cfg = make_config(BODY.format(url=nats_server.url))
    with running_gateway(cfg):
        wait_for(
            lambda: status(cfg)["by_name"]["bridge"]["stats"].get("nats") == "connected",
            30,
            "the bridge on NATS",
        )
        zctx = zmq.Context(1)
        sock = zctx.socket(zmq.DEALER)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.ROUTING_ID, b"other")
            sock.connect(bus_endpoint(cfg.runtime_dir))
            maps = msgpack.packb([Point("other", "n", "0", 7).to_map()], use_bin_type=True)
            sock.send(p_frame("other.1.a", 1, 1, maps))
            assert sock.poll(30_000), "no ack on the bus"
            assert decode_frame(sock.recv()) == ("A", "other.1.a", 1)
        finally:
            sock.close(0)
            zctx.term()
