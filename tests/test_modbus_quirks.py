"""Device quirks as per-device settings: each reproduced by a simulator switch, each test
showing the device unreadable without its setting and read right with it.

(busy_retries and tolerant_transaction_ids are in test_modbus_defects.py.)
"""

from __future__ import annotations

import pytest

from edgert import Point
from edgert.testing import wait_for
from edgert.testing.harness import run_driver
from edgert_drivers.modbus import ModbusDriver


def where(address: str) -> dict:
    if address.startswith("/dev/"):
        return {"port": address, "parity": "N", "baudrate": 115200, "timeout": 0.2}
    host, port = address.rsplit(":", 1)
    return {"transport": "tcp", "host": host, "tcp_port": int(port), "timeout": 0.2}


def device(setting: dict, registers: list[dict]) -> dict:
    return {"name": "d", "unit": 1, "register": registers, "probe_interval": 0.2, **setting}


# -- one_request_per_register: a device that reads one value per request ------------------

ONE_VALUE = """
[[device]]
unit = 1
one_value_per_read = true

[[device.register]]
address = 0
value = 10

[[device.register]]
address = 1
type = "int32"
value = -20
"""


@pytest.mark.parametrize("setting", [{}, {"one_request_per_register": True}])
def test_one_request_per_register(modbus_sim, setting) -> None:
    port = modbus_sim(ONE_VALUE)
    regs = [{"name": "a", "address": 0}, {"name": "b", "address": 1, "type": "int32"}]
    cfg = {**where(port), "poll_interval": 0.05, "device": [device(setting, regs)]}
    with run_driver(ModbusDriver, cfg) as run:
        if setting:
            wait_for(lambda: run.latest("d", "a") == 10 and run.latest("d", "b") == -20, 10, "read")
            assert run.latest("d", "errors_exception") == 0
        else:
            wait_for(lambda: (run.latest("d", "errors_exception") or 0) >= 3, 10, "refused")
            assert run.values("d", "a") == []


# -- address_base / coil_base: a manual that counts from 1 --------------------------------

BASED = """
[[device]]
unit = 1
strict = true
address_base = 1

[[device.register]]
address = 1
value = 77

[[device.register]]
address = 2
value = 88

[[device.register]]
table = "coil"
address = 1
value = true
"""


@pytest.mark.parametrize("setting", [{}, {"address_base": 1}, {"address_base": 1, "coil_base": 0}])
def test_address_base(modbus_sim, setting) -> None:
    port = modbus_sim(BASED)
    regs = [
        {"name": "first", "address": 1},
        {"name": "k1", "table": "coil", "address": 1, "writable": True},
    ]
    cfg = {**where(port), "poll_interval": 0.05, "device": [device(setting, regs)]}
    with run_driver(ModbusDriver, cfg) as run:
        wait_for(lambda: run.latest("d", "first") is not None, 10, "read")
        if setting.get("address_base") == 1:
            assert run.latest("d", "first") == 77
        else:
            assert run.latest("d", "first") == 88  # one register off: the quirk's symptom
        if setting == {"address_base": 1}:
            wait_for(lambda: run.latest("d", "k1") is True, 5, "coil 1")
            assert run.command([Point("d", "k1", "0", False)]) is None
            wait_for(lambda: run.latest("d", "k1") is False, 5, "coil 1 written")
        if "coil_base" in setting:  # coils counted from 0 here: coil 1 is not mapped
            wait_for(lambda: (run.latest("d", "errors_exception") or 0) >= 1, 5, "refused")


# -- string_byte_order: strings with the two characters of each register swapped ----------

SWAPPED = """
[[device]]
unit = 1

[[device.register]]
address = 0
type = "string"
count = 4
byte_order = "little"
value = "AB-123"
"""


@pytest.mark.parametrize("setting", [{}, {"string_byte_order": "little"}])
def test_string_byte_order(modbus_sim, setting) -> None:
    port = modbus_sim(SWAPPED)
    regs = [{"name": "serial", "address": 0, "type": "string", "count": 4}]
    cfg = {**where(port), "poll_interval": 0.05, "device": [device(setting, regs)]}
    with run_driver(ModbusDriver, cfg) as run:
        wait_for(lambda: run.latest("d", "serial") is not None, 10, "read")
        assert (run.latest("d", "serial") == "AB-123") is bool(setting)


# -- pause_after_connect: a device that resets a connection asked at once ------------------

SLOW_START = """
transport = "tcp"
tcp_port = 0
connect_delay = 0.2

[[device]]
unit = 1

[[device.register]]
address = 0
value = 5
"""


@pytest.mark.parametrize("setting", [{}, {"pause_after_connect": 0.4}])
def test_pause_after_connect(modbus_sim, setting) -> None:
    address = modbus_sim(SLOW_START)
    regs = [{"name": "n", "address": 0}]
    cfg = {
        **where(address),
        "poll_interval": 0.05,
        "reopen_min": 0.05,
        "reopen_max": 0.1,
        "device": [device(setting, regs)],
    }
    with run_driver(ModbusDriver, cfg) as run:
        if setting:
            wait_for(lambda: run.latest("d", "n") == 5, 10, "read")
        else:
            wait_for(lambda: run.stats().get("port_errors", 0) >= 5, 10, "reset again and again")
            assert run.values("d", "n") == []


# -- close_connection_after_poll: a device that serves one TCP client at a time ------------

ONE_CLIENT = """
transport = "tcp"
tcp_port = 0
one_client = true

[[device]]
unit = 1

[[device.register]]
address = 0
value = 9
"""


@pytest.mark.parametrize("setting", [{}, {"close_connection_after_poll": True}])
def test_close_connection_after_poll(modbus_sim, setting) -> None:
    address = modbus_sim(ONE_CLIENT)
    regs = [{"name": "n", "address": 0, "report": "always"}]
    cfg = {
        **where(address),
        "poll_interval": 0.1,
        "reopen_min": 0.05,
        "reopen_max": 0.2,
        "device": [device(setting, regs)],
    }
    with run_driver(ModbusDriver, cfg, name="a") as a:
        wait_for(lambda: a.latest("d", "n") == 9, 10, "the first gateway reads")
        with run_driver(ModbusDriver, cfg, name="b") as b:
            if setting:
                wait_for(lambda: b.latest("d", "n") == 9, 10, "the second gateway reads too")
                na, nb = len(a.values("d", "n")), len(b.values("d", "n"))
                wait_for(
                    lambda: len(a.values("d", "n")) >= na + 3 and len(b.values("d", "n")) >= nb + 3,
                    10,
                    "both go on reading",
                )
                # a connection per poll (the figures are reported twice a second)
                wait_for(lambda: a.stats().get("opens", 0) >= 5, 10, "a connection per poll")
            else:
                wait_for(lambda: b.stats().get("port_errors", 0) >= 3, 10, "shut out")
                assert b.values("d", "n") == []


# -- the simulator's fault and quirk profiles, with the settings that cope ------------------

COPE = {
    "slow": ({"timeout": 0.3}, None),
    "wrong_unit": ({}, "errors_crc"),  # no setting: an answer from another unit is an error
    "trailing_byte": ({}, None),
    "busy": ({"busy_retries": 3, "busy_retry_wait": 0.01}, None),
    "one_value_per_read": ({"one_request_per_register": True}, None),
    "gateway_dead": ({}, None),
    "sloppy_gateway": ({"tolerant_transaction_ids": True}, None),
    "one_client": ({"close_connection_after_poll": True}, None),
    "slow_start": ({"pause_after_connect": 0.4}, None),
}


@pytest.mark.parametrize("name", sorted(COPE))
def test_each_profile_with_the_settings_that_cope(modbus_profile, name) -> None:
    address = modbus_profile(name)
    settings, error = COPE[name]
    bus = {
        **where(address),
        "poll_interval": 0.05,
        **{k: v for k, v in settings.items() if k == "timeout"},
    }
    dev_keys = {k: v for k, v in settings.items() if k != "timeout"}
    regs = [{"name": "a", "address": 0}, {"name": "b", "address": 1}]
    devices = [device(dev_keys, regs)]
    if name == "gateway_dead":
        devices.append({"name": "gone", "unit": 2, "register": regs, "probe_interval": 0.2})
    with run_driver(ModbusDriver, {**bus, "device": devices}) as run:
        if error:
            wait_for(lambda: (run.latest("d", error) or 0) >= 2, 10, error)
            assert run.values("d", "a") == []
            return
        wait_for(lambda: run.latest("d", "a") == 1 and run.latest("d", "b") == 2, 10, "read")
        if name == "gateway_dead":
            wait_for(lambda: run.latest("gone", "online") is False, 5, "unit 2 offline")
