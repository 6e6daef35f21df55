"""`edgert check` catches what `run` would fail on, before systemd loops on it, and
`run` refuses the same things the same way: exit 2, one line naming the key and
the path, nothing created.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
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
    warning = f"edgert: warning: {tmp_path / 'gw.toml'}: [[driver]] 'bus': port /dev/ttyNOPE7"
    assert f"{warning} does not exist" in res.output
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
    assert not (tmp_path / "data").exists()  # refused before anything was made
    assert not (tmp_path / "run").exists()


def run(cfg: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgert", "run", cfg], capture_output=True, text=True, timeout=60
    )


UNMAKEABLE = {
    "proc": ("/proc/edgert-nope", "cannot create a directory in /proc"),
    "sys": ("/sys/edgert-nope", "cannot create a directory in /sys"),
    "under a file": ("{tmp}/file/sub", "{tmp}/file is not a directory"),
}


@pytest.mark.parametrize("key", ["runtime_dir", "data_dir"])
@pytest.mark.parametrize("where", sorted(UNMAKEABLE))
def test_run_and_check_refuse_a_directory_that_cannot_be_made_alike(
    tmp_path: Path, key: str, where: str
) -> None:
    path, why = (x.format(tmp=tmp_path) for x in UNMAKEABLE[where])
    (tmp_path / "file").write_text("not a directory")
    dirs = {"runtime_dir": f"{tmp_path}/run", "data_dir": f"{tmp_path}/data", key: path}
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        f'[gateway]\nid = "gw"\nruntime_dir = "{dirs["runtime_dir"]}"\n'
        f'data_dir = "{dirs["data_dir"]}"\n[nats]\nenabled = false\n{DRIVER}'
    )
    line = f'edgert: error: {cfg}: [gateway] {key} = "{path}": '
    checked = CliRunner().invoke(cli, ["check", str(cfg)])
    assert checked.exit_code == 2, checked.output
    assert checked.output.startswith(line) and why in checked.output, checked.output
    r = run(str(cfg))
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == checked.output.splitlines(), r.stderr  # the same line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "gw.toml"]  # nothing made


def test_a_refusal_after_the_directories_were_made_removes_them(tmp_path: Path) -> None:
    # Something answers on the control socket: check skips the port (a gateway may be
    # running there, holding it), run takes the lock (free: no gateway), makes the data
    # dir, then finds the port taken; it must not leave that data dir behind.
    rdir = tmp_path / "run"
    rdir.mkdir(mode=0o700)
    data = tmp_path / "new" / "data"
    with socket.socket(socket.AF_UNIX) as answers, socket.socket() as taken:
        answers.bind(str(rdir / "control.sock"))
        answers.listen()
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        body = f'[nats]\nurl = "nats://127.0.0.1:{port}"\nembedded = true\n{DRIVER}'
        r = run(write(tmp_path, body, data_dir=data))
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.splitlines()) == 1 and "already in use" in r.stderr, r.stderr
    assert not (tmp_path / "new").exists()
    assert rdir.exists() and not list(rdir.iterdir())  # it was there before: kept, emptied


def test_check_refuses_a_runtime_dir_other_users_could_tamper_with(tmp_path: Path) -> None:
    parent = tmp_path / "open"
    parent.mkdir()
    os.chmod(parent, 0o777)
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        f'[gateway]\nid = "gw"\nruntime_dir = "{parent}/gw"\ndata_dir = "{tmp_path}/data"\n'
        f"[nats]\nenabled = false\n{DRIVER}"
    )
    res = CliRunner().invoke(cli, ["check", str(cfg)])
    assert res.exit_code == 2, res.output
    assert f"[gateway] runtime_dir: runtime directory parent {parent} is writable" in res.output


def test_a_relative_directory_is_a_warning_naming_the_working_directory(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        f'[gateway]\nid = "gw"\nruntime_dir = "run"\ndata_dir = "{tmp_path}/data"\n'
        f"[nats]\nenabled = false\n{DRIVER}"
    )
    res = CliRunner().invoke(cli, ["check", str(cfg)])
    assert res.exit_code == 0, res.output
    warned = [line for line in res.output.splitlines() if "is relative" in line]
    assert len(warned) == 1 and warned[0].startswith(f"edgert: warning: {cfg}: ")
    assert '[gateway] runtime_dir = "run" is relative' in warned[0]
    assert f"({os.getcwd()})" in warned[0]


def test_directories_made_for_a_refused_start_go_even_when_they_share_parents(
    tmp_path: Path,
) -> None:
    from edgert.runtime import _missing, _unmake

    rdir, data = tmp_path / "x" / "a" / "run", tmp_path / "x" / "a" / "data"
    made = _missing(rdir) + _missing(data)  # x and x/a listed twice, two lists deepest first
    rdir.mkdir(parents=True)
    data.mkdir(parents=True)
    _unmake(made)
    assert list(tmp_path.iterdir()) == []


def test_embedded_nats_without_a_nats_server_installed_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An install with the demo config and no nats-server: `run` would fail and systemd
    # would loop. Nothing beside the interpreter, on PATH nor where packages put it:
    bare, sbin = tmp_path / "bin", tmp_path / "sbin"
    bare.mkdir()
    sbin.mkdir()
    monkeypatch.setattr(sys, "executable", str(bare / "python3"))
    monkeypatch.setenv("PATH", str(bare))
    monkeypatch.setattr("edgert.natsserver.SYSTEM_PLACES", (str(sbin / "nats-server"),))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write(tmp_path, f'[nats]\nurl = "nats://127.0.0.1:{port}"\nembedded = true\n{DRIVER}')
    res = CliRunner().invoke(cli, ["check", cfg])
    assert res.exit_code == 2, res.output
    lines = res.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"edgert: error: {cfg}: [nats] embedded = true")
    assert "nats-server not found" in lines[0] and "embedded = false" in lines[0]
    # Debian's package puts it in /usr/sbin, not on a user's PATH: found there too.
    (sbin / "nats-server").write_text("#!/bin/sh\n")
    (sbin / "nats-server").chmod(0o755)
    assert CliRunner().invoke(cli, ["check", cfg]).exit_code == 0


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("pure", [True, False])
def test_msgpack_without_its_c_extension_is_a_warning(
    tmp_path: Path, pure: bool, command: str
) -> None:
    cfg = write(tmp_path, f"[nats]\nenabled = false\n{DRIVER}")
    env = {k: v for k, v in os.environ.items() if k != "MSGPACK_PUREPYTHON"}
    if pure:
        env["MSGPACK_PUREPYTHON"] = "1"
    if command == "check":
        res = subprocess.run(
            [sys.executable, "-m", "edgert", "check", cfg],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        said = res.stderr
    else:  # the warnings are logged before the actors start: read up to that line
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgert", "run", cfg],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        try:
            lines = []
            assert proc.stderr is not None
            for line in proc.stderr:  # (pytest-timeout bounds it)
                lines.append(line)
                if "starting 1 actors" in line:
                    break
            said = "".join(lines)
            assert "starting 1 actors" in said, said
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
        assert proc.returncode == 0
    import msgpack

    # This environment's own msgpack may be a source build without the extension.
    expected = pure or msgpack.Unpacker.__module__.endswith(".fallback")
    assert ("without its C extension" in said) == expected, said
