"""The benchmark table: each figure, its same-run baseline, their ratio, the target, a verdict.

`rows(suite, result)` turns one suite's result dict into `Line`s. A `Row`
names where in the result edgert's figure and the baseline's are, their unit,
what the baseline is, and the target, written as one of:

- `"ratio <= 2"`: edgert's figure divided by the baseline's;
- `"< 10"`: edgert's figure itself (in the row's unit);
- `"over < 1"`: edgert's figure minus the baseline's (in the row's unit);
- `""`: no target, the figure is shown for understanding.

A row whose figure the result lacks (a bridge that does not report it) is
shown as "n/a", never guessed; a target not met reads FAIL.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Row", "Line", "rows", "format_rows", "SUITE_ROWS"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
    "=": operator.eq,
}


@dataclass(frozen=True)
class Row:
    metric: str
    mine: str  # dotted path into the result
    base: str = ""  # dotted path of the baseline's figure, or ""
    unit: str = ""
    label: str = ""  # what the baseline is
    target: str = ""


@dataclass(frozen=True)
class Line:
    metric: str
    edgert: str
    baseline: str
    ratio: str
    target: str
    verdict: str  # "pass", "FAIL", "n/a" or ""


def rows(suite: str, result: dict[str, Any]) -> list[Line]:
    """The table lines of one suite's result (none for a suite without rows)."""
    make = SUITE_ROWS.get(suite)
    return [_line(r, result) for r in make(result)] if make else []


def format_rows(lines: list[Line]) -> str:
    """Lines as an aligned text table with a header."""
    head = Line("metric", "edgert", "baseline", "ratio", "target", "")
    cells = [list(vars(x).values()) for x in [head, *lines]]
    w = [max(len(c[i]) for c in cells) for i in range(6)]
    out = []
    for c in cells:
        right = [c[1].rjust(w[1]), c[2].ljust(w[2]), c[3].rjust(w[3]), c[4].ljust(w[4])]
        out.append("  ".join([c[0].ljust(w[0]), *right, c[5]]).rstrip())
    return "\n".join(out)


def _line(row: Row, result: dict[str, Any]) -> Line:
    m = _dig(result, row.mine)
    b = _dig(result, row.base) if row.base else None
    unit = f" {row.unit}" if row.unit else ""
    ratio = m / b if _num(m) and _num(b) and b else None
    mine = "n/a" if not _num(m) else f"{_fmt(m)}{unit}"
    base = "" if not row.base else "n/a" if not _num(b) else f"{_fmt(b)}{unit} ({row.label})"
    target, verdict = _judge(row, m, b, ratio)
    return Line(row.metric, mine, base, "" if ratio is None else f"{ratio:.2f}", target, verdict)


def _judge(row: Row, m: Any, b: Any, ratio: float | None) -> tuple[str, str]:
    if not row.target:
        return "", ""
    words = row.target.split()
    kind = words[0] if words[0] in ("ratio", "over") else "value"
    op, bound = words[-2], float(words[-1])
    if kind == "ratio":
        text, got = f"ratio {op} {words[-1]}", ratio
    elif kind == "over":
        text = f"{op} baseline + {words[-1]}{' ' + row.unit if row.unit else ''}"
        got = m - b if _num(m) and _num(b) else None
    else:
        text, got = f"{op} {words[-1]}{' ' + row.unit if row.unit else ''}", m if _num(m) else None
    if got is None:
        return text, "n/a"
    return text, "pass" if _OPS[op](got, bound) else "FAIL"


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _fmt(v: float) -> str:
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _dig(d: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


# --- the rows of each suite ---------------------------------------------------------


def _core(_: dict[str, Any]) -> list[Row]:
    return [
        Row(
            "restart p50 (SIGKILL to run)",
            "restart.edgert_p50_ms",
            "restart.bare_fork_p50_ms",
            "ms",
            "bare fork",
            "ratio <= 4",
        ),
        Row(
            "restart p50, spawn baseline",
            "restart.edgert_p50_ms",
            "restart.bare_spawn_p50_ms",
            "ms",
            "bare spawn",
        ),
        Row("restart p95", "restart.edgert_p95_ms", unit="ms"),
        Row(
            "10 drivers to running",
            "startup.edgert_s",
            "startup.bare_fork_s",
            "s",
            "10 bare forks",
            "ratio <= 4",
        ),
        Row(
            "10 drivers, spawn baseline",
            "startup.edgert_s",
            "startup.bare_spawn_s",
            "s",
            "10 bare spawns",
        ),
        Row(
            "10 drivers, new-interpreter zygote",
            "startup.edgert_spawned_zygote_s",
            "startup.bare_fork_s",
            "s",
            "10 bare forks",
        ),
        Row(
            "10 drivers added by a reload",
            "startup.edgert_warm_s",
            "startup.bare_fork_s",
            "s",
            "10 bare forks",
        ),
        Row(
            "USS per driver",
            "memory.edgert_uss_mb",
            "memory.bare_spawn_uss_mb",
            "MB",
            "bare spawn",
            "<= 4",
        ),
        Row(
            "RSS per driver", "memory.edgert_rss_mb", "memory.bare_spawn_rss_mb", "MB", "bare spawn"
        ),
        Row(
            "demo gateway PSS (no nats-server)",
            "memory.demo_pss_mb",
            "memory.bare_python_pss_mb",
            "MB",
            "one bare Python",
            "<= 40",
        ),
        Row("  of which the supervisor", "memory.supervisor_pss_mb", unit="MB"),
        Row("USS per extra demo driver", "memory.extra_driver_uss_mb", unit="MB", target="<= 4"),
        Row("PSS per extra demo driver", "memory.extra_driver_pss_mb", unit="MB"),
    ]


def _points(_: dict[str, Any]) -> list[Row]:
    zmq = "zmq PUSH/PULL"
    return [
        Row(
            "throughput, 1 driver to NATS",
            "throughput.edgert_points_s",
            "throughput.baseline_zmq_points_s",
            "points/s",
            zmq,
            "ratio >= 0.7",
        ),
        Row(
            "throughput, JetStream",
            "throughput_jetstream.edgert_points_s",
            "throughput_jetstream.baseline_zmq_points_s",
            "points/s",
            zmq,
            "ratio >= 0.7",
        ),
        Row(
            "latency p50 at 1,000 points/s",
            "latency.edgert_p50_ms",
            "latency.baseline_p50_ms",
            "ms",
            "zmq + NATS",
            "over < 1",
        ),
        Row(
            "latency p99 at 1,000 points/s",
            "latency.edgert_p99_ms",
            "latency.baseline_p99_ms",
            "ms",
            "zmq + NATS",
            "over < 5",
        ),
        Row(
            "disk writes per 1,000 points, NATS up",
            "latency.bridge_write_bytes_per_1000",
            "spool.payload_bytes_per_1000",
            "B",
            "payload",
        ),
    ]


def _efficiency(result: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for k in result:
        if not isinstance(result[k], dict) or "edgert" not in result[k]:
            continue
        e, r = f"{k}.edgert", f"{k}.raw"
        out += [
            Row(
                f"{k}: delivered",
                f"{e}.points_s",
                f"{k}.offered_points_s",
                "points/s",
                "produced",
                "ratio >= 0.98",
            ),
            Row(
                f"{k}: spool writes, NATS up",
                f"{e}.spool_written_batches",
                unit="batches",
                target="= 0",
            ),
            Row(f"{k}: gateway CPU", f"{e}.cpu_pct", f"{r}.cpu_pct", "% core", "raw", "ratio <= 2"),
            Row(
                f"{k}: CPU per point", f"{e}.cpu_us_per_point", f"{r}.cpu_us_per_point", "µs", "raw"
            ),
            Row(f"{k}: latency p99", f"{e}.p99_ms", f"{r}.p99_ms", "ms", "raw", "< 10"),
        ]
    return out


def _overload(result: dict[str, Any]) -> list[Row]:
    first = result.get("first", 1)
    plural = lambda n: f"{n} driver" if int(n) == 1 else f"{n} drivers"  # noqa: E731
    out: list[Row] = []
    for n in sorted(result.get("drivers", {}), key=int):
        d = f"drivers.{n}"
        of = result["drivers"][n].get("spool_share_of")
        out += [
            Row(
                f"{plural(n)}: delivered",
                f"{d}.points_s",
                f"drivers.{first}.points_s",
                "points/s",
                plural(first),
                "ratio >= 0.8" if int(n) >= 8 else "",
            ),
            Row(
                f"{plural(n)}: spool writes, NATS up",
                f"{d}.spool_share_pct",
                unit=f"% of {of}" if of else "%",
                target="<= 5",
            ),
            Row(f"{plural(n)}: dropped at source", f"{d}.dropped_at_source_s", unit="points/s"),
            Row(
                f"{plural(n)}: bridge points per CPU-s",
                f"{d}.bridge.points_per_cpu_s",
                "raw_forwarder.points_per_cpu_s",
                "points",
                "raw forwarder",
                "ratio >= 0.5",
            ),
        ]
    return out


def _outage(_: dict[str, Any]) -> list[Row]:
    return [
        Row(
            "bytes written per point while down",
            "bridge_written_bytes_per_point",
            "payload_bytes_per_point",
            "B",
            "msgpack payload",
            "ratio <= 1.3",
        ),
        Row(
            "spool payload per point",
            "spool_payload_bytes_per_point",
            "payload_bytes_per_point",
            "B",
            "msgpack payload",
        ),
        Row("bridge CPU while spooling", "bridge_cpu_pct_spooling", unit="% core", target="<= 15"),
        Row("first point after NATS back", "first_point_after_s", unit="s", target="<= 1"),
        Row(
            "drain rate",
            "drain_points_s",
            "rate_points_s",
            "points/s",
            "production",
            "ratio >= 5",
        ),
        Row("points lost", "lost", unit="points", target="= 0"),
        Row("duplicates", "duplicates", unit="points"),
    ]


def _fleet(res: dict[str, Any]) -> list[Row]:
    n = res.get("gateways", "N")
    out = [
        Row(
            f"fleet ls, all {n} answered",
            "ls.all_answers_s",
            "ls.ping_all_s",
            "s",
            "$SRV.PING to all",
            "< 2",
        ),
        Row("gateways answering fleet ls", "ls.answered", target=f"= {n}"),
        Row("edgert fleet ls command, wall", "ls.cli_s", unit="s"),
        Row("gateways the command listed", "ls.cli_listed", target=f"= {n}"),
        Row("CPU at idle, all gateways", "idle.cpu_pct", "idle.cluster_cpu_pct", "%", "cluster"),
        Row("CPU at idle, per gateway", "idle.cpu_pct_per_gateway", unit="% of a core"),
        Row(
            "memory (PSS), all gateways", "idle.pss_mb", "idle.cluster_rss_mb", "MB", "cluster RSS"
        ),
        Row("memory (PSS), per gateway", "idle.pss_mb_per_gateway", unit="MB"),
        Row("node killed: all publishing again", "node_kill.all_back_s", unit="s"),
        Row("node killed: all in fleet ls again", "node_kill.services_back_s", unit="s"),
        Row("node killed: gateways reconnected", "node_kill.gateways_reconnected"),
        Row("node killed: points lost", "node_kill.lost", target="= 0"),
        Row("node killed: duplicates stored", "node_kill.duplicates", target="= 0"),
        Row("node killed: message ids stored twice", "node_kill.ids_twice", target="= 0"),
    ]
    if isinstance(res.get("push"), dict):
        out += [
            Row("push to all, all applied", "push.all_applied_s", unit="s", target="< 60"),
            Row("push: put to applied, median gateway", "push.median_applied_s", unit="s"),
            Row("push: put to applied, slowest gateway", "push.slowest_applied_s", unit="s"),
            Row("gateways that applied", "push.applied", target=f"= {n}"),
        ]
    return out


SUITE_ROWS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "core": _core,
    "points": _points,
    "efficiency": _efficiency,
    "overload": _overload,
    "outage": _outage,
    "fleet": _fleet,
}
