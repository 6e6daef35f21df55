"""CLI edges a person hits: times past 2038 in `tail`, `cmd` with NATS unreachable."""

from __future__ import annotations

import socket
from pathlib import Path

from click.testing import CliRunner

from edgert import Point
from edgert.cli import cli
from edgert.cli.tail import format_point, utc_stamp


def test_tail_formats_times_past_2038_and_outside_the_calendar() -> None:
    # 2**31 s is where a 32-bit time_t (armhf) ends.
    assert utc_stamp(2**31 * 10**9 + 5_000_000) == "2038-01-19T03:14:08.005Z"
    assert utc_stamp(0) == "1970-01-01T00:00:00.000Z"
    assert utc_stamp(10**30) == f"{10**30}ns"
    line = format_point(Point("n", "t", "0", 1.5, time=4_102_444_800 * 10**9))
    assert line.startswith("2100-01-01T00:00:00.000Z  n  t  0  1.5")


def test_cmd_with_nats_unreachable_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        f'[gateway]\nid = "gw"\n[nats]\nurl = "nats://127.0.0.1:{port}"\n'
        '[[driver]]\nname = "gen"\ntype = "sim"\n[[driver.signal]]\nname = "t"\n'
    )
    res = CliRunner().invoke(cli, ["cmd", "--config", str(cfg), "--timeout", "2", "gen", "t=1"])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    assert f"cannot reach NATS at nats://127.0.0.1:{port}" in lines[0]
    assert "nothing was sent" in lines[0]


def test_cmd_with_no_gateway_on_nats_says_which_one_in_one_line(
    short_dir: Path, nats_server
) -> None:
    cfg = short_dir / "gw.toml"
    cfg.write_text(
        f'[gateway]\nid = "gone"\n[nats]\nurl = "{nats_server.url}"\n'
        '[[driver]]\nname = "gen"\ntype = "sim"\n[[driver.signal]]\nname = "t"\n'
    )
    res = CliRunner().invoke(cli, ["cmd", "--config", str(cfg), "--timeout", "5", "gen", "t=1"])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    assert lines[0].startswith("edgert: error: no gateway 'gone' listens on edgert.gone.cmd.gen")
    assert "nothing was sent" in lines[0]


def test_tail_of_a_gateway_without_a_bridge_says_so_instead_of_waiting(make_config) -> None:
    from edgert.testing import running_gateway, status, wait_for

    cfg = make_config(
        '[nats]\nenabled = false\n[[driver]]\nname = "gen"\ntype = "sim"\n'
        '[[driver.signal]]\nname = "t"\n'
    )
    with running_gateway(cfg):
        wait_for(lambda: status(cfg)["by_name"]["gen"]["state"] == "running", 30, "gen up")
        res = CliRunner().invoke(cli, ["tail", "--runtime-dir", str(cfg.runtime_dir)])
    assert res.exit_code == 1, res.output
    assert res.output.startswith("edgert: error: ") and "runs without a bridge" in res.output
    assert len(res.output.splitlines()) == 1, res.output
