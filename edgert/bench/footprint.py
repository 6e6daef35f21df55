"""The footprint of a gateway on Pi-class hardware: disk, memory, idle CPU, cold start.

Measured the way a small device is judged, on three gateways each run as
`edgert run` in a child process (`GatewayProcess`):

- `demo`: configs/demo.toml (two sim drivers, its own nats-server, JetStream);
- `ten_drivers`: 10 sim drivers, each polling one value once a second, into
  an external nats-server;
- `modbus`: one Modbus RTU driver polling 10 registers of a simulated device
  (`edgert sim modbus` on a pseudo-terminal) once a second;
- `managed`: one sim driver with `[fleet] enabled = true`, so the gateway has
  its fleet actor (the micro service and the KV watch): its row of PSS by
  process shows what the fleet actor costs beside the bridge.

Their runtime directories are on a tmpfs when the machine has one, as they
are deployed (`/run`): the drivers' outbox ring files live there. edgert's
modules have their bytecode caches, as installed (`edgert.bench.bytecode`).

For each: cold start (the `edgert run` process spawned to every actor running,
interpreter start-up and imports included), then after a settling pause over
an idle window: CPU of every gateway process summed from /proc (as % of one
core; each thread's time on a CPU to the nanosecond, from its schedstat), its
wake-ups per second by process (context switches over all its threads: what
idle CPU is made of on a small device), bytes they wrote to disk
(/proc/PID/io `write_bytes`; nats-server's JetStream store is counted apart:
it holds the points themselves), and PSS
summed over every gateway process (shared pages split between the processes
that share them, so the sum is what the gateway costs the machine), with the
PSS of each kind of process and its private pages (USS) by kind of mapping:
the C heap, anonymous mappings (Python's object arenas), the libraries'
writable data. Most of a forked process's private pages are copies of pages it
shared with its parent, made when it wrote to them (reference counts,
allocations into free slots). The part of the PSS that is library code depends
on how many other Python processes the machine runs (they share it), so it is
given apart. Disk: the installed size of edgert and every
distribution it depends on, and of the nats-server binary.

`edgert bench --suite footprint` prints it; README's footprint table comes from it.
"""

from __future__ import annotations

import os
import re
import time
from contextlib import ExitStack
from importlib import metadata
from typing import Any

from edgert.bench.core import DEMO, _comm, _free_port, smaps
from edgert.bench.gateway import GatewayProcess, config_text
from edgert.bench.procfs import cpu_used, io_counters, run_seconds, wakeups
from edgert.bench.workdir import runtime_dir, workdir

__all__ = ["footprint", "run_all", "format_table", "installed_size"]

SETTLE = 5.0  # seconds after READY before the idle window
WINDOW = 20.0  # seconds of idle measured
ROWS = ("demo", "ten_drivers", "modbus", "managed")


def installed_size(dist: str = "edgert") -> dict[str, Any]:
    """Bytes on disk of `dist` and of every distribution it requires (not extras)."""
    seen: dict[str, int] = {}
    todo = [dist]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            d = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        size = 0
        for f in d.files or []:
            try:
                size += f.locate().stat().st_size
            except OSError:
                pass
        seen[key] = size
        for req in d.requires or []:
            if "extra ==" in req:
                continue
            todo.append(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0])
    return {
        "total_mb": sum(seen.values()) / 2**20,
        "by_dist_mb": {k: v / 2**20 for k, v in seen.items()},
    }


def _nats_server_mb() -> float | None:
    from edgert.natsserver import find_nats_server

    try:
        return os.stat(find_nats_server()).st_size / 2**20
    except (FileNotFoundError, OSError):
        return None


def private_pages(pid: int) -> dict[str, float]:
    """A process's private memory (MB) from /proc/PID/smaps, by kind of mapping: `heap`
    (the C heap: malloc), `anon` (anonymous mappings: Python's object arenas, large
    allocations, thread stacks and malloc arenas), `stack`, `libraries` (pages of the
    interpreter and the shared libraries no other process maps: their writable data,
    copied when written, and code only this process uses), `files`
    (other mapped files: ring files, the spool's shared memory); with `uss` (all of it)
    and `pss_file` (this process's share of every file-backed page: library code, which
    every Python process of the machine shares, so it depends on what else runs)."""
    kb: dict[str, int] = {"heap": 0, "anon": 0, "stack": 0, "libraries": 0, "files": 0}
    pss_file = 0
    kind = "anon"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(maxsplit=6)
            if "-" in first[0] and len(first) >= 5 and ":" in first[3]:  # a mapping's header
                name = first[5].strip() if len(first) > 5 else ""
                if name == "[heap]":
                    kind = "heap"
                elif name.startswith("[stack"):
                    kind = "stack"
                elif not name or name.startswith("["):
                    kind = "anon"
                elif ".so" in name or name.endswith("python3") or "/python" in name:
                    kind = "libraries"
                else:
                    kind = "files"
            elif first[0] in ("Private_Clean:", "Private_Dirty:"):
                kb[kind] += int(first[1])
    with open(f"/proc/{pid}/smaps_rollup") as f:  # per mapping, smaps has no Pss_File
        for line in f:
            if line.startswith("Pss_File:"):
                pss_file = int(line.split()[1])
    out = {k: v / 1024 for k, v in kb.items()}
    out["uss"] = sum(kb.values()) / 1024
    out["pss_file"] = pss_file / 1024
    return out


def _role(pid: int, by_pid: dict[int, str], root: int) -> str:
    if pid == root:
        return "supervisor"
    comm = _comm(pid)
    if comm == "nats-server":  # the embedded one is an actor of the gateway, by its pid
        return comm
    if pid in by_pid:
        return by_pid[pid]
    return "zygote" if comm.startswith("python") else comm


def measure(gw: GatewayProcess, settle: float = SETTLE, window: float = WINDOW) -> dict[str, Any]:
    """Cold start, then idle CPU, disk writes and PSS of a started `GatewayProcess`."""
    t0 = time.monotonic()
    with gw:
        snap = gw.wait_running(120)
        cold = time.monotonic() - t0
        time.sleep(settle)
        assert gw.proc is not None
        root = gw.proc.pid
        by_pid = {a["pid"]: a["name"] for a in snap["actors"] if a["pid"]}
        pids = gw.pids()
        cpu0 = run_seconds(pids)
        wake0 = {p: wakeups(p) for p in pids}
        io0 = {p: io_counters(p).get("write_bytes", 0) for p in pids}
        t1 = time.monotonic()
        time.sleep(window)
        pids = gw.pids()
        took = time.monotonic() - t1
        cpu1 = run_seconds(pids)
        wake1 = {p: wakeups(p) for p in pids}
        roles = {p: _role(p, by_pid, root) for p in pids}
        server = {p for p, r in roles.items() if r == "nats-server"}
        ours = [p for p in pids if p not in server]
        cpu = cpu_used({p: cpu0.get(p, 0.0) for p in ours}, {p: cpu1[p] for p in ours if p in cpu1})
        cpu_by: dict[str, float] = {}
        wakes_by: dict[str, float] = {}
        for p in ours:
            if p in cpu1:
                used = 100 * (cpu1[p] - cpu0.get(p, 0.0)) / took
                cpu_by[roles[p]] = round(cpu_by.get(roles[p], 0.0) + used, 2)
                woke = max(0, wake1.get(p, 0) - wake0.get(p, 0)) / took
                wakes_by[roles[p]] = round(wakes_by.get(roles[p], 0.0) + woke, 1)
        writes = sum(io_counters(p).get("write_bytes", 0) - io0.get(p, 0) for p in ours)
        server_writes = sum(io_counters(p).get("write_bytes", 0) - io0.get(p, 0) for p in server)
        pss: dict[str, float] = {}
        private: dict[str, dict[str, float]] = {}
        for p in pids:
            try:
                m = smaps(p)["pss_mb"]
                kinds = private_pages(p)
            except OSError:
                continue
            pss[roles[p]] = pss.get(roles[p], 0.0) + m
            mine = private.setdefault(roles[p], {})
            for k, v in kinds.items():
                mine[k] = mine.get(k, 0.0) + v
        gw.status()  # still running: the figures are of a live gateway
    total = sum(v for k, v in pss.items() if k != "nats-server")
    return {
        "cold_start_s": round(cold, 3),
        "idle_cpu_pct": round(100 * cpu / took, 2),
        "idle_writes_kb": round(writes / 1024, 1),
        "nats_server_writes_kb": round(server_writes / 1024, 1) if server else None,
        "pss_mb": round(total, 1),
        "nats_server_pss_mb": round(pss["nats-server"], 1) if "nats-server" in pss else None,
        "processes": len(ours),
        "pss_by_process_mb": {k: round(v, 1) for k, v in sorted(pss.items())},
        # PSS of file-backed pages (library code: shared with every other Python process
        # of the machine, so this part of the sum falls as more of them run)
        "pss_file_mb": round(
            sum(v["pss_file"] for k, v in private.items() if k != "nats-server"), 1
        ),
        "private_by_process_mb": {
            k: {n: round(x, 2) for n, x in v.items() if n != "pss_file"}
            for k, v in sorted(private.items())
            if k != "nats-server"
        },
        "idle_cpu_pct_by_process": dict(sorted(cpu_by.items())),
        "idle_wakeups_per_s": round(sum(wakes_by.values()), 1),
        "idle_wakeups_per_s_by_process": dict(sorted(wakes_by.items())),
    }


def _demo_text(d: str, run: str | None = None) -> str:
    text = DEMO.read_text()
    text = re.sub(
        r"\[gateway\]\nid = \"[^\"]*\"",
        f'[gateway]\nid = "footdemo"\nruntime_dir = "{run or d + "/run"}"\ndata_dir = "{d}/data"',
        text,
    )
    return text.replace("nats://127.0.0.1:4222", f"nats://127.0.0.1:{_free_port()}")


def _ten(d: str, url: str, run: str | None = None) -> str:
    drivers = "".join(
        f'[[driver]]\nname = "poll{i}"\ntype = "sim"\n'
        f'[[driver.signal]]\nname = "v"\nshape = "sine"\nrate = 1.0\n'
        for i in range(10)
    )
    return config_text(d, url, drivers, gateway_id="foot10", spool_max_bytes=64 << 20, run=run)


def _modbus(d: str, url: str, port: str, run: str | None = None) -> str:
    from edgert.bench.modbus import BAUD, REGISTERS

    regs = "".join(
        f'[[driver.device.register]]\nname = "r{a}"\ntable = "holding"\naddress = {a}\n'
        f'type = "uint16"\nreport = "always"\n'
        for a in range(REGISTERS)
    )
    driver = (
        f'[[driver]]\nname = "rs485"\ntype = "modbus"\ntransport = "rtu"\nport = "{port}"\n'
        f"baudrate = {BAUD}\npoll_interval = 1.0\n"
        f'[[driver.device]]\nname = "meter"\nunit = 1\n{regs}'
    )
    return config_text(d, url, driver, gateway_id="footmb", spool_max_bytes=64 << 20, run=run)


def _managed(d: str, url: str) -> str:
    driver = (
        '[[driver]]\nname = "gen"\ntype = "sim"\n'
        '[[driver.signal]]\nname = "v"\nshape = "sine"\nrate = 1.0\n'
    )
    text = config_text(d, url, driver, gateway_id="footfleet", spool_max_bytes=64 << 20)
    return text + "[fleet]\nenabled = true\n"


def footprint(settle: float = SETTLE, window: float = WINDOW) -> dict[str, Any]:
    from edgert.bench import bytecode
    from edgert.bench.modbus import simulated_line

    # as installed: no process compiles edgert's modules (see `edgert.bench.bytecode`)
    out: dict[str, Any] = {"window_s": window, "bytecode_caches": bytecode.ensure()}
    with workdir() as (d, srv), ExitStack() as stack:  # runtime dirs on a tmpfs, as deployed
        run = stack.enter_context(runtime_dir())
        out["demo"] = measure(
            GatewayProcess(_demo_text(f"{d}/demo", f"{run}/demo"), f"{d}/demo"), settle, window
        )
        out["ten_drivers"] = measure(
            GatewayProcess(_ten(f"{d}/ten", srv.url, f"{run}/ten"), f"{d}/ten"), settle, window
        )
        out["managed"] = measure(
            GatewayProcess(_managed(f"{d}/fleet", srv.url), f"{d}/fleet"), settle, window
        )
        port = stack.enter_context(simulated_line())
        out["modbus"] = measure(
            GatewayProcess(_modbus(f"{d}/mb", srv.url, port, f"{run}/mb"), f"{d}/mb"),
            settle,
            window,
        )
    out["disk"] = installed_size() | {"nats_server_mb": _nats_server_mb()}
    return out


def run_all() -> dict[str, Any]:
    return footprint()


def format_table(res: dict[str, Any]) -> str:
    from edgert.table import render

    rows = []
    for name in ROWS:
        r = res.get(name)
        if not r:
            continue
        server = r["nats_server_pss_mb"]
        rows.append(
            (
                name,
                r["processes"],
                f"{r['pss_mb']:.1f}" + (f" (+{server:.1f} nats-server)" if server else ""),
                f"{r['idle_cpu_pct']:.2f}",
                f"{r['idle_writes_kb']:.1f}",
                f"{r['cold_start_s']:.2f}",
            )
        )
    headers = ("GATEWAY", "PROCESSES", "PSS MB", "IDLE CPU %", "WRITES KB", "COLD START S")
    text = render(headers, rows, tty=False)
    disk = res.get("disk", {})
    if disk:
        ns = disk.get("nats_server_mb")
        text += f"\ninstalled: edgert and its dependencies {disk['total_mb']:.1f} MB" + (
            f", nats-server {ns:.1f} MB" if ns else ""
        )
    if res.get("bytecode_caches"):
        text += f"\nedgert's bytecode caches: {res['bytecode_caches']}"
    per = {n: res[n]["pss_by_process_mb"] for n in ROWS if n in res}
    for n, p in per.items():
        text += f"\n{n} PSS by process (MB): " + ", ".join(f"{k} {v}" for k, v in p.items())
        priv = res[n].get("private_by_process_mb", {})
        if priv:
            text += f"\n{n} private MB by process (USS: heap, anon, libraries): " + ", ".join(
                f"{k} {v['uss']:.1f} ({v['heap']:.1f}, {v['anon']:.1f}, {v['libraries']:.1f})"
                for k, v in priv.items()
            )
            text += f"; library code's share {res[n].get('pss_file_mb', 0.0):.1f}"
        cpu = res[n].get("idle_cpu_pct_by_process", {})
        text += f"\n{n} idle CPU % by process: " + ", ".join(f"{k} {v}" for k, v in cpu.items())
        wakes = res[n].get("idle_wakeups_per_s_by_process", {})
        if wakes:
            text += f"\n{n} idle wake-ups/s by process: " + ", ".join(
                f"{k} {v}" for k, v in wakes.items()
            )
    return text + f"\n(idle window {res.get('window_s', WINDOW):g} s)"
