"""The GPIO driver under a real gateway, on a simulated chip driven from the test.

The driver runs as a real process under the supervisor; its points reach a real
nats-server through the bridge, and commands come back as NATS requests. The
test drives the chip's input levels and reads its output levels as another
process would (`SimChip`), and waits for conditions with deadlines.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from nats.errors import NoRespondersError

from edgert.testing import running_gateway, status, wait_for
from edgert.testing.nats import NatsProcess, Subscriber, decode, request
from edgert_drivers.gpio.simchip import SimChip

FAST = """
[supervisor]
backoff_min = 0.1
backoff_max = 0.5
intensity = 20
period = 30
shutdown_timeout = 5
"""


def gateway(url: str, chip: SimChip, lines: str, **keys: object) -> str:
    extra = "".join(f"{k} = {v!r}\n" for k, v in keys.items())
    return (
        f'{FAST}\n[nats]\nurl = "{url}"\n\n'
        f'[[driver]]\nname = "io"\ntype = "gpio"\nchip = "sim:{chip.path}"\n{extra}\n{lines}'
    )


@pytest.fixture
def chip(short_dir: Path) -> SimChip:
    return SimChip.create(short_dir / "chip", lines=32)


@pytest.fixture
def points(nats_server: NatsProcess) -> Iterator[Subscriber]:
    with Subscriber(nats_server.url, "edgert.gw.p.io") as sub:
        yield sub


def values(sub: Subscriber, line: str) -> list[Any]:
    return [p["value"] for p in sub.points("io") if p["type"] == line]


def wait_values(sub: Subscriber, line: str, expected: list[Any], timeout: float = 10) -> None:
    try:
        wait_for(lambda: values(sub, line) == expected, timeout, f"{line} = {expected}")
    except TimeoutError as e:
        raise AssertionError(f"{e}; got {values(sub, line)}") from None
    assert values(sub, line) == expected


def command(url: str, *points: tuple[str, Any], node: str = "io") -> dict[str, Any]:
    batch = [
        {"node": node, "type": t, "key": "0", "value": v, "time": 0, "origin": "test"}
        for t, v in points
    ]

    def ask() -> dict[str, Any] | None:
        try:
            reply = request(
                url,
                f"edgert.gw.cmd.{node}",
                msgpack.packb(batch),
                headers={"Content-Type": "application/msgpack"},
            )
        except NoRespondersError:
            return None  # the bridge has not subscribed yet
        answer = decode(reply)
        if "is not running" in answer.get("error", ""):
            return None  # the bridge does not see the driver's bus connection yet
        return answer

    return wait_for(ask, 10, "a reply to the command")


def io(cfg) -> dict[str, Any]:
    return status(cfg)["by_name"]["io"]


def wait_stat(cfg, key: str, value: Any) -> None:
    """Wait for a figure the driver reports (it reaches status with its next heartbeat)."""
    wait_for(lambda: io(cfg)["stats"].get(key) == value, 10, f"stats {key} = {value!r}")


def running(cfg) -> dict[str, Any]:
    return wait_for(
        lambda: (a := io(cfg))["state"] == "running" and "values" in a["stats"] and a,
        15,
        "the gpio driver running with its lines requested",
    )


DOOR = '[[driver.line]]\nname = "door"\noffset = 17\nedge = "both"\n'
MARK = '[[driver.line]]\nname = "mark"\noffset = 30\n'  # an undebounced input, as a marker
RELAY = '[[driver.line]]\nname = "relay"\noffset = 5\ndirection = "output"\n'
LAMP = '[[driver.line]]\nname = "lamp"\noffset = 6\ndirection = "output"\ninitial = true\n'


def test_inputs_publish_at_start_and_on_each_edge_with_its_time(
    make_config, nats_server, chip, points
) -> None:
    chip.set({17: 1})
    polled = '[[driver.line]]\nname = "tank"\noffset = 4\nedge = "none"\n'
    cfg = make_config(gateway(nats_server.url, chip, DOOR + polled, poll_interval=0.2))
    with running_gateway(cfg):
        wait_values(points, "door", [True])
        wait_values(points, "tank", [False])
        t0 = time.time_ns()
        chip.set({17: 0})
        chip.set({17: 1})
        t1 = time.time_ns()
        wait_values(points, "door", [True, False, True])
        stamps = [p["time"] for p in points.points("io") if p["type"] == "door"][1:]
        assert t0 <= stamps[0] <= stamps[1] <= t1  # the edges' own times, not when sent
        chip.set({4: 1})  # no edges: seen by the next poll
        wait_values(points, "tank", [False, True])
        assert all(p["origin"] == "" and p["key"] == "0" for p in points.points("io"))
        wait_stat(cfg, "edges", 2)


def test_debounce_collapses_a_burst_of_flips_into_one_edge(
    make_config, nats_server, chip, points
) -> None:
    door = DOOR + "debounce = 0.1\n"
    cfg = make_config(gateway(nats_server.url, chip, door + MARK))
    with running_gateway(cfg):
        wait_values(points, "door", [False])
        for level in (1, 0, 1, 0, 1, 0, 1):  # contact bounce, much faster than 0.1 s
            chip.set({17: level})
        wait_values(points, "door", [False, True])
        chip.set({30: 1})  # the door has settled: anything after it would come before this
        wait_values(points, "mark", [False, True])
        assert values(points, "door") == [False, True]
        wait_stat(cfg, "edges", 2)  # door once, mark once


def test_active_low_inverts_inputs_and_outputs(make_config, nats_server, chip, points) -> None:
    lines = DOOR + "active_low = true\n" + RELAY + "active_low = true\n"
    cfg = make_config(gateway(nats_server.url, chip, lines))
    with running_gateway(cfg):
        wait_values(points, "door", [True])  # physically low
        wait_values(points, "relay", [False])
        assert chip.levels()[5] is True  # logical false drives the line high
        chip.set({17: 1})
        wait_values(points, "door", [True, False])
        assert command(nats_server.url, ("relay", True)) == {"ok": True}
        assert chip.levels()[5] is False


def test_commands_write_outputs_and_refused_batches_write_nothing(
    make_config, nats_server, chip, points
) -> None:
    cfg = make_config(gateway(nats_server.url, chip, DOOR + RELAY + LAMP))
    with running_gateway(cfg):
        wait_values(points, "lamp", [True])
        assert chip.levels()[5:7] == [False, True]
        assert command(nats_server.url, ("relay", True), ("lamp", 0)) == {"ok": True}
        assert chip.levels()[5:7] == [True, False]
        wait_values(points, "relay", [False, True])
        wait_values(points, "lamp", [True, False])
        assert {p["origin"] for p in points.points("io")[-2:]} == {"test"}
        refused = {
            "is an input": [("relay", False), ("door", True)],
            "no line 'fan'": [("lamp", 1), ("fan", 1)],
            "takes true/false or 0/1": [("relay", False), ("lamp", 2)],
            "got 'on'": [("lamp", "on")],
            "got 1.0": [("relay", 1.0)],
        }
        for why, batch in refused.items():
            reply = command(nats_server.url, *batch)
            assert reply["ok"] is False and why in reply["error"], reply
        assert chip.levels()[5:7] == [True, False]  # nothing of a refused batch was written
        wait_stat(cfg, "refused", len(refused))
        assert values(points, "relay") == [False, True]
        assert values(points, "lamp") == [True, False]
        assert values(points, "door") == [False]


def test_on_stop_initial_restores_outputs_when_the_gateway_stops(
    make_config, nats_server, chip
) -> None:
    lines = RELAY + 'on_stop = "initial"\n' + LAMP + 'on_stop = "keep"\n'
    cfg = make_config(gateway(nats_server.url, chip, lines))
    with running_gateway(cfg):
        running(cfg)
        assert command(nats_server.url, ("relay", 1), ("lamp", 0)) == {"ok": True}
        assert chip.levels()[5:7] == [True, False]
    assert chip.levels()[5:7] == [False, False]  # relay back to initial; lamp kept
    assert chip.holders() == {}  # every line released


def test_killed_driver_is_restarted_and_requests_its_lines_again(
    make_config, nats_server, chip, points
) -> None:
    cfg = make_config(gateway(nats_server.url, chip, DOOR + RELAY))
    with running_gateway(cfg):
        first = running(cfg)["pid"]
        wait_values(points, "door", [False])  # delivered before the kill
        assert chip.holders()[17].pid == first
        os.kill(first, signal.SIGKILL)
        a = wait_for(lambda: (a := running(cfg))["pid"] != first and a, 15, "the driver restarted")
        assert a["restarts"] == 1 and "SIGKILL" in a["last_error"]
        assert a["stats"]["request_failures"] == 0  # its lines were free at once: never busy
        assert {h.pid for h in chip.holders().values()} == {a["pid"]}
        assert command(nats_server.url, ("relay", True)) == {"ok": True}
        assert chip.levels()[5] is True
        chip.set({17: 1})
        wait_values(points, "door", [False, False, True])  # at each start, then the edge


def test_driver_waits_for_its_chip_and_starts_when_it_appears(
    make_config, nats_server, short_dir, points
) -> None:
    chip = SimChip(short_dir / "later")
    cfg = make_config(gateway(nats_server.url, chip, DOOR + RELAY))
    with running_gateway(cfg):
        a = wait_for(lambda: (a := io(cfg))["stats"].get("now") and a, 15, "waiting")
        assert a["stats"]["now"].startswith("waiting: ")
        assert "no simulated GPIO chip" in a["stats"]["now"]
        reply = command(nats_server.url, ("relay", True))
        assert reply["ok"] is False and "not requested yet" in reply["error"]
        SimChip.create(chip.path, lines=32)
        wait_values(points, "door", [False])
        a = running(cfg)
        assert a["restarts"] == 0 and a["stats"]["now"] == ""
