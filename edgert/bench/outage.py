"""Outage: NATS stopped for a while under a steady load, then restarted on the same port.

4 drivers publish 5,000 points/s in all, one point per `publish` call
(`edgert.bench.producer`), counting up from 0 each, into core NATS. After a
warm-up the nats-server is stopped for `down` seconds (60 by default), then
started again on the same port. Measured:

- while spooling (from shortly after the stop to the restart): bytes the
  bridge process wrote (`wchar` in /proc/PID/io: database, WAL, everything)
  and spool payload bytes (its status) per point, each as a multiple of the
  points' own msgpack payload (target <= 1.3); the bridge's CPU as % of one
  core (target <= 15 %);
- after the restart: seconds from NATS accepting connections to the first
  point at the subscriber (target <= 1 s), and the drain rate: points
  delivered per second from that first point until every value published
  before the restart has arrived, as a multiple of the production rate
  (target >= 5);
- at the end: points lost (a counter value published, per the drivers'
  `points_out`, that never arrived; must be 0) and duplicates, apart.

The subscriber reconnects every 10 ms while the server is down, so it is back
before any bridge that waits longer; its reconnect time is reported.
"""

from __future__ import annotations

import time
from typing import Any

from edgert.bench.gateway import GatewayProcess, config_text, producer
from edgert.bench.listener import Listener
from edgert.bench.measure import Sample, between, delta, rnd, sample, stat
from edgert.bench.procfs import io_counters
from edgert.bench.raw import payload_per_point
from edgert.bench.workdir import workdir
from edgert.testing import wait_for

__all__ = ["outage", "run_all", "DOWN"]

DOWN = 60.0  # seconds NATS is down by default
POLL = 0.05  # seconds between looks at the subscriber while it catches up


def outage(
    down: float = DOWN,
    drivers: int = 4,
    rate: float = 5000.0,
    warmup: float = 3.0,
    drain_timeout: float | None = None,
) -> dict[str, Any]:
    """Spool cost, bridge CPU, reconnect, drain and loss through one NATS outage."""
    names = [f"gen{i}" for i in range(drivers)]
    each = rate / drivers
    drain_timeout = max(30.0, 3 * down) if drain_timeout is None else drain_timeout
    settle = min(2.0, down / 4)  # skip the moment NATS goes: reconnect attempts, last acks
    res: dict[str, Any] = {"down_s": down, "drivers": drivers, "rate_points_s": rate}
    with workdir() as (d, srv):
        text = config_text(d, srv.url, "".join(producer(n, each) for n in names))
        with (
            Listener(srv.url, "edgert.bench.p.>", check=True) as heard,
            GatewayProcess(text, f"{d}/gw") as gw,
        ):
            gw.wait_running()
            wait_for(lambda: heard.snapshot()["points"] > 0, 30, "points at the subscriber")
            time.sleep(warmup)  # healthy running before the outage

            srv.stop()
            t_down = time.monotonic()
            time.sleep(settle)
            bridge = gw.status()["by_name"]["bridge"]["pid"]
            io_a = io_counters(bridge)
            a = sample(gw.pids(), heard, gw.status)
            time.sleep(max(0.0, t_down + down - time.monotonic()))  # the outage lasts `down`
            io_b = io_counters(bridge)
            b = sample(gw.pids(), heard, gw.status)

            srv.start()
            t_up = time.monotonic()
            res |= _spooling(a, b, io_a, io_b, names, bridge)
            res |= _drain(heard, b, t_down, t_up, names, rate, drain_timeout)
            res |= _loss(gw, heard, names, b)
            res["pids"] = list(gw.seen)
    return res


def _spooling(
    a: Sample, b: Sample, io_a: dict, io_b: dict, names: list[str], bridge: int
) -> dict[str, Any]:
    """What spooling cost between `a` and `b`, NATS being down all along."""
    points = sum(delta(a, b, n, "points_out") or 0 for n in names)
    value = max(stat(b, n, "points_out") or 0 for n in names)
    payload = payload_per_point(names[-1], value)
    wchar = io_b.get("wchar", 0) - io_a.get("wchar", 0)
    spooled = delta(a, b, "bridge", "spool_written_bytes")
    cpu = between(a, b, pids=[bridge])
    per = lambda x: rnd(x / points) if x is not None and points else None  # noqa: E731
    return {
        "spooling_s": cpu["seconds"],
        "spooling_points": points,
        "payload_bytes_per_point": rnd(payload),
        "bridge_written_bytes_per_point": per(wchar),
        "bridge_disk_bytes_per_point": per(io_b.get("write_bytes", 0) - io_a.get("write_bytes", 0)),
        "spool_payload_bytes_per_point": per(spooled),
        "written_vs_payload": rnd(wchar / points / payload) if points else None,
        "spool_batches_per_1000_points": per(
            None if (x := delta(a, b, "bridge", "spool_written_batches")) is None else 1000 * x
        ),
        "bridge_cpu_pct_spooling": cpu["cpu_pct"],
        "gateway_cpu_pct_spooling": between(a, b)["cpu_pct"],
        "spool_points_at_restart": stat(b, "bridge", "buffered"),
    }


def _drain(
    heard: Listener,
    b: Sample,
    t_down: float,
    t_up: float,
    names: list[str],
    rate: float,
    timeout: float,
) -> dict[str, Any]:
    """From NATS back to every point published before it delivered."""
    before = {n: stat(b, n, "points_out") or 0 for n in names}  # published while down, at most
    start = heard.snapshot()
    deadline = t_up + timeout
    caught = None
    snap = start
    while time.monotonic() < deadline:
        snap = heard.snapshot()
        nodes = snap["nodes"]
        if all(nodes.get(n, {}).get("contiguous", 0) >= before[n] for n in names):
            caught = snap
            break
        time.sleep(POLL)
    end = caught or snap
    first = next((t for t in end["resumed"] if t >= t_up), None)
    back = next((t for t in end["reconnects"] if t >= t_down), None)
    took = end["at"] - first if first is not None else 0.0  # the drain proper: first to last
    drained = end["points"] - start["points"]
    return {
        "first_point_after_s": rnd(first - t_up) if first is not None else None,
        "subscriber_back_after_s": rnd(back - t_up) if back is not None else None,
        "drain_s": rnd(took) if caught else None,
        "drain_complete": caught is not None,
        "drain_points": drained,
        "drain_points_s": rnd(drained / took) if took > 0 else None,
        "drain_vs_rate": rnd(drained / took / rate) if took > 0 else None,
    }


def _loss(gw: GatewayProcess, heard: Listener, names: list[str], b: Sample) -> dict[str, Any]:
    """Every value each driver had published by now arrived? (waits a little for stragglers)
    The drivers' counts come with their heartbeats: taken from one newer than `b`'s."""
    seen = {n: stat(b, n, "points_out") or 0 for n in names}

    def fresh() -> dict[str, Any] | None:
        st = gw.status()["by_name"]
        return st if all((st[n].get("points_out") or 0) > seen[n] for n in names) else None

    try:
        st = wait_for(fresh, 10, "the drivers' counts after the outage", interval=0.1)
    except TimeoutError:
        st = gw.status()["by_name"]
    published = {n: st[n]["points_out"] for n in names}
    dropped = sum(st[n].get("dropped", 0) for n in names)

    def all_in() -> bool:
        nodes = heard.snapshot()["nodes"]
        return all(nodes.get(n, {}).get("contiguous", 0) >= published[n] for n in names)

    try:
        wait_for(all_in, 10, "every published point at the subscriber", interval=0.1)
    except TimeoutError:
        pass  # counted as lost below
    lost = heard.missing(published)
    nodes = heard.snapshot()["nodes"]
    return {
        "published": sum(published.values()),
        "lost": sum(lost.values()),
        "lost_by_node": lost,
        "duplicates": sum(nodes.get(n, {}).get("duplicates", 0) for n in names),
        "dropped_at_source": dropped,
        "spool_dropped": st["bridge"].get("dropped"),
    }


def run_all(down: float = DOWN) -> dict[str, Any]:
    return outage(down=down)
