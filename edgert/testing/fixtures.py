"""pytest plugin: simulated Modbus devices and an independent Modbus peer as fixtures.

Enable with `pytest_plugins = ["edgert.testing.fixtures"]`. Fixtures:

- `modbus_sim`: a factory; `modbus_sim(toml_text)` runs `edgert sim modbus` with
  that config in its own process and returns its address (the pty path for
  `port`, or "host:port"); every simulator is stopped at teardown.
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

__all__ = ["modbus_sim", "modbus_peer"]


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
def modbus_peer(tmp_path: Path) -> Iterator[Callable[..., Peer]]:
    with contextlib.ExitStack() as stack:
        n = 0

        def start(transport: str = "rtu", units: tuple[int, ...] = (1,), **kw: Any) -> Peer:
            nonlocal n
            n += 1
            link = str(tmp_path / f"ttyUSB{n}") if transport == "rtu" else None
            return stack.enter_context(pymodbus_peer(transport, units, link=link, **kw))

        yield start
