"""pytest plugin: simulated Modbus devices and an independent Modbus peer as fixtures.

Enable with `pytest_plugins = ["edgert.testing.fixtures"]`. Fixtures:

- `modbus_sim`: a factory; `modbus_sim(toml_text)` runs `edgert sim modbus` with
  that config in its own process and returns its address (the pty path for
  `port`, or "host:port"); every simulator is stopped at teardown.
- `modbus_profile`: a factory; `modbus_profile(name)` runs the simulator with one
  of `PROFILES`, a fault or quirk of real devices (the hardware-in-the-loop kit:
  a slow device, a wrong unit id in answers, a trailing byte, busy answers, no
  multi-register reads, a TCP gateway whose device is gone, one TCP client, a
  device that needs a pause after connecting); returns its address. Unit 1
  holds 1 and 2 in holding registers 0 and 1.
- `modbus_peer`: a factory; `modbus_peer("rtu" | "tcp" | "rtu_over_tcp",
  units=(1, 2))` starts pymodbus in its own process (`edgert.testing.modbus_peer.Peer`);
  stopped at teardown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgert.testing.modbus_peer import Peer, pymodbus_peer
from edgert_drivers.modbus.sim import sim_process

__all__ = ["modbus_sim", "modbus_profile", "modbus_peer", "PROFILES"]

_UNIT1 = """
[[device]]
unit = 1
{quirk}

[[device.register]]
address = 0
value = 1

[[device.register]]
address = 1
value = 2
"""

#: name: (simulator settings, settings of unit 1): see docs/modbus.md
PROFILES = {
    "slow": ('transport = "rtu"\nresponse_delay = 0.06', ""),  # a 4800 baud line's time
    "wrong_unit": ('transport = "rtu"', "answer_unit = 9"),
    "trailing_byte": ('transport = "rtu"', "trailing_byte = true"),
    "busy": ('transport = "tcp"\ntcp_port = 0', "busy = 2"),
    "one_value_per_read": ('transport = "rtu"', "one_value_per_read = true"),
    "gateway_dead": (
        'transport = "tcp"\ntcp_port = 0\n\n[[device]]\nunit = 2\nanswer_exception = 11\n',
        "",
    ),
    "sloppy_gateway": ('transport = "tcp"\ntcp_port = 0', "transaction_id_zero = true"),
    "one_client": ('transport = "tcp"\ntcp_port = 0\none_client = true', ""),
    "slow_start": ('transport = "tcp"\ntcp_port = 0\nconnect_delay = 0.2', ""),
}


@pytest.fixture
def modbus_sim(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    with contextlib.ExitStack() as stack:
        n = 0

        def start(toml_text: str) -> str:
            nonlocal n
            n += 1
            path = tmp_path / f"sim{n}.toml"
            path.write_text(toml_text)
            _proc, address = stack.enter_context(sim_process(str(path)))
            return address

        yield start


@pytest.fixture
def modbus_profile(modbus_sim: Callable[[str], str]) -> Callable[[str], str]:
    def start(name: str) -> str:
        sim, quirk = PROFILES[name]
        return modbus_sim(sim + "\n" + _UNIT1.format(quirk=quirk))

    return start


@pytest.fixture
def modbus_peer(tmp_path: Path) -> Iterator[Callable[..., Peer]]:
    with contextlib.ExitStack() as stack:
        n = 0

        def start(transport: str = "rtu", units: tuple[int, ...] = (1,), **kw: Any) -> Peer:
            nonlocal n
            n += 1
            link = str(tmp_path / f"ttyUSB{n}") if transport == "rtu" else None
            return stack.enter_context(pymodbus_peer(transport, units, link=link, **kw))

        yield start
