"""Devices at different network addresses are polled side by side, one connection each.

Shown by behaviour, not by timing: while a slow device's request is still in
flight (its simulator answers after 8 s), a device at another address is read
again and again and takes a write; a poller that asked one device after the
other could do neither before the slow answer came.
"""

from __future__ import annotations

import socket

from edgert import Point
from edgert.testing import wait_for
from edgert.testing.harness import run_driver
from edgert_drivers.modbus import ModbusDriver

SLOW = """
transport = "tcp"
tcp_port = 0
response_delay = 8.0
[[device]]
unit = 1
[[device.register]]
address = 0
value = 1
"""

FAST = """
transport = "tcp"
host = "127.0.0.1"
tcp_port = 0
hosts = ["127.0.0.2", "127.0.0.3"]
[[device]]
unit = 1
[[device.register]]
address = 0
shape = "counter"
period = 0.01
[[device.register]]
address = 1
value = 7
[[device]]
unit = 2
[[device.register]]
address = 0
value = 22
"""


def split(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def test_a_slow_device_holds_up_only_its_own_connection(modbus_sim) -> None:
    slow_host, slow_port = split(modbus_sim(SLOW))
    _h, fast_port = split(modbus_sim(FAST))
    reg = [{"name": "v", "address": 0}]
    cfg = {
        "transport": "tcp",
        "host": slow_host,  # the bus's address: devices without their own
        "tcp_port": slow_port,
        "timeout": 20.0,
        "poll_interval": 0.05,
        "device": [
            {"name": "slow", "unit": 1, "register": reg},
            {
                "name": "fast",
                "unit": 1,
                "host": "127.0.0.2",
                "tcp_port": fast_port,
                "register": [*reg, {"name": "w", "address": 1, "writable": True}],
            },
        ],
    }
    with run_driver(ModbusDriver, cfg) as run:
        wait_for(lambda: len(run.values("fast", "v")) >= 5, 10, "five reads of the fast device")
        assert run.command([Point("fast", "w", "0", 99)]) is None
        wait_for(lambda: run.latest("fast", "w") == 99, 10, "the write read back")
        assert run.values("slow", "v") == []  # its first answer is still on its way
        assert run.latest("slow", "online") is None
        assert run.stats()["connections"] == 2


def test_one_connection_per_address(modbus_sim) -> None:
    _h, port = split(modbus_sim(FAST))
    reg = [{"name": "v", "address": 0}]
    devices = [  # two units behind 127.0.0.2 share a connection; 127.0.0.3 has its own
        {"name": "a", "unit": 1, "host": "127.0.0.2", "register": [{"name": "v", "address": 1}]},
        {"name": "b", "unit": 2, "host": "127.0.0.2", "register": reg},
        {"name": "c", "unit": 2, "host": "127.0.0.3", "register": reg},
    ]
    cfg = {"transport": "tcp", "tcp_port": port, "poll_interval": 0.05, "device": devices}
    with run_driver(ModbusDriver, cfg) as run:
        wait_for(
            lambda: (
                (run.latest("a", "v"), run.latest("b", "v"), run.latest("c", "v")) == (7, 22, 22)
            ),
            10,
            "every device read",
        )
        wait_for(lambda: run.stats().get("devices_online") == 3, 10, "figures")
        stats = run.stats()
        assert stats["connections"] == 2
        assert stats["opens"] == 2 and stats["port_errors"] == 0
        assert "3/3 devices online" in stats["now"]


def test_one_address_lost_takes_only_its_devices_offline(modbus_sim, tmp_path) -> None:
    _h, port = split(modbus_sim(FAST))
    reg = [{"name": "v", "address": 1}]
    devices = [
        {"name": "up", "unit": 1, "host": "127.0.0.2", "register": reg},
        {"name": "gone", "unit": 1, "host": "127.0.0.9", "register": reg},  # nobody there
    ]
    cfg = {
        "transport": "tcp",
        "tcp_port": port,
        "poll_interval": 0.05,
        "reopen_min": 0.05,
        "reopen_max": 0.2,
        "device": devices,
    }
    with run_driver(ModbusDriver, cfg) as run:
        wait_for(lambda: run.stats().get("open_failures", 0) >= 3, 10, "re-opens of the lost one")
        wait_for(lambda: len(run.values("up", "v")) >= 1, 10, "the other device read")
        stats = run.stats()
        assert stats["port"] == "1/2 open"
        assert "127.0.0.9" in stats["port_error"]
        assert run.latest("up", "online") is True


def test_a_host_that_never_answers_the_connection_holds_up_nothing(modbus_sim) -> None:
    _h, port = split(modbus_sim(FAST))
    with socket.socket() as full:  # a listener that takes one connection and no more:
        full.bind(("127.0.0.1", 0))  # further connection attempts go unanswered, as to
        full.listen(0)  # a host that is down
        filler = socket.create_connection(full.getsockname())
        dead_host, dead_port = full.getsockname()
        devices = [
            {"name": "dead", "unit": 1, "host": dead_host, "tcp_port": dead_port,
             "register": [{"name": "v", "address": 1}]},
            {"name": "up", "unit": 1, "host": "127.0.0.2", "tcp_port": port,
             "register": [{"name": "v", "address": 0}]},  # a counter
        ]  # fmt: skip
        cfg = {"transport": "tcp", "timeout": 30.0, "poll_interval": 0.05, "device": devices}
        try:
            with run_driver(ModbusDriver, cfg) as run:
                wait_for(lambda: len(run.values("up", "v")) >= 5, 10, "five reads of 'up'")
                wait_for(lambda: run.stats().get("port") == "1/2 open", 10, "figures")
                assert run.stats()["open_failures"] == 0  # still connecting to 'dead'
                assert run.values("dead", "v") == []
        finally:
            filler.close()
