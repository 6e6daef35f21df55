"""`edgert modbus scan` against the simulator: the units that answer, who they are, a config."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from edgert.config import decode
from edgert_drivers.modbus.config import ModbusConfig

BUS = """
transport = "{transport}"
tcp_port = 0

[[device]]
unit = 2
strict = true

[[device]]
unit = 4
vendor = "Acme Meters"
product_code = "EM-340"
revision = "2.7"
product_name = "Three-phase energy meter"

[[device.register]]
address = 0
value = 1234
"""


def run_scan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgert", "modbus", "scan", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("transport", ["rtu", "tcp", "udp"])
def test_scan_finds_the_units_and_their_identification(modbus_sim, transport) -> None:
    address = modbus_sim(BUS.format(transport=transport))
    if transport == "rtu":
        where = ["--port", address, "--baudrate", "115200", "--parity", "N"]
    else:
        host, port = address.rsplit(":", 1)
        where = ["--host", host, "--tcp-port", port, "--transport", transport]
    got = run_scan(*where, "--units", "1-6", "--timeout", "0.1")
    assert got.returncode == 0, got.stderr
    found = [line for line in got.stdout.splitlines() if line.startswith("unit ") and ":" in line]
    assert len(found) == 2, got.stdout
    assert found[0].startswith("unit 2: reading holding 0: exception 2")
    assert found[1].startswith("unit 4: holding 0 = 1234")
    for text in ("vendor Acme Meters", "product_code EM-340", "revision 2.7", "energy meter"):
        assert text in found[1]
    block = got.stdout[got.stdout.index("[[driver]]") :]
    table = tomllib.loads(block)["driver"][0]
    assert table.pop("type") == "modbus" and table.pop("name") == "bus"
    cfg = decode(ModbusConfig, table, "suggested")
    assert [(d.name, d.unit) for d in cfg.device] == [("sim_2", 2), ("em_340_4", 4)]


def test_scan_says_when_no_unit_answers(modbus_sim) -> None:
    address = modbus_sim(BUS.format(transport="rtu"))
    got = run_scan("--port", address, "--baudrate", "115200", "--units", "5-7", "--timeout", "0.05")
    assert got.returncode == 1 and "no unit answered" in got.stderr
    assert "[[driver]]" not in got.stdout


def test_scan_needs_a_port_or_a_host() -> None:
    got = run_scan("--units", "1")
    assert got.returncode != 0 and "--port" in got.stderr
