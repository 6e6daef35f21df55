"""Modbus at scale: N TCP devices x 30 registers every second, through a whole gateway to NATS.

EMQ Neuron's published benchmark polls 500 Modbus TCP devices x 30 registers
every second (15,000 tags/s) at 124 % CPU on a 4-core server. `bench_gateway()`
does the same here: one simulator process (`edgert sim modbus`, epoll, one
port, each device at its own loopback address 127.x.y.z, answering after
`latency` seconds) serves every device; `edgert run` runs a gateway with one
`modbus` driver polling them all (`report = "always"`: every register of every
poll is a point) into a real nats-server; a subscriber in its own process
counts the points that arrive. Over a window after a warm-up it reports:

- polls/s and points/s delivered to NATS, against the 500 and 15,000 wanted
  (within 2 %: the driver reports its counts twice a second, so they are up to
  0.5 s old when sampled, and the subscriber lags a little); and whether every
  point the driver made from the start reached the subscriber (it is given
  20 s to catch up);
- late polls: the driver counts a poll `late` when its request goes out more
  than 10 % of the interval (100 ms at 1 s) after its slot on the device's
  grid, and slots passed over as `skipped`; the share late is
  (late + skipped) / wanted polls, target < 1 %;
- the gateway's CPU: every process of `edgert run` (supervisor, driver,
  bridge) summed from /proc, as % of one core and per 1,000 points/s,
  beside Neuron's figure; target < 50 % of one core. The simulator, the
  subscriber and nats-server are not the gateway: the simulator's CPU is
  reported apart, with the load average, since a starved machine shows here.

`python -m edgert.bench.modbus_scale --devices 500 --latency 0,20` runs it
from the command line (`--help` for the rest).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgert.testing import wait_for

__all__ = [
    "DEVICES",
    "REGISTERS",
    "NEURON",
    "device_hosts",
    "simulated_hosts",
    "modbus_driver",
    "bench_gateway",
    "run_scale",
    "format_gateway",
]

DEVICES = 500
REGISTERS = 30
#: EMQ Neuron's published figure: 500 Modbus TCP devices x 30 tags, every second
NEURON = {"points_s": 15000, "cpu_pct": 124.0, "machine": "a 4-core server"}


def device_hosts(n: int) -> list[str]:
    """`n` distinct loopback addresses (127.0.0.0/8 is all loopback on Linux)."""
    return [f"127.{1 + k // 62500}.{k // 250 % 250}.{k % 250 + 1}" for k in range(n)]


def _sim_toml(hosts: list[str], registers: int, latency: float) -> str:
    regs = "".join(
        f"[[device.register]]\naddress = {a}\nvalue = {a * 11}\n" for a in range(1, registers)
    )
    rest = ", ".join(f'"{h}"' for h in hosts[1:])
    return (
        f'transport = "tcp"\nhost = "{hosts[0]}"\ntcp_port = 0\nhosts = [{rest}]\n'
        f"response_delay = {latency!r}\n"
        '[[device]]\nunit = 1\n[[device.register]]\naddress = 0\nshape = "counter"\n'
        f"period = 0.1\n{regs}"
    )


@contextlib.contextmanager
def simulated_hosts(
    devices: int = DEVICES, registers: int = REGISTERS, latency: float = 0.0
) -> Iterator[tuple[list[tuple[str, int]], list[int]]]:
    """`devices` Modbus TCP devices, each at its own loopback address, all served by one
    simulator process answering after `latency` seconds; yields their (host, port) and
    the simulator's pid in a list."""
    from edgert_drivers.modbus.sim import sim_process

    hosts = device_hosts(devices)
    with tempfile.TemporaryDirectory(prefix="bench-") as d:
        path = os.path.join(d, "sim.toml")
        with open(path, "w") as f:
            f.write(_sim_toml(hosts, registers, latency))
        with sim_process(path, timeout=60.0) as (proc, address):
            port = int(address.rsplit(":", 1)[1])
            yield [(h, port) for h in hosts], [proc.pid]


def modbus_driver(
    where: list[tuple[str, int]], registers: int = REGISTERS, interval: float = 1.0
) -> str:
    """A `[[driver]]` table: one modbus driver polling each (host, port) as a device."""
    regs = ", ".join(
        f'{{name = "r{a}", address = {a}, report = "always"}}' for a in range(registers)
    )
    head = (
        '[[driver]]\nname = "bus"\ntype = "modbus"\ntransport = "tcp"\n'
        f"timeout = 1.0\npoll_interval = {interval!r}\n"
    )
    devs = "".join(
        f'[[driver.device]]\nname = "d{i}"\nunit = 1\nhost = "{h}"\ntcp_port = {p}\n'
        f"register = [{regs}]\n"
        for i, (h, p) in enumerate(where)
    )
    return head + devs


def bench_gateway(
    devices: int = DEVICES,
    registers: int = REGISTERS,
    interval: float = 1.0,
    latency: float = 0.0,
    seconds: float = 20.0,
    warmup: float = 3.0,
    per_device: bool = False,
) -> dict[str, Any]:
    """One run: `devices` x `registers` every `interval` through `edgert run` to NATS, the
    devices answering after `latency` seconds. With `per_device`, the subscriber
    decodes every point and the points each device delivered are reported too."""
    from edgert.bench.gateway import GatewayProcess, config_text
    from edgert.bench.listener import Listener
    from edgert.bench.measure import between, by_actor, delta, rnd, sample, stat
    from edgert.bench.procfs import cpu_seconds, cpu_used
    from edgert.bench.workdir import workdir

    load0 = os.getloadavg()
    wanted_polls = devices / interval
    out: dict[str, Any] = {
        "devices": devices,
        "registers_per_device": registers,
        "interval_s": interval,
        "latency_ms": 1000 * latency,
        "wanted_polls_s": wanted_polls,
        "wanted_points_s": wanted_polls * registers,
        "neuron": NEURON,
    }
    t_start = time.monotonic()
    with (
        workdir() as (d, srv),
        simulated_hosts(devices, registers, latency) as (where, sim_pids),
    ):
        here = Path(d) / "gw"
        text = config_text(here, srv.url, modbus_driver(where, registers, interval))
        with (
            Listener(srv.url, "edgert.bench.p.>", check=per_device) as heard,
            GatewayProcess(text, here) as gw,
        ):
            gw.wait_running(120)

            def online() -> bool:
                bus = gw.status()["by_name"]["bus"]
                return bus.get("stats", {}).get("devices_online", 0) == devices

            wait_for(online, 120, "every device online", interval=0.2)
            out["start_s"] = rnd(time.monotonic() - t_start)
            time.sleep(warmup)
            sim0 = cpu_seconds(sim_pids)
            a = sample(gw.pids(), heard, gw.status)
            time.sleep(seconds)
            b = sample(gw.pids(), heard, gw.status)
            sim1 = cpu_seconds(sim_pids)
            # every point the driver had made by then reaches NATS (the subscriber,
            # a process on the same busy machine, may lag: it gets time to catch up)
            made = stat(b, "bus", "points_out") or 0
            with contextlib.suppress(TimeoutError):
                wait_for(
                    lambda: heard.snapshot()["points"] >= made, 20, "catching up", interval=0.2
                )
            heard_total = heard.snapshot()["points"]
    window = b.at - a.at
    res = between(a, b)
    polls = delta(a, b, "bus", "polls") or 0
    late = delta(a, b, "bus", "late") or 0
    skipped = delta(a, b, "bus", "skipped") or 0
    wanted = wanted_polls * window
    out |= {
        "seconds": res["seconds"],
        "polls_s": rnd(polls / window),
        "points_s": res["points_s"],
        "delivered_ratio": rnd((res["points_s"] or 0) / (wanted_polls * registers)),
        "polls": polls,
        "points_made_total": made,
        "points_heard_total": heard_total,
        "produced_points_s": rnd((delta(a, b, "bus", "points_out") or 0) / window),
        "dropped_at_source": delta(a, b, "bus", "dropped"),
        "spooled_batches": delta(a, b, "bridge", "spool_written_batches"),
        "late_polls": late,
        "skipped_slots": skipped,
        "late_pct": rnd(100 * (late + skipped) / wanted) if wanted else None,
        "errors": delta(a, b, "bus", "errors"),
        "gateway_cpu_pct": res["cpu_pct"],
        "cpu_pct_per_1k_points_s": rnd(1000 * res["cpu_pct"] / res["points_s"])
        if res["points_s"]
        else None,
        "neuron_cpu_pct_per_1k_points_s": rnd(1000 * NEURON["cpu_pct"] / NEURON["points_s"]),
        "cpu_by_process": by_actor(a, b),
        "simulator_cpu_pct": rnd(100 * cpu_used(sim0, sim1) / window),
        "load_average": [round(load0[0], 2), round(os.getloadavg()[0], 2)],
        "cores": os.cpu_count(),
    }
    if out["gateway_cpu_pct"] is not None:
        out["cpu_vs_neuron"] = rnd(out["gateway_cpu_pct"] / NEURON["cpu_pct"])
    out["on_time"] = bool(out["late_pct"] is not None and out["late_pct"] < 1.0)
    # all delivered: the rate heard over the window is within 2 % of the wanted one
    # (the driver's counts are up to 0.5 s old when sampled, and the subscriber
    # lags a little), and every point the driver made reached the subscriber
    out["all_delivered"] = bool(
        out["delivered_ratio"] and out["delivered_ratio"] >= 0.98 and heard_total >= made
    )
    out["cpu_target_met"] = bool(out["gateway_cpu_pct"] and out["gateway_cpu_pct"] < 50.0)
    if per_device:
        nodes = b.heard["nodes"]
        out["points_by_device"] = {
            f"d{i}": nodes.get(f"d{i}", {}).get("received", 0)
            + nodes.get(f"d{i}", {}).get("duplicates", 0)
            for i in range(devices)
        }
    return out


def run_scale(
    devices: int = DEVICES,
    latencies_ms: tuple[float, ...] = (0.0, 20.0),
    seconds: float = 20.0,
    registers: int = REGISTERS,
) -> dict[str, Any]:
    """`bench_gateway` at each device latency; the runs as a list under "runs"."""
    return {
        "runs": [
            bench_gateway(devices, registers, latency=ms / 1000, seconds=seconds)
            for ms in latencies_ms
        ]
    }


def format_gateway(res: dict[str, Any]) -> str:
    """One run of `bench_gateway` as a few lines of text."""
    if "error" in res:
        return f"  {res['error']}"
    n = res["neuron"]
    by = ", ".join(f"{k} {v:.1f}" for k, v in res["cpu_by_process"].items())
    return "\n".join(
        [
            f"{res['devices']} TCP devices x {res['registers_per_device']} registers every "
            f"{res['interval_s']:g} s, device latency {res['latency_ms']:g} ms, "
            f"{res['seconds']:.0f} s window (load average {res['load_average'][0]:.1f} before, "
            f"{res['load_average'][1]:.1f} after, {res['cores']} cores)",
            f"  polls/s {res['polls_s']:.0f} of {res['wanted_polls_s']:.0f}; points/s at NATS "
            f"{res['points_s'] or 0:.0f} of {res['wanted_points_s']:.0f} "
            f"({'all' if res['all_delivered'] else 'NOT all'} delivered; the driver made "
            f"{res['produced_points_s'] or 0:.0f}/s, dropped {res['dropped_at_source']}, "
            f"spooled batches {res['spooled_batches']}; of the {res['points_made_total']} "
            f"it made from the start, {res['points_heard_total']} were heard)",
            f"  late polls {res['late_polls']}, skipped slots {res['skipped_slots']}: "
            f"{res['late_pct']:.2f} % late (target < 1 %: {'pass' if res['on_time'] else 'FAIL'})",
            f"  gateway CPU {res['gateway_cpu_pct']:.1f} % of one core "
            f"(target < 50 %: {'pass' if res['cpu_target_met'] else 'FAIL'}; {by}); "
            f"Neuron {n['cpu_pct']:g} % on {n['machine']} at {n['points_s']} points/s: "
            f"x{res.get('cpu_vs_neuron', 0):.2f}",
            f"  per 1,000 points/s: {res['cpu_pct_per_1k_points_s']} % of a core "
            f"(Neuron {res['neuron_cpu_pct_per_1k_points_s']} %); "
            f"simulator (not counted) {res['simulator_cpu_pct']:.1f} %",
        ]
    )


def format_scale(res: dict[str, Any]) -> str:
    """Every run of `run_scale`."""
    return "\n".join(format_gateway(r) for r in res["runs"])


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    ap = argparse.ArgumentParser(
        prog="python -m edgert.bench.modbus_scale",
        description="N Modbus TCP devices x 30 registers every second, through edgert run to NATS.",
    )
    ap.add_argument("--devices", type=int, default=DEVICES)
    ap.add_argument("--latency", default="0,20", help="device latencies in ms, comma separated")
    ap.add_argument("--seconds", type=float, default=20.0, help="the measuring window")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    lat = tuple(float(x) for x in args.latency.split(",") if x.strip())
    res = run_scale(args.devices, lat, args.seconds)
    print(json.dumps(res, indent=2) if args.json else format_scale(res))


if __name__ == "__main__":
    main()
