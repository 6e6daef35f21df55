"""`edgert bench`: measure this machine, each figure beside a same-run baseline.

The suites live in their own modules (`core`, `points`,
`modbus`) and return plain dicts; this module runs the ones asked for,
prints a table of edgert's figure, the baseline's and their ratio, or the raw
dicts as JSON.
"""

from __future__ import annotations

import json
import logging
from importlib import import_module
from typing import Any

import click

__all__ = ["bench", "SUITES", "rows"]

# suite -> (module, function returning the figures, function formatting them or "")
SUITES = {
    "core": ("edgert.bench.core", "run_all", ""),
    "points": ("edgert.bench.points", "run_all", ""),
    "modbus": ("edgert.bench.modbus", "bench_modbus", "format_table"),
}


def rows(suite: str, result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Table rows (metric, edgert, baseline, ratio) for one suite's result."""
    out: list[tuple[str, str, str, str]] = []
    for name, (mine, base, unit, label) in _PAIRS.get(suite, {}).items():
        m, b = _dig(result, mine), _dig(result, base)
        if m is None:
            continue
        ratio = f"{m / b:.2f}" if isinstance(b, int | float) and b else ""
        out.append(
            (name, f"{_num(m)} {unit}", "" if b is None else f"{_num(b)} {unit} ({label})", ratio)
        )
    return out


def _num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"


def _dig(d: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


# metric -> (edgert's figure, baseline's figure, unit, what the baseline is)
_PAIRS: dict[str, dict[str, tuple[str, str, str, str]]] = {
    "core": {
        "restart p50 (SIGKILL to run)": (
            "restart.edgert_p50_ms",
            "restart.bare_fork_p50_ms",
            "ms",
            "bare fork",
        ),
        "restart p50, spawn baseline": (
            "restart.edgert_p50_ms",
            "restart.bare_spawn_p50_ms",
            "ms",
            "bare spawn",
        ),
        "restart p95": ("restart.edgert_p95_ms", "", "ms", ""),
        "10 drivers to running": ("startup.edgert_s", "startup.bare_spawn_s", "s", "bare spawn"),
        "10 drivers, fork baseline": ("startup.edgert_s", "startup.bare_fork_s", "s", "bare fork"),
        "USS per driver": ("memory.edgert_uss_mb", "memory.bare_spawn_uss_mb", "MB", "bare spawn"),
        "RSS per driver": ("memory.edgert_rss_mb", "memory.bare_spawn_rss_mb", "MB", "bare spawn"),
    },
    "points": {
        "throughput, driver to NATS": (
            "throughput.edgert_points_s",
            "throughput.baseline_zmq_points_s",
            "points/s",
            "zmq PUSH/PULL",
        ),
        "throughput, JetStream": (
            "throughput_jetstream.edgert_points_s",
            "throughput_jetstream.baseline_zmq_points_s",
            "points/s",
            "zmq PUSH/PULL",
        ),
        "latency p50 at 1000 points/s": (
            "latency.edgert_p50_ms",
            "latency.baseline_p50_ms",
            "ms",
            "zmq + NATS",
        ),
        "latency p99": ("latency.edgert_p99_ms", "latency.baseline_p99_ms", "ms", "zmq + NATS"),
        "disk writes per 1000 points, NATS up": (
            "latency.bridge_write_bytes_per_1000",
            "spool.payload_bytes_per_1000",
            "B",
            "payload",
        ),
        "disk writes per 1000 points, NATS down": (
            "outage.bridge_write_bytes_per_1000",
            "spool.payload_bytes_per_1000",
            "B",
            "payload",
        ),
    },
}


def _run_suite(name: str) -> dict[str, Any]:
    module, func, _ = SUITES[name]
    try:
        mod = import_module(module)
    except ImportError as e:
        return {"error": f"suite {name!r} is not available: {e}"}
    return getattr(mod, func)()


def _format(name: str, res: dict[str, Any]) -> str:
    module, _, formatter = SUITES[name]
    if formatter:
        return getattr(import_module(module), formatter)(res)
    table = rows(name, res)
    if not table:
        return json.dumps(res, indent=2, sort_keys=True)
    w = [max(len(r[i]) for r in table) for i in range(4)]
    lines = [f"{'metric':<{w[0]}}  {'edgert':>{w[1]}}  {'baseline':<{w[2]}}  ratio".rstrip()]
    for r in table:
        lines.append(f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:<{w[2]}}  {r[3]}".rstrip())
    return "\n".join(lines)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw figures as JSON.")
@click.option(
    "--only",
    type=click.Choice(sorted(SUITES)),
    multiple=True,
    help="Run only these suites (repeatable). Default: all.",
)
def bench(as_json: bool, only: tuple[str, ...]) -> None:
    """Measure throughput, latency, restart time and memory on this machine.

    Every figure is printed beside a baseline measured in the same run (bare
    multiprocessing, raw ZeroMQ, other Modbus clients), so the ratio is
    comparable across machines. Takes a minute or two.

    \b
    Example:
      edgert bench --only core
      edgert bench --json > bench.json
    """
    logging.getLogger("edgert").setLevel(logging.CRITICAL)  # restarts are the point here
    results: dict[str, Any] = {}
    for name in only or SUITES:
        if not as_json:
            click.echo(f"running {name} ...", err=True)
        results[name] = _run_suite(name)
    if as_json:
        click.echo(json.dumps(results, indent=2, sort_keys=True))
        return
    for name, res in results.items():
        click.echo(f"\n== {name}")
        if "error" in res:
            click.echo(f"  {res['error']}")
            continue
        for line in _format(name, res).splitlines():
            click.echo(f"  {line}")
