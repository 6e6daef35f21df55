"""Modbus clients side by side at scale, and where the driver's CPU goes per poll.

`compare_clients()` polls N Modbus TCP devices (each at its own loopback
address, one simulator process serving them all) every `interval` with three
clients, one after the other, each in its own process and with its points kept
in memory: the edgert driver (its loop alone, no gateway around it), a bare
epoll loop in Python (the floor: prebuilt request, one struct call per answer)
and pymodbus's asyncio client. It gives each one's polls/s, CPU per poll and
lateness against each device's grid; the simulator's CPU is measured apart.
`profile_driver()` runs the driver's loop under cProfile (CPU time) and lists
the functions taking the most of it. The whole gateway, to NATS, is
`edgert.bench.modbus_scale`.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any

from edgert.bench.modbus_scale import REGISTERS, simulated_hosts
from edgert.testing import wait_for

__all__ = ["compare_clients", "profile_driver", "format_compare", "format_profile"]

SCALE_DEVICES = 500
SCALE_REGISTERS = REGISTERS


def _scale_config(where: list[tuple[str, int]], registers: int, interval: float) -> dict[str, Any]:
    regs = [{"name": f"r{a}", "address": a, "report": "always"} for a in range(registers)]
    devices = [
        {"name": f"d{i}", "unit": 1, "host": h, "tcp_port": p, "register": regs}
        for i, (h, p) in enumerate(where)
    ]
    return {"transport": "tcp", "timeout": 1.0, "poll_interval": interval, "device": devices}


def _cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _intervals(times: dict[str, list[float]], interval: float) -> dict[str, Any]:
    """Achieved poll intervals per device, from the times of its answers, and how late
    each answer came against the device's grid (slot k at `t0 + k * interval`, `t0`
    the device's earliest answer less its slot: its latency when nothing is late)."""
    gaps: list[float] = []
    lateness: list[float] = []
    missed = 0
    for ts in times.values():
        if len(ts) < 2:
            continue
        gaps += [b - a for a, b in zip(ts, ts[1:], strict=False)]
        slots = [round((t - ts[0]) / interval) for t in ts]
        missed += slots[-1] + 1 - len(set(slots))
        t0 = min(t - k * interval for t, k in zip(ts, slots, strict=True))
        lateness += [t - k * interval - t0 for t, k in zip(ts, slots, strict=True)]
    if not gaps:
        return {"polls_timed": 0}
    gaps.sort()
    lateness.sort()
    late = sum(1 for x in lateness if x > 0.1 * interval)

    def q(xs: list[float], f: float) -> float:
        return xs[min(len(xs) - 1, int(f * len(xs)))]

    return {
        "polls_timed": len(lateness),
        "interval_mean_s": sum(gaps) / len(gaps),
        "interval_p01_s": q(gaps, 0.01),
        "interval_p99_s": q(gaps, 0.99),
        "late_p50_ms": 1000 * q(lateness, 0.5),
        "late_p99_ms": 1000 * q(lateness, 0.99),
        "late_max_ms": 1000 * lateness[-1],
        "late_polls": late,  # answered more than 10 % of the interval after its slot
        "late_fraction": late / len(lateness),
        "missed_slots": missed,
    }


def _decoded(table: dict[str, Any]) -> Any:
    """The driver's config for `table`, its devices' register maps decoded once and
    shared (decoding 15,000 register tables one by one takes minutes on a loaded
    machine, and every device here has the same map)."""
    import dataclasses

    from edgert.config import decode as decode_config
    from edgert_drivers.modbus.config import ModbusConfig

    first, *rest = table["device"]
    cfg = decode_config(ModbusConfig, {**table, "device": [first]}, "bench")
    proto = cfg.device[0]
    cfg.device += [
        dataclasses.replace(proto, name=d["name"], host=d["host"], tcp_port=d["tcp_port"])
        for d in rest
    ]
    cfg.check()
    return cfg


def _running(cfg: Any) -> Any:
    """`run_driver` for a config already decoded."""
    from edgert.testing.harness import run_actor
    from edgert_drivers.modbus import ModbusDriver

    return run_actor(ModbusDriver(cfg, "bus"), cfg)


def _scale_driver_child(cfg: dict[str, Any], seconds: float, conn: Any) -> None:
    """In its own process: the driver polling every device; its figures to `conn`."""
    try:
        n_dev = len(cfg["device"])
        with _running(_decoded(cfg)) as run:
            wait_for(
                lambda: run.stats().get("devices_online", 0) == n_dev,
                60,
                "every device online",
                interval=0.1,
            )
            time.sleep(2 * cfg["poll_interval"])  # settled on its grid
            s0, n0, c0, t0 = run.stats(), len(run.ctx.points), _cpu_seconds(), time.monotonic()
            time.sleep(seconds)
            s1, n1, c1, t1 = run.stats(), len(run.ctx.points), _cpu_seconds(), time.monotonic()
            window = run.ctx.points[n0:n1]
        times: dict[str, list[float]] = {}
        for p in window:
            if p.type == "r0":
                times.setdefault(p.node, []).append(p.time / 1e9)
        elapsed = t1 - t0
        polls = s1["requests"] - s0["requests"]
        conn.send(
            {
                "client": "edgert driver",
                "polls_per_s": polls / elapsed,
                "points_per_s": (n1 - n0) / elapsed,
                "cpu_percent": 100 * (c1 - c0) / elapsed,
                "cpu_us_per_poll": 1e6 * (c1 - c0) / max(1, polls),
                "skipped": s1["skipped"] - s0["skipped"],
                "errors": s1["errors"] - s0["errors"],
                "connections": s1["connections"],
                **_intervals(times, cfg["poll_interval"]),
            }
        )
    except Exception as e:  # noqa: BLE001 - reported to the parent
        conn.send({"client": "edgert driver", "error": repr(e)})


def _scale_pymodbus_child(
    where: list[tuple[str, int]], registers: int, interval: float, seconds: float, conn: Any
) -> None:
    """The baseline: pymodbus's asyncio client, one per device, each polling on its
    own grid (`asyncio.sleep` to the next slot), the registers read and kept."""
    import asyncio
    import logging

    from pymodbus.client import AsyncModbusTcpClient

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    times: dict[int, list[float]] = {}
    counts = {"polls": 0, "errors": 0}
    values: dict[int, list[int]] = {}

    async def device(i: int, client: Any, start: float, until: float) -> None:
        k = 0
        while True:
            slot = start + k * interval
            if slot >= until:
                return
            await asyncio.sleep(max(0.0, slot - time.monotonic()))
            try:
                r = await client.read_holding_registers(0, count=registers, device_id=1)
            except Exception:  # noqa: BLE001 - counted; pymodbus reconnects by itself
                r = None
            counts["polls"] += 1
            if r is None or r.isError():
                counts["errors"] += 1
            else:
                values[i] = list(r.registers)
                times.setdefault(i, []).append(time.monotonic())
            k = max(k + 1, int((time.monotonic() - start) / interval) + 1)  # skip missed slots

    async def main() -> dict[str, Any]:
        clients = [AsyncModbusTcpClient(h, port=p, timeout=1.0, retries=0) for h, p in where]
        for _ in range(10):  # a loaded machine refuses some of 500 connections at once
            down = [c for c in clients if not c.connected]
            if not down:
                break
            await asyncio.gather(*(c.connect() for c in down))
        start = time.monotonic() + 0.2
        warm = start + 2 * interval
        tasks = [
            asyncio.create_task(device(i, c, start, warm + seconds)) for i, c in enumerate(clients)
        ]
        await asyncio.sleep(warm - time.monotonic())
        p0, c0, t0 = counts["polls"], _cpu_seconds(), time.monotonic()
        times.clear()
        await asyncio.sleep(seconds)
        p1, c1, t1 = counts["polls"], _cpu_seconds(), time.monotonic()
        await asyncio.gather(*tasks)
        for c in clients:
            c.close()
        elapsed = t1 - t0
        return {
            "client": "pymodbus asyncio",
            "polls_per_s": (p1 - p0) / elapsed,
            "points_per_s": (p1 - p0) * registers / elapsed,
            "cpu_percent": 100 * (c1 - c0) / elapsed,
            "cpu_us_per_poll": 1e6 * (c1 - c0) / max(1, p1 - p0),
            "errors": counts["errors"],
            "connections": len(clients),
            **_intervals({str(k): v for k, v in times.items()}, interval),
        }

    try:
        conn.send(asyncio.run(main()))
    except Exception as e:  # noqa: BLE001 - reported to the parent
        conn.send({"client": "pymodbus asyncio", "error": repr(e)})


def _scale_raw_child(
    where: list[tuple[str, int]], registers: int, interval: float, seconds: float, conn: Any
) -> None:
    """The floor: a bare epoll loop in Python, one socket per device, each polled on its
    own grid with a prebuilt request and its answer unpacked with one struct call."""
    import heapq
    import selectors
    import socket
    import struct

    try:
        sel = selectors.DefaultSelector()
        socks = []
        for h, p in where:
            s = socket.create_connection((h, p), timeout=10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, len(socks))
            socks.append(s)
        req = struct.pack(">HHHBBHH", 1, 0, 6, 1, 3, 0, registers)
        body = struct.Struct(f">{registers}H")
        start = time.monotonic() + 0.2
        warm = start + 2 * interval
        due = [(start, i, 0) for i in range(len(socks))]
        heapq.heapify(due)
        times: dict[str, list[float]] = {}
        values: list[Any] = [None] * len(socks)
        polls = 0
        c0 = t0 = 0.0
        p0 = 0
        end = warm + seconds
        while True:
            now = time.monotonic()
            if t0 == 0.0 and now >= warm:
                c0, t0, p0 = _cpu_seconds(), now, polls
                times.clear()
            if now >= end:
                break
            while due and due[0][0] <= now:
                _t, i, k = heapq.heappop(due)
                socks[i].send(req)
                polls += 1
                k = max(k + 1, int((now - start) / interval) + 1)
                heapq.heappush(due, (start + k * interval, i, k))
            wait = max(0.0, min(due[0][0], end) - time.monotonic())
            for key, _ev in sel.select(wait):
                i = key.data
                data = socks[i].recv(512)
                if len(data) >= 9 + 2 * registers:
                    values[i] = body.unpack_from(data, 9)
                    times.setdefault(str(i), []).append(time.monotonic())
        c1, t1 = _cpu_seconds(), time.monotonic()
        for s in socks:
            sel.unregister(s)
            s.close()
        sel.close()
        elapsed = t1 - t0
        conn.send(
            {
                "client": "bare epoll loop",
                "polls_per_s": (polls - p0) / elapsed,
                "points_per_s": (polls - p0) * registers / elapsed,
                "cpu_percent": 100 * (c1 - c0) / elapsed,
                "cpu_us_per_poll": 1e6 * (c1 - c0) / max(1, polls - p0),
                "connections": len(socks),
                **_intervals(times, interval),
            }
        )
    except Exception as e:  # noqa: BLE001 - reported to the parent
        conn.send({"client": "bare epoll loop", "error": repr(e)})


def _in_child(target: Any, *args: Any, timeout: float = 300.0) -> dict[str, Any]:
    mp = multiprocessing.get_context("spawn")
    ours, theirs = mp.Pipe()
    p = mp.Process(target=target, args=(*args, theirs))
    p.start()
    theirs.close()
    try:
        return ours.recv() if ours.poll(timeout) else {"error": "no answer"}
    except EOFError:
        return {"error": f"the process ended without figures (exit code {p.exitcode})"}
    finally:
        ours.close()
        p.join(30)
        if p.is_alive():
            p.kill()
            p.join()


def compare_clients(
    devices: int = SCALE_DEVICES,
    registers: int = SCALE_REGISTERS,
    interval: float = 1.0,
    seconds: float = 10.0,
    latency: float = 0.0,
) -> dict[str, Any]:
    """`devices` Modbus TCP devices at their own addresses, `registers` each every
    `interval` seconds: the driver (in its own process, points captured in memory,
    not sent on), a bare epoll loop (the floor for Python) and pymodbus's asyncio
    client, one after the other against the same simulator; the simulator's CPU
    is measured apart and excluded."""
    from edgert.bench.procfs import cpu_seconds, cpu_used

    out: dict[str, Any] = {
        "devices": devices,
        "registers_per_device": registers,
        "interval_s": interval,
        "latency_s": latency,
        "wanted_polls_per_s": devices / interval,
        "wanted_points_per_s": devices * registers / interval,
    }
    with simulated_hosts(devices, registers, latency) as (where, pids):
        rows = []
        for target, args in (
            (_scale_driver_child, (_scale_config(where, registers, interval), seconds)),
            (_scale_raw_child, (where, registers, interval, seconds)),
            (_scale_pymodbus_child, (where, registers, interval, seconds)),
        ):
            sim0, t0 = cpu_seconds(pids), time.monotonic()
            row = _in_child(target, *args)
            used = cpu_used(sim0, cpu_seconds(pids))
            row["simulators_cpu_percent"] = 100 * used / (time.monotonic() - t0)
            rows.append(row)
    out["clients"] = rows
    return out


def profile_driver(
    devices: int = 50, registers: int = SCALE_REGISTERS, interval: float = 0.1, seconds: float = 6.0
) -> dict[str, Any]:
    """Where the driver's CPU goes per poll: its loop run under cProfile (CPU time, not
    wall time, so other load on the machine does not count) against simulated TCP
    devices; points are counted, not kept. Gives the CPU per poll without the profiler
    too, and the functions taking the most of it."""
    import cProfile
    import pstats
    import threading

    from edgert.testing.harness import CapturedContext
    from edgert_drivers.modbus import ModbusDriver

    class Counting(CapturedContext):
        published = 0

        def publish(self, points: Any) -> None:
            self.published += len(points)

    def once(profiler: Any) -> tuple[float, int, int]:
        cfg = _decoded(_scale_config(where, registers, interval))
        actor = ModbusDriver(cfg, "bus")
        ctx = Counting(actor, name="bus", config=cfg)
        timer = threading.Timer(seconds, actor.stop)
        timer.start()
        c0 = time.process_time()
        if profiler is not None:
            profiler.enable()
        try:
            actor.run(ctx)
        finally:
            if profiler is not None:
                profiler.disable()
            timer.cancel()
            ctx._close()
        return time.process_time() - c0, ctx._extra.get("requests", 0), ctx.published

    with simulated_hosts(devices, registers, 0.0) as (where, _pids):
        cpu, polls, points = once(None)
        prof = cProfile.Profile(time.process_time)
        pcpu, ppolls, _ = once(prof)
    stats = pstats.Stats(prof)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    top = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:15]  # type: ignore[attr-defined]
    return {
        "devices": devices,
        "polls_per_s_wanted": devices / interval,
        "points_per_poll": points / max(1, polls),
        "cpu_us_per_poll": 1e6 * cpu / max(1, polls),
        "profiled_cpu_us_per_poll": 1e6 * pcpu / max(1, ppolls),
        "top": [
            {
                "function": f"{os.path.basename(f)}:{line}({name})",
                "calls_per_poll": v[1] / max(1, ppolls),
                "share": v[2] / total,
            }
            for (f, line, name), v in top
        ],
    }


def format_profile(res: dict[str, Any]) -> str:
    lines = [
        f"profile: {res['devices']} devices, {res['points_per_poll']:.0f} points a poll: "
        f"{res['cpu_us_per_poll']:.0f} us CPU a poll "
        f"({res['profiled_cpu_us_per_poll']:.0f} under the profiler)",
        f"  {'share':>6} {'calls/poll':>10}  function (own time)",
    ]
    for t in res["top"]:
        lines.append(f"  {100 * t['share']:5.1f}% {t['calls_per_poll']:10.1f}  {t['function']}")
    return "\n".join(lines)


def format_compare(res: dict[str, Any]) -> str:
    lines = [
        f"{res['devices']} TCP devices x {res['registers_per_device']} registers every "
        f"{res['interval_s']:g} s, device latency {1000 * res['latency_s']:g} ms "
        f"(wanted {res['wanted_polls_per_s']:.0f} polls/s, {res['wanted_points_per_s']:.0f} "
        "points/s)",
        f"{'client':18} {'polls/s':>8} {'points/s':>9} {'CPU %':>6} {'us/poll':>8} "
        f"{'interval':>9} {'late p50':>9} {'p99 ms':>7} {'>100ms':>7} {'missed':>7}",
    ]
    for r in res["clients"]:
        if "error" in r:
            lines.append(f"{r.get('client', '?'):18} {r['error']}")
            continue
        lines.append(
            f"{r['client']:18} {r['polls_per_s']:8.0f} {r['points_per_s']:9.0f} "
            f"{r['cpu_percent']:6.1f} {r['cpu_us_per_poll']:8.0f} "
            f"{r.get('interval_mean_s', 0):9.3f} {r.get('late_p50_ms', 0):9.1f} "
            f"{r.get('late_p99_ms', 0):7.1f} {100 * r.get('late_fraction', 0):6.2f}% "
            f"{r.get('missed_slots', 0):7}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys

    if "--compare" in sys.argv:
        lat = float(sys.argv[sys.argv.index("--latency") + 1]) if "--latency" in sys.argv else 0.0
        result = compare_clients(latency=lat)
        text = format_compare(result)
    else:
        result = profile_driver()
        text = format_profile(result)
    print(json.dumps(result, indent=2) if "--json" in sys.argv else text)
