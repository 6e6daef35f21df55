"""`edgert status` as a table: one row per actor, with what each says of its present state."""

from __future__ import annotations

import re

from edgert.control import format_status


def actor(name: str, **extra: object) -> dict:
    a = {
        "name": name,
        "kind": "x",
        "pid": 42,
        "state": "running",
        "restarts": 0,
        "uptime": 75.0,
        "points_out": 10,
        "buffered": 0,
        "dropped": 0,
        "last_error": "",
        "stats": {},
    }
    a.update(extra)
    return a


def test_the_table_shows_nats_link_waits_closed_ports_and_drops() -> None:
    snap = {
        "gateway": "gw1",
        "actors": [
            actor("bridge", stats={"nats": "down: connection refused"}, dropped=7),
            actor("io", stats={"waiting": "chip /dev/gpiochip9 not found"}),
            actor("rs485", stats={"port": "closed", "port_error": "no such device"}),
            actor(
                "gen",
                state="backing_off",
                pid=None,
                restarts=2,
                uptime=0.0,
                last_error="Traceback ...\nRuntimeError: boom",
            ),
        ],
    }
    lines = format_status(snap).splitlines()
    assert lines[0] == "gateway gw1"
    assert lines[1].split() == [
        "NAME",
        "KIND",
        "PID",
        "STATE",
        "RESTARTS",
        "UPTIME",
        "POINTS_OUT",
        "BUFFERED",
        "NOW",
        "LAST_ERROR",
    ]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert "nats down: connection refused; dropped 7" in rows["bridge"]
    assert "waiting: chip /dev/gpiochip9 not found" in rows["io"]
    assert "port closed: no such device" in rows["rs485"]
    assert "backing_off" in rows["gen"] and rows["gen"].endswith("RuntimeError: boom")
    assert " - " in rows["gen"]  # no pid while backing off


def test_a_duplicate_id_and_an_unsynchronized_clock_are_said_under_the_table() -> None:
    bridge = actor("bridge", stats={"duplicate_id": "host pi2 pid 77", "clock": "unsynchronized"})
    snap = {"gateway": "gw1", "actors": [bridge, actor("gen")]}
    piped = format_status(snap).splitlines()
    assert len(piped) == 4 and "DUPLICATE ID" in piped[2]  # piped: the rows alone
    lines = format_status(snap, tty=True, width=400).splitlines()
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in lines]  # no colours
    assert lines[0] == "gateway gw1" and lines[1].split()[0] == "NAME"
    assert [line.split()[0] for line in lines[2:4]] == ["bridge", "gen"]
    assert "DUPLICATE ID: also host pi2 pid 77" in lines[2] and "clock unsynchronized" in lines[2]
    assert lines[4].startswith("WARNING: another gateway with this id is on NATS (host pi2 pid 77)")
    assert lines[5].startswith("warning: the clock is unsynchronized")
    quiet = format_status(
        {"gateway": "gw1", "actors": [actor("bridge", stats={"clock": "synchronized"})]}
    )
    assert len(quiet.splitlines()) == 3


def test_times_are_written_one_way_in_every_table() -> None:
    from edgert.table import age

    shown = [age(s) for s in (0.42, 12.0, 185.0, 7800.0, 3 * 86400 + 4 * 3600 + 5, -3.0)]
    assert shown == ["0.4s", "12s", "3m05s", "2h10m", "3d4h", "-3.0s"]
    snap = {"gateway": "gw1", "actors": [actor("gen", uptime=3 * 86400.0)]}
    snap["actors"].append(actor("drv", state="failed", pid=None, retry_in=185.0))
    table = format_status(snap)
    assert re.search(r"^gen .* 3d0h ", table, re.M), table  # status's uptime
    assert "retry in 3m05s" in table


def test_points_held_at_a_stop_are_lost_with_a_bridge_and_discarded_without() -> None:
    gen = actor("gen", kind="sim", lost_at_stop=14)
    bridged = format_status({"gateway": "g", "actors": [actor("bridge", kind="bridge"), gen]})
    assert "lost at stop 14" in bridged and "discarded" not in bridged
    alone = format_status({"gateway": "g", "actors": [gen]})
    assert "discarded at stop 14" in alone and "lost at stop" not in alone


def test_a_piped_table_is_laid_out_as_rich_does_without_importing_it() -> None:
    import subprocess
    import sys

    from edgert import table

    headers = ("NAME", "PID", "STATE", "POINTS", "LAST_ERROR")
    rows = [("bridge", 42, "running", 10, ""), ("gen", None, "failed", 123456, "boom: x y")]
    rows.append(("a-long-name", 7, "backing_off", 0, None))
    piped = table.render(headers, rows, tty=False, right=("PID", "POINTS"))
    saved, table._plain = table._plain, lambda *a: None  # rich's own layout
    try:
        assert piped == table.render(headers, rows, tty=False, right=("PID", "POINTS"))
        assert table.render(["A"], [["µ"]], tty=False) == "A\nµ"  # not ASCII: rich lays it out
    finally:
        table._plain = saved
    code = (
        "import sys; from edgert.table import render; "
        "print(render(['A', 'B'], [[1, 'x']], tty=False)); print('rich' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["A  B", "1  x", "False"]


def test_on_a_narrow_terminal_what_an_actor_says_goes_whole_under_its_row() -> None:
    error = "Traceback ...\nOSError: [Errno 2] could not open port /dev/ttyUSB0: No such file"
    snap = {
        "gateway": "gw1",
        "actors": [
            actor("nats", kind="nats"),
            actor("bridge", kind="bridge", stats={"nats": "connected"}),
            actor("meter", kind="modbus", state="backing_off", restarts=3, last_error=error),
        ],
    }

    def shown(s: dict, width: int) -> list[str]:
        return [
            re.sub(r"\x1b\[[0-9;]*m", "", ln) for ln in format_status(s, True, width).split("\n")
        ]

    # A Pi's console and an ssh window: no room for two text columns beside the figures.
    for width in (60, 80, 100):
        lines = shown(snap, width)
        assert all(len(line) <= width for line in lines), lines
        assert lines[1].split()[-1] == "BUFFERED" or width < 76, lines  # NOW is not a column
        # (the actors' names are never cut; below 76 columns the figures' columns are)
        assert [ln.split()[0] for ln in lines[2:6]] == ["nats", "bridge", "NOW:", "meter"], lines
        under = " ".join(line.strip() for line in lines[6:])
        assert lines[4].strip() == "NOW: nats connected"
        assert (
            under == "LAST_ERROR: OSError: [Errno 2] could not open port /dev/ttyUSB0: No such file"
        )
    assert shown(snap, 80)[2].split() == ["nats", "nats", "42", "running", "0", "75s", "10", "0"]
    # With room, they are columns again; with nothing to say, no line is added.
    wide = shown(snap, 200)
    assert len(wide) == 5 and wide[1].split()[-2:] == ["NOW", "LAST_ERROR"], wide
    assert wide[4].endswith("OSError: [Errno 2] could not open port /dev/ttyUSB0: No such file")
    quiet = shown({"gateway": "gw1", "actors": [actor("nats"), actor("gen")]}, 80)
    assert len(quiet) == 4 and all(len(line) <= 80 for line in quiet), quiet
