"""JetStream order through a stream leader that goes silent.

A gateway (`edgert run`) publishes two counters into a stream of 3 replicas on a
3-node nats-server cluster, connected to the two nodes that do not lead the
stream. The leader is SIGSTOPped: what is sent to it is lost without an
answer, and the other two elect a new leader (within about 10 s), which stores
what comes next. With `ack_timeout` longer than that election, a session that
went on publishing would have later points stored by the new leader before the
lost ones, re-published only once their ack was seen missing. The counters are
slow (a message each per point, so the bridge's window of messages in flight
is still open when the new leader is in place): every lost message is followed
by publishes after the election unless the uplink holds them.

The leader stays stopped until that session has ended on the missing ack and
the new leader stores points, then SIGCONT. The stream must hold every counter
value once, in order, per subject, and no message id twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from edgert.testing import status, wait_for
from edgert.testing.chaos import CounterState, check_counter
from edgert.testing.configs import gateway_config, nats_section, sim_driver, supervisor
from edgert.testing.nats import NatsCluster, decode, stream_messages

STREAM = "EDGERT_gw"
COUNTERS = ("c1", "c2")
RATE = 2.0  # points a second each, one message each: the window fills in ~16 s, not before
ACK_TIMEOUT = 15.0  # longer than an election (nats-server: 4-9 s without a leader's beat)


async def _stream(urls: list[str], what: str) -> Any:
    """One JetStream request to the cluster: "create" the gateway's stream of 3
    replicas, "info" of it, or "stepdown" (its leader hands over to another node)."""
    import nats

    nc = await nats.connect(urls, connect_timeout=1, max_reconnect_attempts=1)
    try:
        js = nc.jetstream(timeout=5)
        if what == "create":
            subjects = ["edgert.gw.p.>", "edgert.gw.status"]
            return await js.add_stream(name=STREAM, subjects=subjects, num_replicas=3)
        if what == "stepdown":
            return await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{STREAM}", b"", timeout=5)
        return await js.stream_info(STREAM)
    finally:
        await nc.close()


def _info(urls: list[str]) -> Any:
    return asyncio.run(_stream(urls, "info"))


def _led_by(urls: list[str], name: str) -> bool:
    """The stream is led by node `name`, its replicas current; else ask for a new leader."""
    c = _info(urls).cluster
    if c.leader == name:
        return all(r.current and not r.offline for r in c.replicas or [])
    if c.leader:
        asyncio.run(_stream(urls, "stepdown"))
    return False


def _whole(urls: list[str]) -> bool:
    """The stream has a leader and both other replicas, current."""
    c = _info(urls).cluster
    return bool(
        c.leader
        and len(c.replicas or []) == 2
        and all(r.current and not r.offline for r in c.replicas)
    )


def _nodes(cluster: NatsCluster) -> str:
    """Each node running or how it ended, with the end of its log if it ended."""
    out = []
    for n in cluster.nodes:
        code = n.proc.poll() if n.proc is not None else "not started"
        if code is None:
            out.append(f"{n.name} running")
            continue
        log = (n.directory / "server.log").read_text(errors="replace")[-1500:]
        out.append(f"{n.name} exited ({code}), its log ends: {log}")
    return "; ".join(out)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_silent_stream_leader_loses_no_point_and_reorders_none(short_dir: Path) -> None:
    with NatsCluster(short_dir / "nats", 3) as cluster:
        urls = cluster.urls
        asyncio.run(_stream(urls, "create"))
        leader, *others = cluster.nodes
        wait_for(lambda: _led_by(urls, leader.name), 60, f"the stream led by {leader.name}")
        live = [n.url for n in others]
        body = supervisor(backoff_min=0.05) + nats_section(
            live,  # type: ignore[arg-type]  # a list of URLs: a TOML array
            jetstream=True,
            ack_timeout=ACK_TIMEOUT,
        )
        drivers = "".join(sim_driver(n, rate=RATE) for n in COUNTERS)
        cfg = gateway_config(short_dir / "gw", body + drivers)
        log_path = short_dir / "run.log"
        with open(log_path, "ab") as log:
            run = subprocess.Popen(
                [sys.executable, "-m", "edgert", "run", cfg.path],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

        def sessions() -> int:
            bridge = status(cfg, timeout=2.0)["by_name"]["bridge"]
            return bridge["stats"]["nats_connect_attempts"]

        stopped = False
        try:
            wait_for(lambda: _info(urls).state.messages > 20, 60, "points stored", interval=0.2)
            before = _info(urls).state.last_seq
            first = sessions()
            assert leader.proc is not None
            os.kill(leader.proc.pid, signal.SIGSTOP)
            stopped = True
            wait_for(
                lambda: sessions() > first,
                ACK_TIMEOUT + 30,
                "the session ended on the missing ack",
                interval=0.2,
            )

            def new_leader_stores() -> bool:
                info = _info(live)
                return info.cluster.leader != leader.name and info.state.last_seq > before + 20

            wait_for(new_leader_stores, 60, "a new leader storing points", interval=0.2)
            os.kill(leader.proc.pid, signal.SIGCONT)
            stopped = False
            try:
                wait_for(lambda: _whole(urls), 90, "every replica current", interval=0.5)
            except TimeoutError as e:
                raise AssertionError(f"{e}; {_nodes(cluster)}") from None

            def delivered() -> bool:  # connected, nothing waiting in the spool
                b = status(cfg, timeout=2.0)["by_name"]["bridge"]
                return b["stats"].get("nats") == "connected" and not b["buffered"]

            wait_for(delivered, 60, "the spool drained", interval=0.2)
            run.send_signal(signal.SIGTERM)
            assert run.wait(60) == 0
            msgs = stream_messages(urls[0], STREAM)
        finally:
            if stopped:
                os.kill(leader.proc.pid, signal.SIGCONT)
            if run.poll() is None:
                run.kill()
                run.wait()
    log_text = log_path.read_text(errors="replace")
    # the key reached the bridge: the session ended on an ack missing for ack_timeout
    assert f"NATS: no JetStream ack within {ACK_TIMEOUT:g}s;" in log_text, log_text[-3000:]
    points = [m for m in msgs if ".p." in m.subject]
    ids = Counter(m.headers.get("Nats-Msg-Id") for m in points)
    assert not [i for i, n in ids.items() if n > 1], "a message id stored twice"
    for name in COUNTERS:
        values = [
            p["value"] for m in points if m.subject == f"edgert.gw.p.{name}" for p in decode(m)
        ]
        assert len(values) > 40, (name, len(values))
        # from 0 on, each value once and in order (the last ones may have been lost at
        # the stop, so only the values below the highest stored can be missing)
        verdict = check_counter(values, CounterState(max(values) + 1, set()))
        assert not verdict.out_of_order, f"{name}: backwards {verdict.out_of_order[:20]}"
        assert not verdict.duplicates, f"{name}: twice {verdict.duplicates[:20]}"
        assert not verdict.lost, f"{name}: lost {verdict.lost[:20]}"
