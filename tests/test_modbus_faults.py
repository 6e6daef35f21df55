"""Bus faults: a silent device, CRC errors, a port that disappears, a killed driver.

Each test runs a real pymodbus server in its own process behind a relay that
injects the fault; the first two run the driver in-process, the last two run
a whole gateway (the driver in its own supervised process) and watch it with
`edgert status`.
"""

from __future__ import annotations

import os
import signal
import time

import serial

from edgert.testing import pid_alive, running_gateway, status, wait_for
from edgert.testing.harness import run_driver
from edgert_drivers.modbus import ModbusDriver
from edgert_drivers.modbus.sim import raw_pty


def two_devices(port: str, **keys) -> dict:
    regs = [{"name": "n", "address": 0}]
    return {
        "port": port,
        "parity": "N",
        "baudrate": 115200,
        "timeout": 0.1,
        "retries": 1,
        "poll_interval": 0.1,
        **keys,
        "device": [
            {"name": "good", "unit": 1, "register": regs},
            {"name": "quiet", "unit": 2, "register": regs, "probe_interval": 1.0},
        ],
    }


def test_a_silent_device_goes_offline_and_the_other_keeps_its_rate(modbus_peer) -> None:
    peer = modbus_peer("rtu", units=(1, 2))
    peer.set(2, "holding", 0, [7])
    with run_driver(ModbusDriver, two_devices(peer.port)) as run:
        wait_for(lambda: run.latest("quiet", "n") == 7 and run.latest("good", "n") == 0, 10, "both")
        assert run.latest("quiet", "online") is True
        peer.fault(drop_units=[2])
        wait_for(lambda: run.latest("quiet", "online") is False, 5, "quiet offline")
        seen = len(run.values("quiet", "n"))
        t1 = run.latest("quiet", "errors_timeout")
        assert t1 >= 2  # the request and its retry
        peer.set(1, "holding", 0, [1])  # `good` goes on being read
        t0, n0, q0 = time.monotonic(), peer.requests(unit=1), run.latest("quiet", "errors_timeout")
        wait_for(lambda: time.monotonic() - t0 >= 3.0, 5, "three seconds")
        elapsed, q1 = time.monotonic() - t0, run.latest("quiet", "errors_timeout")
        # `good` keeps being read while `quiet` is only probed once a second (a request
        # and its retry: 2 timeouts), not at every 0.1 s poll (20 a second). Counted, not
        # timed: on a loaded machine the driver polls less often, never `quiet` more.
        assert peer.requests(unit=1) - n0 >= 3
        assert q1 - q0 <= 2 * (elapsed + 1), (q0, q1, elapsed)
        assert run.latest("good", "n") == 1 and run.latest("good", "online") is True
        assert q1 >= t1 + 2  # probed, once a second
        assert len(run.values("quiet", "n")) == seen  # no stale value passed off as fresh
        assert run.values("good", "online") == [True]
        peer.fault()
        wait_for(lambda: run.latest("quiet", "online") is True, 5, "quiet back")
        wait_for(lambda: len(run.values("quiet", "n")) == seen + 1, 2, "its value sent afresh")


def test_crc_errors_are_counted_and_recovered(modbus_peer) -> None:
    peer = modbus_peer("rtu", units=(1,))
    # A long timeout: the faults here are CRC errors, and a loaded machine must not
    # add timeouts of its own (a corrupt answer is refused on arrival, not waited out).
    cfg = two_devices(peer.port, timeout=1.0)
    cfg["device"] = cfg["device"][:1]
    with run_driver(ModbusDriver, cfg) as run:
        wait_for(lambda: run.latest("good", "online") is True, 10, "online")
        peer.fault(corrupt_every=3)  # every third answer has a flipped CRC byte
        wait_for(lambda: (run.latest("good", "errors_crc") or 0) >= 5, 10, "CRC errors counted")
        peer.set(1, "holding", 0, [42])
        wait_for(lambda: run.latest("good", "n") == 42, 5, "values still read (retried)")
        peer.fault()
        crc = run.latest("good", "errors_crc")
        n0 = peer.requests(unit=1)
        wait_for(lambda: peer.requests(unit=1) >= n0 + 10, 5, "ten more polls")
        assert run.latest("good", "errors_crc") <= crc + 1
        assert run.values("good", "online") == [True]  # retries kept it online throughout
        assert run.latest("good", "errors_timeout") == 0


BUS = """
[supervisor]
backoff_min = 0.2
backoff_max = 1.0
intensity = 10
period = 30
shutdown_timeout = 3

[[driver]]
name = "bus"
type = "modbus"
port = "{port}"
parity = "N"
baudrate = 115200
timeout = {timeout}
poll_interval = 0.05
reopen_min = 0.2
reopen_max = 1.0

[[driver.device]]
name = "meter"
unit = 1

[[driver.device.register]]
name = "n"
address = 0
"""


def stats(cfg) -> dict:
    return status(cfg)["by_name"]["bus"]


def test_unplugged_port_is_reopened_without_a_restart_storm(modbus_peer, make_config) -> None:
    peer = modbus_peer("rtu")
    cfg = make_config(BUS.format(port=peer.port, timeout=0.2))
    with running_gateway(cfg):
        a = wait_for(
            lambda: (a := stats(cfg))["stats"].get("requests", 0) >= 10 and a, 15, "polling"
        )
        pid = a["pid"]
        t0 = time.monotonic()
        peer.unplug()  # the adapter is pulled: its tty hangs up, its device node goes away
        wait_for(lambda: stats(cfg)["stats"].get("port") == "closed", 5, "port closed")
        wait_for(lambda: stats(cfg)["stats"].get("open_failures", 0) >= 3, 15, "three re-opens")
        elapsed = time.monotonic() - t0
        a = stats(cfg)
        assert a["pid"] == pid and a["restarts"] == 0 and a["state"] == "running"
        # backoff from 0.2 s doubling (jitter +-20 %): three tries take 0.2 + 0.4 s at least
        tries = a["stats"]["open_failures"]
        assert elapsed >= 0.45 and tries <= 3 + elapsed / 0.16, (tries, elapsed)
        peer.plug()  # back in, under the same name
        wait_for(lambda: stats(cfg)["stats"].get("port") == "open", 5, "re-opened")
        n = stats(cfg)["stats"]["requests"]
        a = wait_for(lambda: (a := stats(cfg))["stats"]["requests"] >= n + 10 and a, 5, "resumed")
        assert a["pid"] == pid and a["restarts"] == 0
        assert a["stats"]["devices_online"] == 1


def test_killed_mid_request_the_restarted_driver_reopens_the_port(modbus_peer, make_config) -> None:
    peer = modbus_peer("rtu")
    peer.fault(delay=0.3)  # every answer takes 0.3 s: a kill lands inside a request
    cfg = make_config(BUS.format(port=peer.port, timeout=1.0))
    with running_gateway(cfg):
        a = wait_for(
            lambda: (a := stats(cfg))["stats"].get("requests", 0) >= 2 and a, 15, "polling"
        )
        victim = a["pid"]
        n = peer.requests()
        wait_for(lambda: peer.requests() > n, 2, "a request on its way")  # answer pending 0.3 s
        os.kill(victim, signal.SIGKILL)
        a = wait_for(
            lambda: (
                (a := stats(cfg))["pid"] not in (None, victim)
                and a["stats"].get("requests", 0) >= 2
                and a
            ),
            15,
            "restarted and polling",
        )
        assert not pid_alive(victim)
        assert a["restarts"] == 1 and "SIGKILL" in a["last_error"]
        assert a["stats"]["port"] == "open" and a["stats"]["open_failures"] == 0
        assert "busy" not in a["stats"]["port_error"]


def test_a_port_refusing_its_settings_is_one_clear_error_not_a_restart_storm(
    make_config,
) -> None:
    # A raw pseudo-terminal whose only other end is the master (as `edgert sim modbus`
    # makes) refuses even parity (tcsetattr: EINVAL), as an adapter refuses a baud rate
    # it lacks: the driver must say which port and settings, and retry with backoff in
    # the same process, not crash with a termios traceback and be given up on.
    master, slave = raw_pty()
    path = os.ttyname(slave)
    os.close(slave)  # as the simulator does: only the master stays open
    try:
        # once a client with parity "N" has come and gone, as a first run would have
        serial.Serial(port=path, baudrate=115200, parity="N", timeout=0).close()
        bus = BUS.format(port=path, timeout=0.2).replace('parity = "N"', 'parity = "E"')
        cfg = make_config(bus)
        with running_gateway(cfg):
            a = wait_for(
                lambda: (a := stats(cfg))["stats"].get("open_failures", 0) >= 2 and a,
                15,
                "two failed opens",
            )
            assert a["state"] == "running" and a["restarts"] == 0, a
            err = a["stats"]["port_error"]
            assert path in err and "parity 'E'" in err, err
            assert "termios" not in err
    finally:
        os.close(master)
