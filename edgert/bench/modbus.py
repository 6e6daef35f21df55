"""Modbus benchmarks: the driver against pymodbus and minimalmodbus, on one simulated line.

Every function returns a dict, for `edgert bench` to print. With `scale`,
`bench_modbus()` also runs `edgert.bench.modbus_scale` (500 Modbus TCP
devices x 30 registers every second through a whole gateway to NATS, at each
device latency asked for) and the per-poll profile of
`edgert.bench.modbus_clients`. `bench_modbus()`
starts the simulator (`edgert sim modbus`) on a pseudo-terminal and, one after
the other on that same pty, measures requests per second reading 10 holding
registers a request with: the edgert driver (its whole loop: request, decode,
report, publish), its bare transport, pymodbus's sync serial client and
minimalmodbus. It also measures the unique memory (USS) of a process doing so
with each.

The driver's overhead per request is its time per request minus the silence
the protocol mandates at the configured baud rate (3.5 characters; 1.75 ms
above 19200 baud). A pty moves bytes at no cost, so the simulator answers at
once and the silence the master keeps before each request is the only one:
the overhead is everything else (framing, system calls, the simulator, the
driver loop). On a real 115200 baud line a request of 8 bytes and its answer
of 25 bytes take 33 characters of 11 bits plus two silences: 6.65 ms, a
theoretical 150 requests a second; `line_fraction` is the share of that rate
the driver would reach with its measured overhead added.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from edgert.testing import wait_for

__all__ = [
    "bench_modbus",
    "bench_driver",
    "bench_transport",
    "bench_pymodbus",
    "bench_minimalmodbus",
    "line_rate",
    "uss_bytes",
]

BAUD = 115200
REGISTERS = 10

SIM = """
[[device]]
unit = 1
[[device.register]]
address = 0
shape = "counter"
period = 0.001
""" + "".join(
    f"[[device.register]]\naddress = {a}\nvalue = {a * 11}\n" for a in range(1, REGISTERS)
)


def line_rate(baudrate: int = BAUD, registers: int = REGISTERS) -> dict[str, float]:
    """The theoretical request time and rate of reading `registers` on a real line."""
    from edgert_drivers.modbus.transport import silence

    chars = 8 + 5 + 2 * registers  # request + answer (unit, fc, count, data, CRC)
    t = chars * 11 / baudrate + 2 * silence(baudrate)
    return {"line_request_ms": t * 1000, "line_req_per_s": 1 / t}


def uss_bytes(pid: int | str = "self") -> int:
    """Unique set size of a process: the memory it alone holds (private pages)."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1]) * 1024
    return total


def _result(name: str, n: int, elapsed: float, baudrate: int = BAUD) -> dict[str, Any]:
    from edgert_drivers.modbus.transport import silence

    per = elapsed / n
    return {
        "client": name,
        "requests": n,
        "req_per_s": n / elapsed,
        "ms_per_request": per * 1000,
        "overhead_ms": (per - silence(baudrate)) * 1000,
    }


def bench_transport(port: str, seconds: float = 2.0, baudrate: int = BAUD) -> dict[str, Any]:
    """The driver's transport alone: `exchange` in a loop."""
    from edgert_drivers.modbus import pdu
    from edgert_drivers.modbus.config import ModbusConfig
    from edgert_drivers.modbus.transport import open_transport

    t = open_transport(ModbusConfig(port=port, baudrate=baudrate, parity="N"))
    try:
        req = pdu.read_request(3, 0, REGISTERS)
        t.exchange(1, req, 1.0)
        n, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            t.exchange(1, req, 1.0)
            n += 1
    finally:
        t.close()
    return _result("transport (50us slack)", n, elapsed, baudrate)


def bench_driver(port: str, seconds: float = 3.0, baudrate: int = BAUD) -> dict[str, Any]:
    """The whole driver loop (request, decode, report, publish) polling as fast as it can."""
    from edgert.testing.harness import run_driver
    from edgert_drivers.modbus import ModbusDriver

    regs = [{"name": f"r{a}", "address": a, "report": "always"} for a in range(REGISTERS)]
    cfg = {
        "port": port,
        "baudrate": baudrate,
        "parity": "N",
        "poll_interval": 1e-4,  # always due: back to back
        "device": [{"name": "dev", "unit": 1, "register": regs}],
    }
    with run_driver(ModbusDriver, cfg) as run:
        wait_for(lambda: run.ctx.points, 10, "the driver's first points", interval=0.01)
        n0, t0, c0 = len(run.ctx.points), time.perf_counter(), time.process_time()
        time.sleep(seconds)
        n1, elapsed = len(run.ctx.points), time.perf_counter() - t0
        cpu = time.process_time() - c0  # the driver's thread: this one only sleeps
    res = _result("edgert driver", (n1 - n0) // REGISTERS, elapsed, baudrate)
    res["cpu_ms_per_request"] = 1000 * cpu / max(1, res["requests"])
    return res


def bench_pymodbus(port: str, seconds: float = 2.0, baudrate: int = BAUD) -> dict[str, Any]:
    """pymodbus's sync serial client, the same reads."""
    import logging

    from pymodbus.client import ModbusSerialClient

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    c = ModbusSerialClient(port=port, baudrate=baudrate, parity="N", timeout=1)
    if not c.connect():
        raise RuntimeError(f"pymodbus cannot open {port}")
    try:
        n, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            r = c.read_holding_registers(0, count=REGISTERS, device_id=1)
            if r.isError():
                raise RuntimeError(f"pymodbus: {r}")
            n += 1
    finally:
        c.close()
    return _result("pymodbus sync", n, elapsed, baudrate)


def bench_minimalmodbus(port: str, seconds: float = 2.0, baudrate: int = BAUD) -> dict[str, Any]:
    """minimalmodbus, the same reads."""
    import minimalmodbus

    inst = minimalmodbus.Instrument(port, 1)
    inst.serial.baudrate = baudrate
    inst.serial.timeout = 1
    try:
        n, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            inst.read_registers(0, REGISTERS)
            n += 1
    finally:
        inst.serial.close()
    return _result("minimalmodbus", n, elapsed, baudrate)


def _uss_child(kind: str, port: str, conn: Any) -> None:
    try:
        if kind != "python":  # "python": the interpreter alone, for comparison
            run = {
                "edgert": bench_driver,
                "pymodbus": bench_pymodbus,
                "minimalmodbus": bench_minimalmodbus,
            }
            run[kind](port, 0.5)
        conn.send(uss_bytes())
    except Exception as e:  # noqa: BLE001 - reported to the parent
        conn.send(repr(e))


def process_uss(kind: str, port: str) -> int | str:
    """USS of a fresh process that polled the line with `kind` (edgert, pymodbus,
    minimalmodbus; "python" does nothing)."""
    mp = multiprocessing.get_context("spawn")
    ours, theirs = mp.Pipe()
    p = mp.Process(target=_uss_child, args=(kind, port, theirs))
    p.start()
    theirs.close()
    try:
        return ours.recv() if ours.poll(60) else "no answer"
    finally:
        ours.close()
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join()


@contextlib.contextmanager
def simulated_line() -> Iterator[str]:
    """`edgert sim modbus` serving unit 1 with 10 registers; yields its pty path."""
    from edgert_drivers.modbus.sim import sim_process

    with tempfile.TemporaryDirectory(prefix="bench-") as d:
        path = os.path.join(d, "sim.toml")
        with open(path, "w") as f:
            f.write(SIM)
        with sim_process(path) as (_proc, port):
            yield port


def bench_modbus(
    seconds: float = 3.0,
    memory: bool = True,
    scale: bool = True,
    modbus_devices: int = 500,
    modbus_latency: tuple[float, ...] = (0.0, 20.0),
    modbus_seconds: float = 20.0,
    modbus_scale_only: bool = False,
) -> dict[str, Any]:
    """All of the above on one simulated line, then (with `scale`) `modbus_devices`
    TCP devices x 30 registers every second through a gateway to NATS, once per
    device latency in `modbus_latency` (ms), each measured for `modbus_seconds`,
    and the profile of a poll; returns the figures as one dict. With
    `modbus_scale_only`, only the scale runs."""
    if modbus_scale_only:
        from edgert.bench.modbus_scale import run_scale

        return {"scale": run_scale(modbus_devices, tuple(modbus_latency), modbus_seconds)}
    out: dict[str, Any] = {"baudrate": BAUD, "registers_per_request": REGISTERS, **line_rate()}
    with simulated_line() as port:
        rows = [
            bench_driver(port, seconds),
            bench_transport(port, seconds),
            bench_pymodbus(port, seconds),
            bench_minimalmodbus(port, seconds),
        ]
        if memory:
            for row, kind in zip(rows, ("edgert", None, "pymodbus", "minimalmodbus"), strict=True):
                if kind:
                    uss = process_uss(kind, port)
                    row["process_uss_mb"] = uss / 2**20 if isinstance(uss, int) else uss
            base = process_uss("python", port)
            out["python_uss_mb"] = base / 2**20 if isinstance(base, int) else base
        slow = 19200
        out["at_19200"] = [
            f(port, seconds / 2, slow) for f in (bench_driver, bench_pymodbus, bench_minimalmodbus)
        ]
    driver = rows[0]
    out["clients"] = rows
    out["driver_req_per_s"] = driver["req_per_s"]
    out["driver_overhead_ms"] = driver["overhead_ms"]
    out["pty_fraction_of_line_rate"] = driver["req_per_s"] / out["line_req_per_s"]
    line_t = out["line_request_ms"]
    out["line_fraction"] = line_t / (line_t + max(0.0, driver["overhead_ms"]))
    out["faster_than_peers"] = all(driver["req_per_s"] > r["req_per_s"] for r in rows[2:])
    out["overhead_target_met"] = driver["overhead_ms"] <= 0.5
    if scale:
        from edgert.bench.modbus_clients import profile_driver
        from edgert.bench.modbus_scale import run_scale

        out["scale"] = run_scale(modbus_devices, tuple(modbus_latency), modbus_seconds)
        out["profile"] = profile_driver()
    return out


def format_table(res: dict[str, Any]) -> str:
    """The figures of `bench_modbus` as a small text table."""
    from edgert.bench.modbus_clients import format_profile
    from edgert.bench.modbus_scale import format_scale

    if "clients" not in res:  # the scale runs alone
        return format_scale(res["scale"])
    lines = [f"{'client':24} {'req/s':>8} {'ms/req':>8} {'overhead ms':>12} {'USS MB':>8}"]
    cpu_note = ""
    for r in res["clients"]:
        if "cpu_ms_per_request" in r:
            cpu_note = f"the driver's own CPU: {r['cpu_ms_per_request']:.3f} ms a request"
        uss = r.get("process_uss_mb", "")
        uss = f"{uss:.1f}" if isinstance(uss, float) else str(uss)
        lines.append(
            f"{r['client']:24} {r['req_per_s']:8.0f} {r['ms_per_request']:8.3f} "
            f"{r['overhead_ms']:12.3f} {uss:>8}"
        )
    for r in res.get("at_19200", []):
        lines.append(
            f"{r['client'] + ' @19200':24} {r['req_per_s']:8.0f} {r['ms_per_request']:8.3f} "
            f"{r['overhead_ms']:12.3f}"
        )
    if "python_uss_mb" in res:
        lines.append(f"(a bare python process: {res['python_uss_mb']:.1f} MB USS)")
    lines.append(cpu_note)
    lines.append(
        f"line at {res['baudrate']} baud: {res['line_req_per_s']:.1f} req/s theoretical; "
        f"driver on a pty {res['pty_fraction_of_line_rate']:.2f}x that, "
        f"projected on the line {100 * res['line_fraction']:.0f} %"
    )
    if "scale" in res:
        lines += ["", format_scale(res["scale"])]
    if "profile" in res:
        lines += ["", format_profile(res["profile"])]
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys

    result = bench_modbus(scale="--no-scale" not in sys.argv)
    print(json.dumps(result, indent=2) if "--json" in sys.argv else format_table(result))
