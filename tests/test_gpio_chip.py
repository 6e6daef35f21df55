"""The simulated GPIO chip behaves as the kernel's: exclusive, logical, debounced, released on death.

And `edgert sim gpio` drives it from the command line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgert.testing import wait_for
from edgert_drivers.gpio.backend import LineSettings, open_backend
from edgert_drivers.gpio.simchip import SimChip, SimChipError
from edgert_drivers.gpio.simcli import gpio

IN = LineSettings("input", "both")
OUT = LineSettings("output", initial=True)


@pytest.fixture
def chip(short_dir: Path) -> SimChip:
    return SimChip.create(short_dir / "chip", lines=8)


def request(chip: SimChip, settings: dict[int, LineSettings]):
    return open_backend(f"sim:{chip.path}").request("test", settings)


def test_a_held_line_is_busy_until_its_request_is_closed(chip) -> None:
    with request(chip, {1: IN, 2: OUT}):
        with pytest.raises(OSError) as e:
            request(chip, {3: IN, 2: IN})
        assert e.value.errno == 16 and "line 2" in str(e.value)  # EBUSY
        assert set(chip.holders()) == {1, 2}
        with request(chip, {3: IN}):  # the failed request left line 3 free
            pass
    assert chip.holders() == {}
    with request(chip, {1: IN, 2: OUT}):
        pass


def test_a_killed_holder_releases_its_lines(chip) -> None:
    code = (
        "import sys, time\n"
        "from edgert_drivers.gpio.backend import open_backend, LineSettings\n"
        f"r = open_backend('sim:{chip.path}').request('victim', {{4: LineSettings()}})\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline() == "held\n"
        assert chip.holders()[4].pid == p.pid
        with pytest.raises(OSError, match="busy"):
            request(chip, {4: IN})
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    with request(chip, {4: IN}) as r:
        chip.set({4: 1})  # the dead request's socket is removed on the way
        wait_for(lambda: r.read_events(), 5, "the edge")
    assert list(chip.path.glob("events-*.sock")) == []


def test_values_and_edges_are_logical_with_active_low(chip) -> None:
    low = LineSettings("input", "rising", active_low=True)
    out = LineSettings("output", initial=True, active_low=True)
    with request(chip, {0: low, 1: out}) as r:
        assert r.get([0, 1]) == {0: True, 1: True}
        assert chip.levels()[:2] == [False, False]  # physical levels
        chip.set({0: 1})  # logical falling: not reported
        chip.set({0: 0})  # logical rising
        events = wait_for(lambda: r.read_events(), 5, "the rising edge")
        assert [(e.offset, e.value) for e in events] == [(0, True)]
        r.set({1: False})
        assert chip.levels()[1] is True


def test_debounce_reports_a_level_once_it_held(chip) -> None:
    with request(chip, {3: LineSettings("input", "both", debounce=0.05)}) as r:
        for level in (1, 0, 1, 0, 1):
            chip.set({3: level})
        events = wait_for(lambda: r.read_events(), 5, "the debounced edge")
        assert [(e.offset, e.value) for e in events] == [(3, True)]
        assert r.deadline() is None and r.get([3]) == {3: True}


def test_outside_world_cannot_drive_an_output_or_a_missing_line(chip) -> None:
    with request(chip, {2: OUT}):
        with pytest.raises(SimChipError, match="line 2 is an output"):
            chip.set({2: 0})
    with pytest.raises(SimChipError, match="no line 8"):
        chip.set({8: 1})
    assert chip.set({2: 0}) == 1  # released: an input again for the outside world


def test_a_missing_chip_or_offset_is_refused(short_dir: Path, chip) -> None:
    with pytest.raises(OSError, match="create it") as e:
        open_backend(f"sim:{short_dir}/nochip").request("t", {0: IN})
    assert e.value.errno == 2
    with pytest.raises(OSError, match="lines 0..7, not 9"):
        request(chip, {9: IN})


def test_cli_creates_sets_and_gets(short_dir: Path) -> None:
    env = {"EDGERT_GPIO_SIM_DIR": str(short_dir / "sims")}
    run = CliRunner().invoke
    r = run(gpio, ["board", "create", "--lines", "4"], env=env)
    assert r.exit_code == 0, r.output
    assert r.output.strip() == str(short_dir / "sims" / "board")
    assert run(gpio, ["board", "set", "1=1", "3=high"], env=env).exit_code == 0
    assert run(gpio, ["board", "get", "1", "2"], env=env).output == "1\n0\n"
    doc = json.loads(run(gpio, ["board", "get", "--json"], env=env).output)
    assert doc["levels"] == {"0": 0, "1": 1, "2": 0, "3": 1} and doc["held"] == {}
    with request(SimChip.named("sim:" + str(short_dir / "sims" / "board")), {2: OUT}):
        table = run(gpio, ["board", "get"], env=env).output
        assert f"output of test (pid {os.getpid()})" in table
        r = run(gpio, ["board", "set", "2=0"], env=env)
        assert r.exit_code == 2 and "line 2 is an output" in r.output
    for bad in (["board", "set", "1"], ["board", "set", "9=1"], ["nope", "get"]):
        r = run(gpio, bad, env=env)
        assert r.exit_code == 2 and "Error" in r.output, (bad, r.output)
    assert run(gpio, ["board", "delete"], env=env).exit_code == 0
    assert not (short_dir / "sims" / "board").exists()


def test_cli_help_has_an_example() -> None:
    r = CliRunner().invoke(gpio, ["--help"])
    assert r.exit_code == 0 and "edgert sim gpio board set 17=1" in r.output
