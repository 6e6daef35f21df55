"""The `gpio` driver's config: every mistake is refused with its key named.

Also: the example config checks, and the translation of line settings into
libgpiod's `LineSettings` (built with the real `gpiod` package, which the `test`
extra installs, and as plain names without it), and of a libgpiod request's
events and values (a stand-in request object: no GPIO hardware here).
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from edgert.config import ConfigError
from edgert_drivers.gpio.backend import LineSettings
from edgert_drivers.gpio.config import Line
from edgert_drivers.gpio.driver import as_bool, settings_for
from edgert_drivers.gpio.kernel import Member, chip_path, gpiod_settings, to_gpiod

ROOT = Path(__file__).resolve().parent.parent


def driver(*lines: str, chip: str = "sim:board") -> str:
    body = f'[[driver]]\nname = "io"\ntype = "gpio"\nchip = "{chip}"\n'
    for ln in lines:
        body += f"[[driver.line]]\n{ln}\n"
    return body


DOOR = 'name = "door"\noffset = 17'
RELAY = 'name = "relay"\noffset = 5\ndirection = "output"'


def test_a_good_config_decodes_with_defaults(make_config) -> None:
    cfg = make_config(driver(DOOR, RELAY + "\ninitial = true\non_stop = 'initial'"))
    gpio = cfg.drivers[0].config
    door, relay = gpio.line
    assert gpio.poll_interval == 1.0
    assert (door.direction, door.edges, door.bias, door.debounce_s) == ("input", "both", "as_is", 0)
    assert relay.edges == "none" and relay.initial_value and relay.restore_on_stop


@pytest.mark.parametrize(
    ("lines", "key", "words"),
    [
        ((DOOR, 'name = "door"\noffset = 18'), "line.name", "both named 'door'"),
        ((DOOR, 'name = "window"\noffset = 17'), "line.offset", "both use offset 17"),
        ((DOOR + "\ninitial = true",), "initial", "'door' is an input"),
        ((DOOR + "\non_stop = 'initial'",), "on_stop", "'door' is an input"),
        ((RELAY + "\nedge = 'both'",), "edge", "'relay' is an output"),
        ((RELAY + "\ndebounce = 0.01",), "debounce", "'relay' is an output"),
        ((DOOR + "\nbias = 'pullup'",), "bias", "'as_is' | 'disabled' | 'pull_up' | 'pull_down'"),
        ((DOOR + "\ndirection = 'in'",), "direction", "'input' | 'output'"),
        ((DOOR + "\nedge = 'up'",), "edge", "'none' | 'rising' | 'falling' | 'both'"),
        ((DOOR + "\ndebounce = -1",), "debounce", ">= 0"),
        (('name = "door 1"\noffset = 17',), "name", "may contain only"),
        (('name = "door"\noffset = -1',), "offset", ">= 0"),
        ((DOOR + "\nspeed = 3",), "speed", "unknown key"),
        ((), "line", "at least one"),
    ],
)
def test_config_errors_name_the_key(make_config, lines, key, words) -> None:
    with pytest.raises(ConfigError) as e:
        make_config(driver(*lines))
    msg = str(e.value)
    assert f"'{key}'" in msg and words in msg and "[[driver]] 'io'" in msg


def test_a_bad_simulated_chip_name_is_refused(make_config) -> None:
    with pytest.raises(ConfigError, match=r"key 'chip': 'sim:a b'"):
        make_config(driver(DOOR, chip="sim:a b"))


def test_example_config_checks() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "edgert", "check", str(ROOT / "configs" / "gpio-example.toml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_line_settings_translate_to_libgpiod_names() -> None:
    door = Line(name="door", offset=17, bias="pull_up", active_low=True, debounce=0.01)
    assert gpiod_settings(settings_for(door)) == {
        "direction": Member("Direction", "INPUT"),
        "edge_detection": Member("Edge", "BOTH"),
        "bias": Member("Bias", "PULL_UP"),
        "active_low": True,
        "debounce_period": timedelta(milliseconds=10),
        "event_clock": Member("Clock", "MONOTONIC"),
    }
    relay = Line(name="relay", offset=5, direction="output", initial=True, bias="disabled")
    assert gpiod_settings(settings_for(relay)) == {
        "direction": Member("Direction", "OUTPUT"),
        "bias": Member("Bias", "DISABLED"),
        "active_low": False,
        "output_value": Member("Value", "ACTIVE"),
    }
    assert chip_path("gpiochip1") == "/dev/gpiochip1"
    assert chip_path("/dev/gpiochip0") == "/dev/gpiochip0"


def test_line_settings_build_real_gpiod_settings() -> None:
    import gpiod  # the `test` and `gpio` extras install it
    from gpiod.line import Bias, Clock, Direction, Edge, Value

    s = to_gpiod(LineSettings("input", "falling", "pull_down", True, 0.25), gpiod)
    assert s == gpiod.LineSettings(
        direction=Direction.INPUT,
        edge_detection=Edge.FALLING,
        bias=Bias.PULL_DOWN,
        active_low=True,
        debounce_period=timedelta(seconds=0.25),
        event_clock=Clock.MONOTONIC,
    )
    out = to_gpiod(LineSettings("output", bias="as_is", initial=False), gpiod)
    assert (out.direction, out.output_value, out.edge_detection) == (
        Direction.OUTPUT,
        Value.INACTIVE,
        Edge.NONE,
    )


def test_a_missing_real_chip_is_an_oserror_the_driver_retries() -> None:
    from edgert_drivers.gpio.backend import open_backend

    with pytest.raises(OSError):
        open_backend("/dev/gpiochip-none").request("t", {0: LineSettings()})


@pytest.mark.parametrize(
    ("value", "level"),
    [
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        (2, None),
        (1.0, None),
        ("on", None),
        (None, None),
    ],
)
def test_command_values_are_booleans_or_0_1(value, level) -> None:
    assert as_bool(value) is level


class _FakeGpiodRequest:
    """What KernelRequest uses of a gpiod.LineRequest, recording the calls."""

    def __init__(self, events: list) -> None:
        self.fd = 42
        self.events = events
        self.written: list[dict] = []
        self.released = 0

    def wait_edge_events(self, timeout: float) -> bool:
        assert timeout == 0  # never blocks
        return bool(self.events)

    def read_edge_events(self) -> list:
        out, self.events = self.events, []
        return out

    def get_values(self, offsets: list[int]) -> list:
        from gpiod.line import Value

        return [Value.ACTIVE if o % 2 else Value.INACTIVE for o in offsets]

    def set_values(self, values: dict) -> None:
        self.written.append(values)

    def release(self) -> None:
        self.released += 1


def test_kernel_request_translates_events_and_values() -> None:
    import time

    import gpiod
    from gpiod.line import Value

    from edgert_drivers.gpio.kernel import KernelRequest

    rising = gpiod.EdgeEvent(gpiod.EdgeEvent.Type.RISING_EDGE.value, time.monotonic_ns(), 17, 1, 1)
    falling = gpiod.EdgeEvent(gpiod.EdgeEvent.Type.FALLING_EDGE.value, time.monotonic_ns(), 4, 2, 1)
    fake = _FakeGpiodRequest([rising, falling])
    with KernelRequest(fake, gpiod) as r:
        assert r.fileno() == 42 and r.deadline() is None
        events = r.read_events()
        assert [(e.offset, e.value) for e in events] == [(17, True), (4, False)]
        assert abs(events[0].time_ns - time.time_ns()) < 1_000_000_000  # monotonic -> epoch
        assert r.read_events() == []
        assert r.get([3, 4]) == {3: True, 4: False}
        r.set({5: True, 6: False})
        assert fake.written == [{5: Value.ACTIVE, 6: Value.INACTIVE}]
        r.close()
    assert fake.released == 1
