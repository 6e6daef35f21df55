"""Benchmarks of the runtime core: restart latency, start-up time, memory per driver.

Each figure is measured beside a baseline run in the same process on the same
machine, so the ratio means something anywhere:

- restart: SIGKILL of a driver to the new process inside `run` (backoff_min = 0),
  beside a bare `multiprocessing` fork and spawn of an empty function (start to
  the function running);
- start-up: a gateway with 10 sim drivers, from `Runtime.run` to all running
  (the zygote's own start-up included) in a process of its own as `edgert run`
  runs it (its own zygote: it forks the drivers), the same with a zygote that is a new
  interpreter (what a process with threads gets), and 10 sim drivers added by
  a reload to a running gateway (the starts alone), beside 10 bare spawn and
  fork processes started together;
- memory: RSS and USS (private pages, /proc/PID/smaps_rollup) per driver
  process, beside an idle bare fork and spawn child;
- the demo gateway (configs/demo.toml, on a free port) run as `edgert run`: PSS
  summed over every one of its processes but nats-server (supervisor, bridge,
  drivers), then the USS of each of 5 sim
  drivers added by a reload and the PSS they add, beside a bare idle Python.

Every function returns plain dicts; `edgert.bench` prints them.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgert import Actor, Context, Stop
from edgert.bench.bare import idle, report_now
from edgert.config import GatewayConfig, loads
from edgert.testing import descendants, running_gateway, status, wait_for

__all__ = ["Probe", "restart_latency", "startup", "memory", "demo_memory", "run_all"]

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.toml"


@dataclass
class ProbeConfig:
    pass


class Probe(Actor):
    """An actor that reports the monotonic time it entered `run`, then idles."""

    Config = ProbeConfig

    def run(self, ctx: Context) -> None:
        ctx.report(entered_run=time.monotonic())
        while not isinstance(ctx.receive(), Stop):
            pass


def _config(d: str, drivers: str, **sup: Any) -> GatewayConfig:
    sup_toml = "".join(f"{k} = {v}\n" for k, v in sup.items())
    text = (
        f'[gateway]\nid = "bench"\nruntime_dir = "{d}/run"\ndata_dir = "{d}/data"\n'
        f"[nats]\nenabled = false\n[supervisor]\n{sup_toml}\n{drivers}"
    )
    Path(d, "bench.toml").write_text(text)  # on disk too, for a reload to re-read
    return loads(text, f"{d}/bench.toml")


def _gateway(cfg: GatewayConfig) -> Any:
    return running_gateway(cfg, log_level=logging.ERROR)


def _tempdir() -> tempfile.TemporaryDirectory[str]:
    """A short directory (ipc socket paths are limited to 107 bytes), removed after."""
    return tempfile.TemporaryDirectory(prefix="ert-bench-", ignore_cleanup_errors=True)


def _wait(cond: Any, timeout: float, what: str) -> Any:
    """`wait_for` polling fast: the figures are timestamps, but polling slowly adds load."""
    return wait_for(cond, timeout, what, interval=0.002)


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


# -- baselines -----------------------------------------------------------------------
def _bare_start(method: str, n: int) -> list[float]:
    """Start-to-running latency of `n` bare processes, one after another."""
    ctx = mp.get_context(method)
    out = []
    for _ in range(n):
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=report_now, args=(w,))
        t0 = time.monotonic()
        p.start()
        w.close()
        out.append(r.recv() - t0)
        p.join()
        r.close()
    return out


def _bare_parallel(method: str, n: int) -> float:
    """Seconds from starting `n` bare processes together to all of them running."""
    ctx = mp.get_context(method)
    pipes, procs = [], []
    t0 = time.monotonic()
    for _ in range(n):
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=report_now, args=(w,))
        p.start()
        w.close()
        pipes.append(r)
        procs.append(p)
    latest = max(r.recv() for r in pipes)
    for p, r in zip(procs, pipes, strict=True):
        p.join()
        r.close()
    return latest - t0


def _bare_memory(method: str) -> dict[str, float]:
    ctx = mp.get_context(method)
    r, w = ctx.Pipe()
    p = ctx.Process(target=idle, args=(w, w))
    p.start()
    try:
        pid = r.recv()
        return smaps(pid)
    finally:
        r.send("done")
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join()
        r.close()
        w.close()


def smaps(pid: int) -> dict[str, float]:
    """RSS, PSS and USS of a process in MB, from /proc/PID/smaps_rollup."""
    kb: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                kb[parts[0][:-1]] = int(parts[1])
    uss = kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)
    return {
        "rss_mb": kb.get("Rss", 0) / 1024,
        "pss_mb": kb.get("Pss", 0) / 1024,
        "uss_mb": uss / 1024,
    }


# -- edgert --------------------------------------------------------------------------
def restart_latency(rounds: int = 30) -> dict[str, Any]:
    """SIGKILL of a driver to its successor inside `run`, with backoff_min = 0."""
    drivers = '[[driver]]\nname = "probe"\ntype = "edgert.bench.core:Probe"\n'
    policy = dict(backoff_min=0, backoff_max=0, intensity=rounds * 10, period=1, healthy_after=0)
    lat: list[float] = []
    with _tempdir() as d, _gateway(cfg := _config(d, drivers, **policy)):

        def probe() -> dict[str, Any] | None:
            a = status(cfg)["by_name"]["probe"]
            return a if "entered_run" in a["stats"] else None

        a = _wait(probe, 30, "the probe running")
        for _ in range(rounds):
            pid = a["pid"]
            t0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            a = _wait(
                lambda pid=pid, t0=t0: (
                    (x := probe()) and x["pid"] != pid and x["stats"]["entered_run"] > t0 and x
                ),
                30,
                "the restarted probe",
            )
            lat.append(a["stats"]["entered_run"] - t0)
    fork = _bare_start("fork", rounds)
    spawn = _bare_start("spawn", max(3, rounds // 3))
    return {
        "edgert_p50_ms": 1000 * statistics.median(lat),
        "edgert_p95_ms": 1000 * _pct(lat, 0.95),
        "bare_fork_p50_ms": 1000 * statistics.median(fork),
        "bare_spawn_p50_ms": 1000 * statistics.median(spawn),
        "rounds": rounds,
    }


# `edgert run` without the command line: a process that runs one gateway in its main
# thread (so it is its own zygote), printing the monotonic time it entered `run`.
_RUN = (
    "import signal, sys, time\n"
    "from edgert.config import load\n"
    "from edgert.runtime import Runtime\n"
    "rt = Runtime(load(sys.argv[1]), log_level=40, fork_zygote=sys.argv[2] == 'fork')\n"
    "signal.signal(signal.SIGTERM, lambda *_: rt.stop())\n"
    "print(time.monotonic(), flush=True)\n"
    "rt.run()\n"
)


def startup(n: int = 10) -> dict[str, Any]:
    """A gateway of `n` sim drivers from `run` to all running; then their memory."""
    drivers = "".join(
        f'[[driver]]\nname = "sim{i}"\ntype = "sim"\n'
        f'[[driver.signal]]\nname = "v"\nshape = "sine"\nrate = 10.0\n'
        for i in range(n)
    )
    with _tempdir() as d:
        cfg = _config(d, drivers)
        forked, mem = _cold_start(cfg, n, "fork")
        spawned, _ = _cold_start(cfg, n, "spawn")
    return {
        "drivers": n,
        "edgert_s": forked,
        "edgert_spawned_zygote_s": spawned,
        "edgert_warm_s": _warm_startup(n),
        "bare_fork_s": _bare_parallel("fork", n),
        "bare_spawn_s": _bare_parallel("spawn", n),
        "memory": {
            "edgert_rss_mb": statistics.mean(m["rss_mb"] for m in mem),
            "edgert_uss_mb": statistics.mean(m["uss_mb"] for m in mem),
            "edgert_pss_mb": statistics.mean(m["pss_mb"] for m in mem),
        },
    }


def _cold_start(cfg: GatewayConfig, n: int, zygote: str) -> tuple[float, list[dict[str, float]]]:
    """Seconds from `Runtime.run` to `n` drivers running, in a process of its own as
    `edgert run` runs it (`zygote` "fork": its own zygote; "spawn": a new
    interpreter, as in a process with threads); then the drivers' memory."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN, str(cfg.path), zygote],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        t0 = float(proc.stdout.readline())

        def all_running() -> dict[str, Any] | None:
            try:
                s = status(cfg)
            except Exception:  # noqa: BLE001 - not listening yet
                return None
            ok = len(s["actors"]) == n and all(a["state"] == "running" for a in s["actors"])
            return s if ok else None

        s = _wait(all_running, 60, f"{n} drivers running")
        elapsed = time.monotonic() - t0
        mem = [smaps(a["pid"]) for a in s["actors"]]
    finally:
        _end(proc)
    return elapsed, mem


def _warm_startup(n: int) -> float:
    """Seconds from a reload that adds `n` sim drivers to a running gateway to all running:
    the starts alone, without the zygote's own start-up (its code is loaded already)."""
    sim = '[[driver]]\nname = "{}"\ntype = "sim"\n[[driver.signal]]\nname = "v"\nrate = 10.0\n'
    with _tempdir() as d:
        cfg = _config(d, sim.format("first"))
        with _gateway(cfg) as rt:
            _wait(lambda: status(cfg)["by_name"]["first"]["state"] == "running", 60, "first")
            text = Path(cfg.path).read_text()
            Path(cfg.path).write_text(text + "".join(sim.format(f"sim{i}") for i in range(n)))
            t0 = time.monotonic()
            rt.reload()

            def all_running() -> bool:
                s = status(cfg)["actors"]
                return len(s) == n + 1 and all(a["state"] == "running" for a in s)

            _wait(all_running, 60, f"{n} more drivers running")
            return time.monotonic() - t0


def memory() -> dict[str, Any]:
    """Idle bare children, for the memory baseline."""
    fork = _bare_memory("fork")
    spawn = _bare_memory("spawn")
    return {
        "bare_fork_rss_mb": fork["rss_mb"],
        "bare_fork_uss_mb": fork["uss_mb"],
        "bare_spawn_rss_mb": spawn["rss_mb"],
        "bare_spawn_uss_mb": spawn["uss_mb"],
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _gateway_pss(root: int) -> tuple[float, dict[int, dict[str, float]]]:
    """PSS summed over `root` and its descendants, nats-server left out."""
    per: dict[int, dict[str, float]] = {}
    for pid in {root} | descendants(root):
        if _comm(pid) == "nats-server":
            continue
        try:
            per[pid] = smaps(pid)
        except OSError:
            continue
    return sum(m["pss_mb"] for m in per.values()), per


def _bare_python_pss() -> float:
    p = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        time.sleep(0.5)
        return smaps(p.pid)["pss_mb"]
    finally:
        p.communicate(b"")


def demo_memory(extra: int = 5, settle: float = 3.0, demo: Path = DEMO) -> dict[str, Any]:
    """The demo gateway's memory as `edgert run` runs it; then `extra` more sim drivers."""
    from edgert.bench import bytecode
    from edgert.control import request

    caches = bytecode.ensure()  # as installed: no process compiles edgert's modules

    with _tempdir() as d:
        text = demo.read_text()
        text = re.sub(
            r"\[gateway\]\nid = \"[^\"]*\"",
            f'[gateway]\nid = "benchdemo"\nruntime_dir = "{d}/run"\ndata_dir = "{d}/data"',
            text,
        )
        text = text.replace("nats://127.0.0.1:4222", f"nats://127.0.0.1:{_free_port()}")
        path = Path(d) / "demo.toml"
        path.write_text(text)
        rdir = Path(d) / "run"
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgert", "run", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def running(n: int) -> dict[str, Any] | None:
            s = request(rdir, "status")["status"]
            ok = len(s["actors"]) == n and all(a["state"] == "running" for a in s["actors"])
            return s if ok else None

        try:
            s = _wait(lambda: running(len(_actors(text))), 60, "the demo running")
            time.sleep(settle)  # steady state: buffers allocated, first status sent
            total, per = _gateway_pss(proc.pid)
            drivers = "".join(
                f'\n[[driver]]\nname = "extra{i}"\ntype = "sim"\n'
                f'[[driver.signal]]\nname = "v"\nshape = "sine"\nrate = 1.0\n'
                for i in range(extra)
            )
            path.write_text(text + drivers)
            request(rdir, "reload")
            s = _wait(lambda: running(len(_actors(text)) + extra), 60, "the extra drivers")
            time.sleep(settle)
            total2, per2 = _gateway_pss(proc.pid)
            new = [a["pid"] for a in s["actors"] if a["name"].startswith("extra")]
            uss = [per2[p]["uss_mb"] for p in new if p in per2]
        finally:
            _end(proc)
    return {
        "demo_pss_mb": total,
        "demo_processes": len(per),
        "supervisor_pss_mb": per.get(proc.pid, {}).get("pss_mb", 0.0),
        "supervisor_uss_mb": per.get(proc.pid, {}).get("uss_mb", 0.0),
        "extra_driver_uss_mb": statistics.mean(uss) if uss else 0.0,
        "extra_driver_pss_mb": (total2 - total) / extra,
        "bare_python_pss_mb": _bare_python_pss(),
        "bytecode_caches": caches,
    }


def _actors(text: str) -> list[str]:
    """The actor names a config will run (drivers, the bridge, the embedded server)."""
    names = re.findall(r'^\[\[driver\]\]\s*\nname = "([^"]+)"', text, re.M)
    names.append("bridge")
    if re.search(r"^embedded = true", text, re.M):
        names.append("nats")
    return names


def run_all() -> dict[str, Any]:
    st = startup()
    mem = st.pop("memory") | memory() | demo_memory()
    return {"startup": st, "restart": restart_latency(), "memory": mem}


def _end(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM a gateway started for a measure; SIGKILL it if it has not gone in 30 s."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
