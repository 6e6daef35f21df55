"""Efficiency at realistic rates: what a gateway costs to move points a polling driver makes.

Two loads, each point published alone (`edgert.bench.producer`, 10 ms ticks):
8 drivers x 1,000 points/s and 1 driver x 8,000 points/s, into a real
nats-server (core NATS). For each, over a measuring window after a warm-up:

- delivered points/s at a nats-py subscriber, against the rate produced;
- spool writes while NATS is healthy (batches and bytes, from the bridge's status);
- the summed CPU of every gateway process (`edgert run` and everything below it:
  supervisor, fork server, drivers, bridge; nats-server and the subscriber are
  not the gateway) as % of one core and CPU-µs per delivered point;
- p50/p99 latency from `publish` to the subscriber.

edgert and the baseline take turns, `rounds` times each (a share of `seconds`
per turn), and each side's figures are pooled over its turns (CPU and points
summed, latencies of all its samples): a burst of load from elsewhere on the
machine then falls on both sides alike, not on whichever ran during it. The
p99 of each turn is kept too (`p99_by_round_ms`), to show the spread.

The baseline is raw Python producing the same points: as many processes as
drivers, each waking every 10 ms and coalescing its due points into one
msgpack batch, PUSH -> PULL -> a nats-py forwarder (`edgert.bench.raw`), its
CPU summed the same way. Targets: delivered = produced with the spool
untouched, CPU <= 2 x the baseline, p99 < 10 ms.

The crash-safe outbox (each driver's ring file, `edgert.bus.ring`) is on in
those runs, as by default, in a runtime directory on a tmpfs as deployed. The 1 x 8,000 load runs once more with
`crash_safe_outbox = false`: the difference in the driver processes' CPU-µs per
point is what the ring costs (`ring_us_per_point`; the bridge is not touched by
it, and its share would only add noise).
"""

from __future__ import annotations

import time
from typing import Any

from edgert.bench.gateway import GatewayProcess, config_text, producer
from edgert.bench.listener import Listener
from edgert.bench.measure import between, by_actor, delta, first_points, percentiles, rnd, sample
from edgert.bench.raw import RawPath
from edgert.bench.workdir import runtime_dir, workdir
from edgert.bus.ring import filesystem

__all__ = ["efficiency", "run_all", "LOADS"]

LOADS = ((8, 1000.0), (1, 8000.0))  # (drivers, points/s each)
RING_OFF = ((1, 8000.0),)  # the loads measured again without the outbox's ring file


def _edgert(
    d: str, url: str, drivers: int, rate: float, warmup: float, seconds: float, ring: bool = True
) -> dict:
    names = [f"gen{i}" for i in range(drivers)]
    here = f"{d}/e{drivers}x{rate:g}" + ("" if ring else "-noring")  # a fresh spool each
    with (
        runtime_dir() as run,
        Listener(url, "edgert.bench.p.>", latency=True) as heard,
        GatewayProcess(
            config_text(here, url, "".join(producer(n, rate) for n in names), ring=ring, run=run),
            here,
        ) as gw,
    ):
        fs = filesystem(run)
        gw.wait_running()
        first = first_points(heard, 15)
        time.sleep(warmup)  # the measuring window starts after a warm-up
        a = sample(gw.pids(), heard, gw.status)
        time.sleep(seconds)
        b = sample(gw.pids(), heard, gw.status)
        lat = heard.latencies(a.at, b.at)
        pids = list(gw.seen)
    res = between(a, b)
    res |= percentiles(lat)
    res["latencies_ns"] = lat
    res["cpu_by_process"] = by_actor(a, b)
    res["spool_written_batches"] = delta(a, b, "bridge", "spool_written_batches")
    res["spool_written_bytes"] = delta(a, b, "bridge", "spool_written_bytes")
    res["spool_points_at_end"] = b.status and b.status["by_name"]["bridge"].get("buffered")
    outs = [delta(a, b, n, "points_out") for n in names]
    drops = [delta(a, b, n, "dropped") for n in names]
    res["produced_points_s"] = rnd(sum(x or 0 for x in outs) / res["seconds"])
    res["dropped_at_source"] = sum(x or 0 for x in drops)
    res["first_point_s"] = first
    res["pids"] = pids
    res["runtime_dir_fs"] = fs
    return res


def _raw(d: str, url: str, drivers: int, rate: float, warmup: float, seconds: float) -> dict:
    nodes = [f"raw{i}" for i in range(drivers)]
    with (
        Listener(url, "raw.p.>", latency=True) as heard,
        RawPath(d, url, "raw.p", nodes, rate, seconds=warmup + seconds + 30) as raw,
    ):
        first = first_points(heard, 15)
        time.sleep(warmup)
        a = sample(raw.pids(), heard)
        time.sleep(seconds)
        b = sample(raw.pids(), heard)
        lat = heard.latencies(a.at, b.at)
        pids = raw.pids()
    res = between(a, b) | percentiles(lat)
    res["latencies_ns"] = lat
    res["first_point_s"] = first
    res["pids"] = pids
    return res


def _pool(turns: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's figures over its turns: rates from the summed seconds, points and
    CPU; percentiles of every latency sample; counts summed; the rest from the last."""
    if len(turns) == 1:
        res = dict(turns[0])
        res["p99_by_round_ms"] = [res["p99_ms"]]
        del res["latencies_ns"]
        return res
    res = dict(turns[-1])
    seconds = sum(t["seconds"] or 0 for t in turns)
    points = sum(t["points"] for t in turns)
    cpu = sum(t["cpu_s"] or 0 for t in turns)
    lat = [ns for t in turns for ns in t["latencies_ns"]]
    del res["latencies_ns"]
    res |= {
        "seconds": rnd(seconds),
        "points": points,
        "points_s": rnd(points / seconds) if seconds > 0 else None,
        "cpu_s": rnd(cpu),
        "cpu_pct": rnd(100 * cpu / seconds) if seconds > 0 else None,
        "cpu_us_per_point": rnd(1e6 * cpu / points) if points > 0 else None,
        "points_per_cpu_s": rnd(points / cpu) if cpu > 0 else None,
    }
    res |= percentiles(lat)
    res["p99_by_round_ms"] = [t["p99_ms"] for t in turns]
    res["pids"] = [p for t in turns for p in t["pids"]]
    res["first_point_s"] = max((t["first_point_s"] or 0 for t in turns), default=None)
    if "cpu_by_process" in res:
        names = {k for t in turns for k in t["cpu_by_process"]}
        res["cpu_by_process"] = {
            k: rnd(sum(t["cpu_by_process"].get(k, 0) * t["seconds"] for t in turns) / seconds)
            for k in sorted(names)
        }
    for k in ("spool_written_batches", "spool_written_bytes", "dropped_at_source"):
        if k in res:
            vals = [t[k] for t in turns]
            res[k] = None if None in vals else sum(vals)
    if "produced_points_s" in res:
        res["produced_points_s"] = rnd(
            sum((t["produced_points_s"] or 0) * t["seconds"] for t in turns) / seconds
        )
    return res


def efficiency(
    loads: tuple[tuple[int, float], ...] = LOADS,
    seconds: float = 10.0,
    warmup: float = 3.0,
    ring_off: tuple[tuple[int, float], ...] = RING_OFF,
    rounds: int = 2,
) -> dict[str, Any]:
    """Each load through edgert and through the raw baseline, taking turns `rounds`
    times (`seconds` of measuring per side, split between its turns); the figures
    side by side. The loads in `ring_off` also run once without the outbox's ring
    file (`edgert_no_ring`)."""
    out: dict[str, Any] = {}
    each = seconds / rounds
    with workdir() as (d, srv):
        for drivers, rate in loads:
            mine_turns, base_turns = [], []
            for i in range(rounds):
                here = f"{d}/r{i}"  # each turn a fresh gateway: its own spool
                mine_turns.append(_edgert(here, srv.url, drivers, rate, warmup, each))
                base_turns.append(_raw(d, srv.url, drivers, rate, warmup, each))
            mine, base = _pool(mine_turns), _pool(base_turns)
            res = out[f"{drivers}x{rate:g}"] = {
                "drivers": drivers,
                "rate_each": rate,
                "offered_points_s": drivers * rate,
                "edgert": mine,
                "raw": base,
                "cpu_ratio": _ratio(mine["cpu_pct"], base["cpu_pct"]),
                "delivered_ratio": _ratio(mine["points_s"], drivers * rate),
            }
            if (drivers, rate) in ring_off:
                plain = _pool([_edgert(d, srv.url, drivers, rate, warmup, seconds, False)])
                res |= _ring_cost(mine, plain)
    return out


def _ring_cost(mine: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    """What the ring adds, where it runs: the driver processes' % of a core and their
    CPU-µs per point, with it and without it."""

    def us(r: dict[str, Any]) -> float | None:
        pct = sum(v for k, v in r["cpu_by_process"].items() if k.startswith("gen"))
        return 1e4 * pct / r["points_s"] if r.get("points_s") else None

    a, b = us(mine), us(plain)
    return {
        "edgert_no_ring": plain,
        "ring_us_per_point": rnd(a - b) if a is not None and b is not None else None,
        "ring_driver_us_per_point": rnd(a),
        "no_ring_driver_us_per_point": rnd(b),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return rnd(a / b) if a is not None and b else None


def run_all() -> dict[str, Any]:
    return efficiency()
