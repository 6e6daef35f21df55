"""Many Modbus TCP devices through a whole gateway: every device polled, every slot counted.

Counts, not timings: every device's points reach NATS; every slot of every
device's grid in the measuring window is either polled or counted as skipped;
a poll is counted late when its line cannot keep up; and a driver whose
config is far larger than one datagram (what a zygote process is sent) still
starts (`edgert run` forks it itself; test_clone sends one to a zygote process).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from multiprocessing import resource_tracker
from pathlib import Path

import pytest

from edgert.bench.gateway import GatewayProcess, config_text
from edgert.bench.modbus_scale import bench_gateway, modbus_driver
from edgert.bench.workdir import workdir
from edgert.testing import descendants, open_fds, pid_alive, wait_for
from edgert.testing.harness import run_driver
from edgert_drivers.modbus import ModbusDriver

DEVICES = 30


@pytest.fixture
def no_leftovers() -> Iterator[None]:
    """Fails the test if it leaves a child process of the test process running."""
    resource_tracker.ensure_running()  # shared by every spawn of this process, and long-lived
    before = descendants(os.getpid())
    yield
    left = {p for p in descendants(os.getpid()) - before if pid_alive(p)}
    assert not left, f"processes left running: {sorted(left)}"


def test_thirty_devices_at_20_ms_every_device_polled_through_nats(no_leftovers) -> None:
    res = bench_gateway(
        devices=DEVICES, interval=1.0, latency=0.02, seconds=4.0, warmup=1.0, per_device=True
    )
    # every device's registers reached NATS, all 30 of a poll at least once
    by_device = res["points_by_device"]
    assert sorted(by_device) == sorted(f"d{i}" for i in range(DEVICES))
    assert min(by_device.values()) >= 30, by_device
    assert res["errors"] == 0
    # every point the driver made reached NATS
    assert res["points_heard_total"] >= res["points_made_total"] > 0
    # each slot of each device's grid in the window was polled or counted skipped
    window = res["seconds"]
    slots = res["polls"] + res["skipped_slots"]
    assert DEVICES * (math.floor(window) - 1) <= slots <= DEVICES * (math.ceil(window) + 1), res
    assert 0 <= res["late_polls"] <= res["polls"]
    assert res["late_pct"] is not None  # (late + skipped) / wanted, reported beside the CPU
    assert res["gateway_cpu_pct"] > 0 and res["simulator_cpu_pct"] is not None


def test_polls_a_line_cannot_keep_up_with_are_counted_late_or_skipped(modbus_sim) -> None:
    # two units behind one address answering after 50 ms, each wanted every 50 ms:
    # the connection carries one request at a time, so half the slots cannot be kept
    host, port = modbus_sim(
        'transport = "tcp"\ntcp_port = 0\nresponse_delay = 0.05\n'
        "[[device]]\nunit = 1\n[[device.register]]\naddress = 0\nvalue = 1\n"
        "[[device]]\nunit = 2\n[[device.register]]\naddress = 0\nvalue = 2\n"
    ).rsplit(":", 1)
    reg = [{"name": "v", "address": 0, "report": "always"}]
    cfg = {
        "transport": "tcp",
        "host": host,
        "tcp_port": int(port),
        "poll_interval": 0.05,
        "device": [
            {"name": "a", "unit": 1, "register": reg},
            {"name": "b", "unit": 2, "register": reg},
        ],
    }
    with run_driver(ModbusDriver, cfg) as run:
        wait_for(
            lambda: run.stats().get("polls", 0) >= 20 and run.stats().get("late", 0) > 0,
            20,
            "late polls counted",
            interval=0.05,
        )
        s = run.stats()
    assert s["late"] <= s["polls"]
    assert s["skipped"] > 0
    assert {p.node for p in run.ctx.points if p.type == "v"} == {"a", "b"}


def test_a_driver_config_larger_than_a_datagram_starts(no_leftovers) -> None:
    # 100 devices x 30 registers pickle to ~340 kB: more than a SOCK_SEQPACKET
    # datagram holds; nothing listens at these addresses, the driver must run anyway
    where = [(f"127.9.0.{i + 1}", 1) for i in range(100)]
    with workdir() as (d, srv):
        here = Path(d) / "gw"
        text = config_text(here, srv.url, modbus_driver(where))
        with GatewayProcess(text, here) as gw:
            gw.wait_running(60)
            bus = gw.status()["by_name"]["bus"]
            assert bus["state"] == "running"
            assert bus.get("stats", {}).get("connections", 100) == 100
            # the spec's memfd was read and closed before the fork: no process keeps it
            for a in gw.status()["actors"]:
                links = list(open_fds(a["pid"]).values())
                assert not [x for x in links if "edgert-spec" in x], (a["name"], links)
