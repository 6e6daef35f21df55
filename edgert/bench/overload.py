"""Overload: 1, 2, 4, 8 and 16 drivers publishing as fast as they can into core NATS.

Each driver is a `sim` counter at its highest rate. For each count, over a
measuring window after a warm-up:

- delivered points/s at a nats-py subscriber (target at 8 and 16 drivers:
  >= 0.8 x the 1-driver figure: the gateway saturates, it does not collapse);
- spool writes while NATS is healthy, as % of the batches the bridge took in
  (`batches_in` in its status) or, for a bridge that does not count those, as %
  of the points by payload bytes (target <= 5 %: the spool is for outages);
- points dropped at the source (the drivers' `dropped` in status) per second;
- the bridge's points per CPU-second, beside a raw forwarder's: one process
  PULLing msgpack batches and publishing their bytes with nats-py (target
  >= 0.5 x the raw forwarder's). Its producer sends batches of the size the
  bridge took in on average over the runs (`batch_points`: points_in /
  batches_in from the bridge's status), as many a second as the bridge took
  in (`batches_s_offered`), not 1,000-point batches as fast as it can: a
  forwarder's cost per point falls with the batch, and one kept saturated
  amortises each wake-up over a burst of batches that a forwarder fed at a
  gateway's pace pays per batch; the two must do the same job.
"""

from __future__ import annotations

import time
from typing import Any

from edgert.bench.gateway import GatewayProcess, config_text, sim_counter
from edgert.bench.listener import Listener
from edgert.bench.measure import Sample, between, by_actor, delta, first_points, rnd, sample, stat
from edgert.bench.raw import RawPath, payload_per_point
from edgert.bench.workdir import workdir

__all__ = ["overload", "run_all", "COUNTS", "MAX_RATE"]

COUNTS = (1, 2, 4, 8, 16)
MAX_RATE = 1_000_000.0  # the sim driver's highest rate: as fast as it can
RAW_BATCH = 1000  # the raw forwarder's batch when the bridge reports no batch count


def _edgert(d: str, url: str, n: int, warmup: float, seconds: float) -> dict[str, Any]:
    names = [f"gen{i}" for i in range(n)]
    text = config_text(f"{d}/o{n}", url, "".join(sim_counter(x, MAX_RATE) for x in names))
    with (
        Listener(url, "edgert.bench.p.>") as heard,
        GatewayProcess(text, f"{d}/o{n}") as gw,
    ):
        gw.wait_running()
        first = first_points(heard, 15)
        time.sleep(warmup)  # the measuring window starts after a warm-up
        a = sample(gw.pids(), heard, gw.status)
        time.sleep(seconds)
        b = sample(gw.pids(), heard, gw.status)
        pids = list(gw.seen)
    bridge_pid = stat(b, "bridge", "pid")
    res = between(a, b)
    res["bridge"] = between(a, b, pids=[bridge_pid])
    res["cpu_by_process"] = by_actor(a, b)
    res["dropped_at_source_s"] = rnd(
        sum(delta(a, b, x, "dropped") or 0 for x in names) / res["seconds"]
    )
    res["points_in"] = delta(a, b, "bridge", "points_in")
    res["batches_in"] = delta(a, b, "bridge", "batches_in")
    res["batch_points"] = (
        rnd(res["points_in"] / res["batches_in"])
        if res["points_in"] and res["batches_in"]
        else None
    )
    res["spool_written_batches"] = delta(a, b, "bridge", "spool_written_batches")
    res["spool_written_bytes"] = delta(a, b, "bridge", "spool_written_bytes")
    res["spool_points_at_end"] = stat(b, "bridge", "buffered")
    res |= _spool_share(a, b, res, names)
    res["first_point_s"] = first
    res["pids"] = pids
    return res


def _spool_share(a: Sample, b: Sample, res: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Spool writes while healthy, as % of batches in (or of points, by payload bytes)."""
    written = res["spool_written_batches"]
    batches_in = delta(a, b, "bridge", "batches_in")
    if written is not None and batches_in:
        return {"spool_share_pct": rnd(100 * written / batches_in), "spool_share_of": "batches"}
    nbytes, points = res["spool_written_bytes"], res["points_in"]
    if nbytes is None or not points:
        return {"spool_share_pct": None, "spool_share_of": None}
    value = max(stat(b, x, "points_out") or 0 for x in names)
    payload = points * payload_per_point(names[-1], value)
    return {"spool_share_pct": rnd(100 * nbytes / payload), "spool_share_of": "points"}


def _raw(
    d: str, url: str, warmup: float, seconds: float, batch: int, pace: float | None
) -> dict[str, Any]:
    total = warmup + seconds + 30
    with (
        Listener(url, "raw.p.>") as heard,
        RawPath(d, url, "raw.p", ["raw0"], None, total, batch=batch, pace=pace) as raw,
    ):
        first = first_points(heard, 15)
        time.sleep(warmup)
        a = sample(raw.pids(), heard)
        time.sleep(seconds)
        b = sample(raw.pids(), heard)
        res = between(a, b, pids=[raw.forwarder_pid])
        res["first_point_s"] = first
        res["pids"] = raw.pids()
    res["batch_points"] = batch
    res["batches_s_offered"] = None if pace is None else rnd(pace)
    return res


def overload(
    counts: tuple[int, ...] = COUNTS, seconds: float = 5.0, warmup: float = 2.0
) -> dict[str, Any]:
    """Delivered points/s, spool writes, drops and bridge efficiency for each driver count."""
    with workdir() as (d, srv):
        runs = {str(n): _edgert(d, srv.url, n, warmup, seconds) for n in counts}
        points_in = sum(r["points_in"] or 0 for r in runs.values())
        batches_in = sum(r["batches_in"] or 0 for r in runs.values())
        batch = max(1, round(points_in / batches_in)) if batches_in else RAW_BATCH
        # as many batches a second as the bridge took in, on average over the runs
        pace = batches_in / sum(r["seconds"] for r in runs.values()) if batches_in else None
        raw = _raw(d, srv.url, warmup, seconds, batch, pace)
    one = runs[str(counts[0])]["points_s"]
    base = raw["points_per_cpu_s"]
    for r in runs.values():
        r["vs_first"] = rnd(r["points_s"] / one) if one and r["points_s"] is not None else None
        mine = r["bridge"]["points_per_cpu_s"]
        r["bridge_vs_raw"] = rnd(mine / base) if mine is not None and base else None
    return {"drivers": runs, "raw_forwarder": raw, "first": counts[0]}


def run_all() -> dict[str, Any]:
    return overload()
