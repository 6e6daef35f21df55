"""`status`/`tail`/`values`/`reload`/`cmd` find the obvious gateway, survive a config typo,
spot a killed one, find a gateway started from another environment (systemd's /run), and
`tail` says when the gateway it follows stops."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edgert.cli import cli
from edgert.cli.locate import running_gateways
from edgert.rundir import running_dirs
from edgert.testing import descendants, pid_alive, wait_for
from edgert.testing.nats import NatsProcess

EDGERT = [sys.executable, "-m", "edgert"]

CONFIG = """
[gateway]
id = "loc"
data_dir = "{d}/data"
[nats]
enabled = false
[[driver]]
name = "gen"
type = "sim"
[[driver.signal]]
name = "n"
rate = 5.0
"""


def test_commands_find_the_only_gateway_and_say_when_it_was_killed(short_dir: Path) -> None:
    env = dict(os.environ, XDG_RUNTIME_DIR=str(short_dir / "xdg"))
    (short_dir / "xdg").mkdir()
    cfg = short_dir / "gw.toml"
    cfg.write_text(CONFIG.format(d=short_dir))

    def edgert(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*EDGERT, *args], env=env, capture_output=True, text=True, timeout=30)

    # Nothing running: a clear word, not a wait (unless this user runs a gateway elsewhere,
    # or left one killed: status names that one)
    if not running_gateways() and not running_dirs(False):
        r = edgert("status")
        assert r.returncode == 1 and "no gateway is running" in r.stderr, r.stderr

    proc = subprocess.Popen([*EDGERT, "run", str(cfg)], env=env, stderr=subprocess.DEVNULL)
    try:

        def up() -> dict | None:
            r = unflagged(edgert, cfg, "status", "--json")  # the only running gateway
            if r.returncode != 0:
                return None
            snap = json.loads(r.stdout)
            if snap["gateway"] != "loc":  # another of this user's, found before this one
                return None
            return snap if all(a["state"] == "running" for a in snap["actors"]) else None

        wait_for(up, timeout=30, what="the gateway found without flags")

        # A typo elsewhere in the file does not keep status from the running gateway.
        typo = short_dir / "typo.toml"
        typo.write_text(cfg.read_text().replace("rate = 5.0", "rat = 5.0"))
        assert edgert("check", str(typo)).returncode == 2
        r = edgert("status", "--config", str(typo))
        assert r.returncode == 0 and "gen" in r.stdout, r.stderr

        children = descendants(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: not any(pid_alive(p) for p in children), timeout=10, what="children gone")
        r = edgert("status", "--config", str(cfg))
        assert r.returncode == 1, r.stderr
        assert "is not running" in r.stderr and "killed" in r.stderr, r.stderr
        others = [d for d in running_dirs(False) if d.name != "loc"]
        if not running_gateways() and not others:  # without flags too, it names the killed one
            r = edgert("values")
            assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
            assert "killed" in r.stderr and str(short_dir / "xdg" / "edgert" / "loc") in r.stderr
            # ...and tail waits for that one to start again, as it does given --config
            said = short_dir / "tail.err"
            with open(said, "w") as err:
                tail = subprocess.Popen([*EDGERT, "tail", "--count", "1"], env=env, stderr=err)
            try:
                wait_for(lambda: "waiting for" in said.read_text(), 30, "tail waiting")
                assert tail.poll() is None and "loc" in said.read_text()
            finally:
                tail.kill()
                tail.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


CMD_CONFIG = """
[gateway]
id = "{gid}"
data_dir = "{d}/data"
[nats]
url = "{url}"
[[driver]]
name = "gen"
type = "sim"
[[driver.signal]]
name = "setpoint"
shape = "ramp"
min = 1.0
max = 1.0
rate = 1.0
writable = true
"""


def test_cmd_finds_the_only_gateway_and_needs_only_its_nats_section(
    short_dir: Path, nats_server: NatsProcess
) -> None:
    env = dict(os.environ, XDG_RUNTIME_DIR=str(short_dir / "xdg"))
    (short_dir / "xdg").mkdir()
    cfg = short_dir / "gw.toml"
    cfg.write_text(CMD_CONFIG.format(gid="cmdloc", d=short_dir, url=nats_server.url))

    def edgert(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*EDGERT, *args], env=env, cwd="/", capture_output=True, text=True, timeout=30
        )

    proc = subprocess.Popen([*EDGERT, "run", str(cfg)], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for(
            lambda: unflagged(edgert, cfg, "values", "gen").returncode == 0,
            30,
            "the gateway's first point",
        )
        r = unflagged(edgert, cfg, "cmd", "gen", "setpoint=7")  # from another directory
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
        # A typo in a driver of the file (check refuses it) is none of cmd's business...
        typo = short_dir / "typo.toml"
        typo.write_text(cfg.read_text().replace("rate = 1.0", "rat = 1.0"))
        assert edgert("check", str(typo)).returncode == 2
        r = edgert("cmd", "--config", str(typo), "gen", "setpoint=8")
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr

        def gen_value() -> Any:  # with no flags too: the only gateway (see `unflagged`)
            r = unflagged(edgert, cfg, "values", "gen", "--json")
            return json.loads(r.stdout)["points"][0]["value"]

        got = wait_for(lambda: gen_value() == 8, 10, "the written value held")
        assert got
        # ...but one in its [nats] is: named, exit 2, nothing sent.
        bad = short_dir / "bad.toml"
        bad.write_text(cfg.read_text().replace("[nats]\n", "[nats]\nprefx = 1\n"))
        r = edgert("cmd", "--config", str(bad), "gen", "setpoint=9")
        assert r.returncode == 2 and "unknown key 'prefx'" in r.stderr, r.stderr
        assert "(did you mean 'prefix'?)" in r.stderr and len(r.stderr.splitlines()) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    # Stopped: the note of its config is gone with it, and its emptied runtime directory.
    assert not (short_dir / "xdg" / "edgert" / "cmdloc").exists()


def unflagged(edgert: Any, cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`edgert ARGS` with no flags, which finds the only running gateway; when another
    gateway of this user runs too (a demo started by hand), that refusal is right and
    the command is given the test's own `--config` instead."""
    r = edgert(*args)
    if r.returncode != 0 and "several gateways are running" in r.stderr:
        r = edgert(args[0], "--config", str(cfg), *args[1:])
    return r


def test_a_gateway_started_from_another_environment_is_found_by_its_config(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # systemd starts the installed gateway with XDG_RUNTIME_DIR=/run; a person's shell
    # (sudo, ssh) has another one or none. Two roots stand for the two here.
    unit, shell = short_dir / "unit", short_dir / "shell"
    unit.mkdir()
    shell.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = short_dir / "gw.toml"
    cfg.write_text(
        CONFIG.format(d=short_dir).replace(
            "[nats]\nenabled = false", f'[nats]\nurl = "nats://127.0.0.1:{port}"\nembedded = true'
        )
    )
    env = dict(os.environ, XDG_RUNTIME_DIR=str(unit))
    proc = subprocess.Popen([*EDGERT, "run", str(cfg)], env=env, stderr=subprocess.DEVNULL)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(shell))
    monkeypatch.setattr("edgert.rundir.runtime_roots", lambda: [shell / "edgert", unit / "edgert"])
    try:

        def up() -> dict | None:
            r = CliRunner().invoke(cli, ["status", "--json", "--config", str(cfg)])
            if r.exit_code != 0:
                return None
            snap = json.loads(r.stdout)
            return snap if all(a["state"] == "running" for a in snap["actors"]) else None

        snap = wait_for(up, timeout=30, what="the gateway found by its config from the shell")
        assert snap["gateway"] == "loc" and {a["name"] for a in snap["actors"]} >= {"nats", "gen"}
        # Its own embedded server holds the port: check (as before an edit) does not
        # call that a port taken by another program.
        r = CliRunner().invoke(cli, ["check", str(cfg)])
        assert r.exit_code == 0, r.output
        assert "already in use" not in r.output
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    # Stopped, the same port is free and check says ok; status says none runs (exit 1).
    assert CliRunner().invoke(cli, ["check", str(cfg)]).exit_code == 0
    r = CliRunner().invoke(cli, ["status", "--config", str(cfg)])
    assert r.exit_code == 1 and "no gateway 'loc' is running (looked in " in r.output, r.output
    assert f"{shell}/edgert/loc, {unit}/edgert/loc)" in r.output


def test_tail_says_when_the_gateway_stops_and_ends_a_count_it_cannot_reach(
    short_dir: Path,
) -> None:
    env = dict(os.environ, XDG_RUNTIME_DIR=str(short_dir / "xdg"))
    (short_dir / "xdg").mkdir()
    cfg = short_dir / "gw.toml"
    cfg.write_text(
        CONFIG.format(d=short_dir).replace(
            "[nats]\nenabled = false", '[nats]\nurl = "nats://127.0.0.1:1"'
        )
    )
    run = [*EDGERT, "run", str(cfg)]
    tail = [*EDGERT, "tail", "--config", str(cfg)]
    pipes = {"env": env, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    gateway = subprocess.Popen(run, env=env, stderr=subprocess.DEVNULL)
    counted = follows = None
    try:
        values = [*EDGERT, "values", "--config", str(cfg)]
        wait_for(lambda: subprocess.run(values, env=env).returncode == 0, 30, "points flowing")
        counted = subprocess.Popen([*tail, "--count", "100000"], **pipes)  # type: ignore[call-overload]
        follows = subprocess.Popen(tail, **pipes)  # type: ignore[call-overload]
        read, counting = Reader(follows), Reader(counted)
        # both print points, so both saw the gateway running (a --count tail that
        # starts after it stopped waits for one to start, as it says)
        wait_for(lambda: "  gen  n  " in read.out(), 20, "tail printing")
        wait_for(lambda: "  gen  n  " in counting.out(), 20, "tail --count printing")
        gateway.send_signal(signal.SIGKILL)  # the hardest stop: nothing cleaned up
        gateway.wait(10)
        # --count cannot be reached any more: it ends, saying why, exit 1.
        wait_for(lambda: counting.out() is not None and counted.poll() is not None, 60, "its end")
        err = counting.err().encode()
        assert counted.returncode == 1, err
        assert err.startswith(b"edgert: error: the gateway at ") and b"stopped after" in err, err
        assert len(err.splitlines()) == 1
        # Without --count it says so, and waits for the gateway to come back...
        wait_for(lambda: "stopped: waiting for it to start again" in read.err(), 30, "the word")
        seen = len(read.out())
        gateway = subprocess.Popen(run, env=env, stderr=subprocess.DEVNULL)
        # ...and follows it again when it does.
        wait_for(lambda: "  gen  n  " in read.out()[seen:], 30, "points of the new gateway")
        assert follows.poll() is None
        assert read.err().count("edgert: warning: ") == 1, read.err()
    finally:
        for p in (counted, follows):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
        if gateway.poll() is None:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(30)


class Reader:
    """What a running process wrote so far, read without blocking."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc, self._out, self._err = proc, b"", b""
        for f in (proc.stdout, proc.stderr):
            os.set_blocking(f.fileno(), False)  # type: ignore[union-attr]

    def out(self) -> str:
        self._out += self._proc.stdout.read() or b""  # type: ignore[union-attr]
        return self._out.decode()

    def err(self) -> str:
        self._err += self._proc.stderr.read() or b""  # type: ignore[union-attr]
        return self._err.decode()
