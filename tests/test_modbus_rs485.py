"""RS-485 direction control, as far as a pty allows: the settings reach pyserial, the
kernel mode is tried first, RTS is toggled around each request otherwise.

A pty has neither TIOCSRS485 nor modem lines, so the kernel mode and RTS are
refused there (the first two tests); the third replaces pyserial's two ioctls by
recorders, to see which settings reach it and when RTS changes.
"""

from __future__ import annotations

import time

import serial

from edgert.testing import wait_for
from edgert.testing.harness import run_driver
from edgert_drivers.modbus import ModbusDriver

SIM = """
[[device]]
unit = 1

[[device.register]]
address = 0
value = 485
"""


def config(port: str, **rs485) -> dict:
    return {
        "port": port,
        "parity": "N",
        "baudrate": 115200,
        "poll_interval": 0.02,
        "reopen_min": 0.1,
        "reopen_max": 0.2,
        "rs485": True,
        **rs485,
        "device": [{"name": "d", "unit": 1, "register": [{"name": "n", "address": 0}]}],
    }


def test_kernel_mode_refused_on_a_pty_is_reported(modbus_sim) -> None:
    port = modbus_sim(SIM)
    with run_driver(ModbusDriver, config(port, rs485_control="kernel")) as run:
        wait_for(lambda: "kernel RS-485 mode refused" in run.stats().get("port_error", ""), 10, "")
        assert run.stats()["port"] == "closed"


def test_software_control_needs_rts(modbus_sim) -> None:
    port = modbus_sim(SIM)
    with run_driver(ModbusDriver, config(port)) as run:  # auto: kernel, then software
        wait_for(lambda: "cannot drive RTS" in run.stats().get("port_error", ""), 10, "")


def test_settings_reach_pyserial_and_rts_brackets_each_request(modbus_sim, monkeypatch) -> None:
    port = modbus_sim(SIM)
    tried: list[serial.rs485.RS485Settings] = []
    rts: list[tuple[float, bool]] = []

    class Recorded(serial.Serial):
        def _reconfigure_port(self, force_update: bool = False) -> None:
            if self._rs485_mode is not None:
                tried.append(self._rs485_mode)
                raise ValueError("no TIOCSRS485 here")
            super()._reconfigure_port(force_update)

        def _update_rts_state(self) -> None:
            rts.append((time.monotonic(), self._rts_state))

    monkeypatch.setattr(serial, "Serial", Recorded)
    keys = {"delay_before_tx": 0.002, "delay_before_rx": 0.001, "rts_level_for_tx": True}
    with run_driver(ModbusDriver, config(port, **keys)) as run:
        wait_for(lambda: run.latest("d", "n") == 485, 10, "read with software control")
        wait_for(lambda: len(rts) >= 41, 10, "twenty requests")
    s = tried[0]
    assert (s.rts_level_for_tx, s.rts_level_for_rx) == (True, False)
    assert (s.delay_before_tx, s.delay_before_rx) == (0.002, 0.001)
    assert rts[0][1] is False  # receiving until the first request
    levels = [v for _t, v in rts[1:41]]
    assert levels == [True, False] * 20  # on for each request, off after it
    held = [b - a for (a, _), (b, _) in zip(rts[1:41:2], rts[2:41:2], strict=True)]
    # an 8-byte request at 115200 baud is 0.76 ms on a line (a pty drains at once)
    assert min(held) >= 0.003, held
