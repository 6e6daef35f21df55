"""`edgert check` catches what `run` would fail on, before systemd loops on it."""

from __future__ import annotations

import socket
from pathlib import Path

from click.testing import CliRunner

from edgert.cli import cli

DRIVER = '[[driver]]\nname = "gen"\ntype = "sim"\n[[driver.signal]]\nname = "t"\n'


def write(tmp_path: Path, body: str, data_dir: Path | None = None) -> str:
    data = data_dir or tmp_path / "data"
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        f'[gateway]\nid = "gw"\nruntime_dir = "{tmp_path}/run"\ndata_dir = "{data}"\n{body}'
    )
    return str(cfg)


def test_embedded_nats_on_a_busy_port_is_an_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = write(tmp_path, f'[nats]\nurl = "nats://127.0.0.1:{port}"\nembedded = true\n{DRIVER}')
        res = CliRunner().invoke(cli, ["check", cfg])
    assert res.exit_code == 2, res.output
    assert f"127.0.0.1:{port}" in res.output and "already in use" in res.output
    assert "ok:" not in res.output
    # The same config with the port free passes.
    res = CliRunner().invoke(cli, ["check", cfg])
    assert res.exit_code == 0, res.output


def test_a_data_dir_that_cannot_be_made_is_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cfg = write(tmp_path, f"[nats]\nenabled = false\n{DRIVER}", data_dir=blocker / "spool")
    res = CliRunner().invoke(cli, ["check", cfg])
    assert res.exit_code == 2, res.output
    assert "[gateway] data_dir" in res.output and "is not a directory" in res.output


def test_a_missing_serial_port_is_only_a_warning(tmp_path: Path) -> None:
    body = (
        '[nats]\nenabled = false\n[[driver]]\nname = "bus"\ntype = "modbus"\n'
        'transport = "rtu"\nport = "/dev/ttyNOPE7"\n[[driver.device]]\nname = "m"\nunit = 1\n'
        '[[driver.device.register]]\nname = "v"\ntable = "holding"\naddress = 0\n'
    )
    res = CliRunner().invoke(cli, ["check", write(tmp_path, body)])
    assert res.exit_code == 0, res.output
    assert "warning: [[driver]] 'bus': port /dev/ttyNOPE7 does not exist" in res.output
    assert "ok: gateway 'gw'" in res.output


def test_a_spool_larger_than_the_free_space_is_a_warning(tmp_path: Path) -> None:
    import os

    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    too_big = free * 4 + 10**9
    cfg = write(tmp_path, f"[nats]\nspool_max_bytes = {too_big}\n{DRIVER}")
    res = CliRunner().invoke(cli, ["check", cfg])
    assert res.exit_code == 0, res.output
    assert f"spool_max_bytes = {too_big} is more than the" in res.output, res.output
    fits = write(tmp_path, f"[nats]\nspool_max_bytes = 1000000\n{DRIVER}")
    assert "spool_max_bytes" not in CliRunner().invoke(cli, ["check", fits]).output


def test_run_refuses_a_busy_embedded_port_in_one_line_naming_the_holder(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = write(tmp_path, f'[nats]\nurl = "nats://127.0.0.1:{port}"\nembedded = true\n{DRIVER}')
        r = subprocess.run(
            [sys.executable, "-m", "edgert", "run", cfg], capture_output=True, text=True, timeout=60
        )
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr  # one line, no restart loop, no traceback
    assert f"127.0.0.1:{port}" in lines[0] and "already in use" in lines[0]
    assert f"held by pid {os.getpid()}" in lines[0], lines[0]
    assert not (tmp_path / "data" / "nats").exists()  # the server was never started
    assert not list((tmp_path / "run").glob("*.sock"))  # nothing left behind
