"""The bridge's fast path: with NATS healthy, points go from memory to NATS at once.

A batch is acked to its driver once NATS has it or the spool has it, whichever
comes first; with NATS healthy batches go from memory, every point arrives once
and in order, and the spool ends empty (how rarely the disk is written is
`edgert bench`'s to measure, not a test's). After an outage the spooled
backlog of a node goes out before anything newer of that node, and the bridge
goes back to the fast path once the backlog is sent. Real processes, a real
nats-server, deadlines instead of sleeps.
"""

from __future__ import annotations

import pytest
from test_bridge import FAST, bridge, counter, nats_section, stream_values, values

from edgert.testing import running_gateway, wait_for
from edgert.testing.nats import NatsProcess, Subscriber


@pytest.mark.parametrize("jetstream", [False, True])
def test_healthy_nats_gets_points_from_memory_and_the_spool_ends_empty(
    make_config, nats_server: NatsProcess, jetstream: bool
) -> None:
    cfg = make_config(
        FAST + nats_section(nats_server.url, jetstream=jetstream) + counter(rate=500.0)
    )
    with Subscriber(nats_server.url, "edgert.gw.p.>") as sub, running_gateway(cfg):
        wait_for(lambda: len(sub.points()) >= 1000, 15, "1000 points on NATS")
        # the figures come with the bridge's heartbeats: wait until they show the points
        b = wait_for(
            lambda: (b := bridge(cfg))["stats"]["points_out"] >= 1000 and b["buffered"] == 0 and b,
            15,
            "1000 points out and the spool empty",
        )
    stats = b["stats"]
    assert stats["fast_batches"] > 0  # NATS took batches straight from memory
    assert stats["spool_dropped"] == 0 and stats["spool_points"] == 0
    got = values(sub.points())
    assert got == list(range(len(got)))  # every value, in order, once
    if jetstream:
        assert stream_values(nats_server)[: len(got)] == got


def test_after_an_outage_the_spooled_backlog_goes_first_then_the_fast_path_resumes(
    make_config, nats_server: NatsProcess
) -> None:
    cfg = make_config(
        FAST
        + nats_section(nats_server.url, jetstream=True)
        + counter(rate=300.0)
        + counter("other", rate=100.0)
    )
    with running_gateway(cfg):
        wait_for(lambda: bridge(cfg)["stats"]["fast_batches"] >= 50, 15, "the fast path in use")
        nats_server.stop()
        wait_for(lambda: bridge(cfg)["buffered"] >= 600, 15, "points spooled in the outage")
        written = bridge(cfg)["stats"]["spool_written_batches"]
        assert written > 0
        nats_server.start()
        with Subscriber(nats_server.url, "edgert.gw.p.>") as sub:
            wait_for(lambda: bridge(cfg)["buffered"] == 0, 15, "spool drained")
            fast = bridge(cfg)["stats"]["fast_batches"]
            wait_for(
                lambda: bridge(cfg)["stats"]["fast_batches"] >= fast + 50, 15, "fast path again"
            )
            wait_for(lambda: len(values(sub.points())) >= 300, 15, "points after the outage")
            wait_for(lambda: bridge(cfg)["buffered"] == 0, 15, "the spool empty again")
        assert bridge(cfg)["stats"]["spool_dropped"] == 0
    for node in ("gen", "other"):
        got = stream_values(nats_server, node)
        assert got == list(range(len(got)))  # none lost, none twice, in order per node
        seen = values(sub.points(), node)
        assert seen == sorted(seen) and len(set(seen)) == len(seen)  # live order held too
    assert len(stream_values(nats_server)) >= 900
