"""Measuring windows: samples taken at both ends of a window, and what lies between.

A `Sample` holds, at one instant, the CPU seconds of a set of processes, a
`Listener` snapshot and (for edgert) the gateway's status. `between(a, b)`
turns two samples into rates: points delivered per second, CPU as % of one
core and CPU-µs per delivered point. The gateway's figures come only through
its public surfaces (status, /proc), so a benchmark measures whichever
bridge is installed; a figure a bridge does not report is None, never made up.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgert.bench.listener import Listener
from edgert.bench.procfs import cpu_seconds, cpu_used
from edgert.testing import wait_for

__all__ = [
    "Sample",
    "sample",
    "first_points",
    "between",
    "percentiles",
    "stat",
    "delta",
    "by_actor",
    "rnd",
]


@dataclass
class Sample:
    at: float  # monotonic
    cpu: dict[int, float]  # pid -> CPU seconds
    heard: dict[str, Any]  # the listener's snapshot
    status: dict[str, Any] | None = None  # the gateway's, with actors "by_name"


def sample(
    pids: list[int], listener: Listener, status: Callable[[], dict[str, Any]] | None = None
) -> Sample:
    """CPU of `pids`, what the listener heard and the gateway's status, now."""
    st = status() if status is not None else None
    at = time.monotonic()
    cpu = cpu_seconds(pids)
    heard = listener.snapshot()
    return Sample(at, cpu, heard, st)


def first_points(listener: Listener, timeout: float) -> float | None:
    """Seconds until points arrive at `listener`; None if none came within `timeout`.

    A gateway that delivers nothing under a load is a figure (0 points/s), not an error.
    """
    t0 = time.monotonic()
    try:
        wait_for(lambda: listener.snapshot()["points"] > 0, timeout, "points", interval=0.05)
    except TimeoutError:
        return None
    return rnd(time.monotonic() - t0)


def between(a: Sample, b: Sample, pids: list[int] | None = None) -> dict[str, Any]:
    """Delivered points/s, CPU % of a core and CPU-µs per point from `a` to `b`.

    With `pids`, the CPU is that of those processes only.
    """
    seconds = b.at - a.at
    heard_s = b.heard["at"] - a.heard["at"]
    points = b.heard["points"] - a.heard["points"]
    if pids is None:
        cpu = cpu_used(a.cpu, b.cpu)
    else:
        keep = set(pids)
        cpu = cpu_used(
            {p: t for p, t in a.cpu.items() if p in keep},
            {p: t for p, t in b.cpu.items() if p in keep},
        )
    return {
        "seconds": rnd(seconds),
        "points": points,
        "points_s": rnd(points / heard_s) if heard_s > 0 else None,
        "cpu_s": rnd(cpu),
        "cpu_pct": rnd(100 * cpu / seconds) if seconds > 0 else None,
        "cpu_us_per_point": rnd(1e6 * cpu / points) if points > 0 else None,
        "points_per_cpu_s": rnd(points / cpu) if cpu > 0 else None,
    }


def stat(s: Sample, actor: str, key: str) -> Any:
    """One figure of one actor from a sample's status: top level, then its stats; or None."""
    if s.status is None:
        return None
    a = s.status["by_name"].get(actor)
    if a is None:
        return None
    if key in a:
        return a[key]
    return a.get("stats", {}).get(key)


def delta(a: Sample, b: Sample, actor: str, key: str) -> float | None:
    """How much one actor's figure grew from `a` to `b` (None if it does not report it)."""
    x, y = stat(a, actor, key), stat(b, actor, key)
    if not isinstance(x, int | float) or not isinstance(y, int | float):
        return None
    return y - x


def by_actor(a: Sample, b: Sample) -> dict[str, float]:
    """CPU % of a core per gateway process, named by actor ("supervisor", "other" for the rest)."""
    assert b.status is not None
    names = {x["pid"]: x["name"] for x in b.status["actors"] if x.get("pid")}
    seconds = b.at - a.at
    out: dict[str, float] = {}
    first = next(iter(b.cpu), None)  # pids come `edgert run` first: the supervisor
    for pid, t in b.cpu.items():
        name = names.get(pid) or ("supervisor" if pid == first else "other")
        out[name] = out.get(name, 0.0) + 100 * (t - a.cpu.get(pid, 0.0)) / seconds
    return {k: rnd(v) for k, v in sorted(out.items())}


def percentiles(lat_ns: list[int]) -> dict[str, Any]:
    """p50 and p99 in ms of latencies in ns (None when there are none)."""
    if len(lat_ns) < 2:
        return {"p50_ms": None, "p99_ms": None, "samples": len(lat_ns)}
    q = statistics.quantiles(lat_ns, n=100, method="inclusive")
    return {"p50_ms": rnd(q[49] / 1e6), "p99_ms": rnd(q[98] / 1e6), "samples": len(lat_ns)}


def rnd(v: float | None, digits: int = 3) -> float | None:
    """Round for the JSON: 3 significant decimals below 100, whole numbers above."""
    if v is None:
        return None
    return round(v) if abs(v) >= 100 else round(v, digits)
