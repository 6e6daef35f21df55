"""The device simulator (`edgert sim modbus`) and the example configs, with the driver."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edgert import Point
from edgert.testing import wait_for
from edgert.testing.harness import run_driver
from edgert_drivers.modbus import ModbusDriver

ROOT = Path(__file__).resolve().parent.parent

SIM = """
transport = "{transport}"
tcp_port = 0

[[device]]
unit = 1

[[device.register]]
address = 0
type = "uint16"
shape = "counter"
period = 0.1

[[device.register]]
address = 2
type = "float32"
word_order = "little"
shape = "sine"
min = 220.0
max = 240.0
period = 2.0

[[device.register]]
address = 4
type = "string"
count = 3
value = "SIM-01"

[[device.register]]
table = "coil"
address = 3
value = true

[[device.register]]
address = 8
type = "int16"
scale = 0.1
value = 21.5
"""

REGS = [
    {"name": "count", "address": 0},
    {"name": "volts", "address": 2, "type": "float32", "word_order": "little"},
    {"name": "model", "address": 4, "type": "string", "count": 3},
    {"name": "relay", "table": "coil", "address": 3, "writable": True},
    {"name": "setpoint", "address": 8, "type": "int16", "scale": 0.1, "writable": True},
]


def where(transport: str, address: str) -> dict:
    if transport in ("rtu", "ascii"):
        return {"transport": transport, "port": address, "parity": "N", "baudrate": 115200}
    host, port = address.rsplit(":", 1)
    return {"transport": transport, "host": host, "tcp_port": int(port)}


@pytest.mark.parametrize("transport", ["rtu", "ascii", "tcp", "rtu_over_tcp"])
def test_simulated_values_change_and_accept_writes(modbus_sim, transport) -> None:
    address = modbus_sim(SIM.format(transport=transport))
    if transport in ("rtu", "ascii"):
        assert address.startswith("/dev/pts/")
    cfg = {
        **where(transport, address),
        "poll_interval": 0.05,
        "timeout": 0.3,
        "device": [
            {"name": "sim", "unit": 1, "register": REGS},
            {"name": "absent", "unit": 9, "register": REGS[:1], "probe_interval": 0.5},
        ],
    }
    with run_driver(ModbusDriver, cfg) as run:
        wait_for(lambda: len(set(run.values("sim", "count"))) >= 5, 10, "a counter counting")
        wait_for(lambda: len(set(run.values("sim", "volts"))) >= 5, 10, "a sine moving")
        assert all(219.99 <= v <= 240.01 for v in run.values("sim", "volts"))
        assert run.latest("sim", "model") == "SIM-01"
        assert run.latest("sim", "relay") is True
        assert run.latest("sim", "setpoint") == pytest.approx(21.5)
        assert run.command([Point("sim", "relay", "0", False)]) is None
        assert run.command([Point("sim", "setpoint", "0", -3.2)]) is None
        wait_for(lambda: run.latest("sim", "relay") is False, 2, "coil written")
        wait_for(lambda: run.latest("sim", "setpoint") == pytest.approx(-3.2), 2, "register held")
        # an unknown unit gets no answer at all, as on a real bus
        wait_for(lambda: run.latest("absent", "online") is False, 5, "unit 9 silent")
        assert run.latest("absent", "errors_timeout") >= 1


STRICT = """
[[device]]
unit = 1
strict = true

[[device.register]]
address = 0
value = 11

[[device.register]]
address = 3
value = 33
"""


def test_a_refused_merged_read_is_split(modbus_sim) -> None:
    """A device that refuses reads over unused addresses (exception 2) still gets read."""
    port = modbus_sim(STRICT)
    regs = [{"name": "a", "address": 0}, {"name": "b", "address": 3}]
    cfg = {
        **where("rtu", port),
        "poll_interval": 0.05,
        "device": [{"name": "d", "unit": 1, "register": regs}],
    }
    with run_driver(ModbusDriver, cfg) as run:
        wait_for(lambda: run.latest("d", "a") == 11 and run.latest("d", "b") == 33, 10, "both")
        assert run.latest("d", "errors_exception") == 1  # once: then read in two parts
        assert run.latest("d", "online") is True


def test_the_sim_command_prints_the_port_and_stops_on_sigterm(tmp_path) -> None:
    conf = tmp_path / "sim.toml"
    conf.write_text(STRICT)
    link = tmp_path / "ttySIM"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgert",
            "sim",
            "modbus",
            "--config",
            str(conf),
            "--link",
            str(link),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/pts/") and Path(path).exists()
        assert link.resolve() == Path(path)
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    assert not link.exists()  # its symlink is removed on the way out


def test_a_broken_sim_config_names_the_key(tmp_path) -> None:
    conf = tmp_path / "sim.toml"
    conf.write_text('[[device]]\nunit = 1\n[[device.register]]\naddress = 0\ntype = "float128"\n')
    r = subprocess.run(
        [sys.executable, "-m", "edgert", "sim", "modbus", "--config", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "'type'" in r.stderr


@pytest.mark.parametrize("name", ["modbus-energy-meter.toml", "modbus-plc-tcp.toml"])
def test_example_configs_pass_check(name) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "edgert", "check", str(ROOT / "configs" / name)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


METER_SIM = """
[[device]]
unit = 1
[[device.register]]
table = "input"
address = 0
type = "float32"
word_order = "little"
shape = "sine"
min = 228.0
max = 232.0
period = 5.0
[[device.register]]
table = "input"
address = 52
type = "float32"
word_order = "little"
value = 1500.0
"""


def test_the_energy_meter_example_reads_a_simulated_meter(modbus_sim) -> None:
    port = modbus_sim(METER_SIM)
    doc = tomllib.loads((ROOT / "configs" / "modbus-energy-meter.toml").read_text())
    (bus,) = doc["driver"]
    cfg = {k: v for k, v in bus.items() if k not in ("name", "type")}
    cfg.update(port=port, parity="N", baudrate=115200, timeout=0.1)
    cfg["device"][1]["probe_interval"] = 1.0
    with run_driver(ModbusDriver, cfg) as run:
        wait_for(lambda: run.latest("meter-main", "power-total") is not None, 10, "power read")
        assert run.latest("meter-main", "power-total") == pytest.approx(1.5)  # W -> kW
        assert 228.0 <= run.latest("meter-main", "voltage-l1") <= 232.0
        wait_for(lambda: run.latest("meter-pv", "online") is False, 5, "the absent meter offline")


UDP = """
transport = "udp"
tcp_port = 0

[[device]]
unit = 1

[[device.register]]
address = 0
value = 321

[[device.register]]
address = 1
type = "float32"
value = 2.5
"""


def test_modbus_udp_reads_and_writes(modbus_sim) -> None:
    address = modbus_sim(UDP)
    host, port = address.rsplit(":", 1)
    regs = [
        {"name": "n", "address": 0, "writable": True},
        {"name": "f", "address": 1, "type": "float32"},
    ]
    cfg = {
        "transport": "udp",
        "host": host,
        "tcp_port": int(port),
        "poll_interval": 0.05,
        "timeout": 0.2,
        "device": [
            {"name": "u", "unit": 1, "register": regs},
            {"name": "absent", "unit": 7, "register": regs[:1], "probe_interval": 0.3},
        ],
    }
    with run_driver(ModbusDriver, cfg) as run:
        wait_for(lambda: run.latest("u", "n") == 321 and run.latest("u", "f") == 2.5, 10, "read")
        assert run.command([Point("u", "n", "0", 4321)]) is None
        wait_for(lambda: run.latest("u", "n") == 4321, 5, "written and read back")
        wait_for(lambda: run.latest("absent", "online") is False, 5, "unit 7 silent")
        assert run.latest("u", "online") is True
