"""Ctrl-C stops `edgert run` cleanly at any moment: no traceback, nothing left running.

A terminal's Ctrl-C sends SIGINT to the whole foreground process group, so the
tests send it to the group of a real `edgert run` started in its own session.
To hit the windows before the gateway starts every time, not by luck, the
process holds one import (through a `sitecustomize` on its PYTHONPATH) until the
test has sent the signal: while the command itself loads (`edgert.runcmd`, on
the short path of `edgert run CONFIG` and on click's), while click loads (a
form the short path leaves to click), and while `run` loads the config.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgert.testing import wait_for
from edgert.testing.holdimport import hold_import

CONFIG = """
[gateway]
id = "int"
runtime_dir = "{d}/run"
data_dir = "{d}/data"

[nats]
enabled = false

[[driver]]
name = "gen"
type = "sim"
[[driver.signal]]
name = "n"
shape = "counter"
rate = 20.0
"""


def session_members(sid: int) -> list[int]:
    """Live processes of session `sid` (a gateway's children stay in its session)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            out.append(int(d))
    return out


def start(
    d: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ("run",)
) -> subprocess.Popen[str]:
    cfg = d / "gw.toml"
    cfg.write_text(CONFIG.format(d=d))
    return subprocess.Popen(
        [sys.executable, "-m", "edgert", *args, str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own group: the test's Ctrl-C reaches it alone
    )


def ctrl_c(proc: subprocess.Popen[str]) -> tuple[int, str]:
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    wait_for(lambda: not session_members(proc.pid), 10, "every process of the gateway gone")
    return proc.returncode, err


@pytest.mark.parametrize(
    ("held", "args", "code"),
    [
        ("edgert.runcmd", ("run",), 130),
        ("click", ("run", "--"), 130),  # `run -- CONFIG`: parsed by click
        ("edgert.runcmd", ("run", "--"), 130),
        ("edgert.config", ("run",), 0),
    ],
    ids=[
        "while-run-loads",
        "while-the-cli-loads",
        "while-run-loads-in-click",
        "while-the-config-loads",
    ],
)
def test_ctrl_c_before_the_gateway_starts_ends_quietly(
    short_dir: Path, held: str, args: tuple[str, ...], code: int
) -> None:
    env, mark = hold_import(short_dir, held)
    proc = start(short_dir, env, args)
    try:
        wait_for(mark.exists, 30, f"the import of {held} reached")
        os.killpg(proc.pid, signal.SIGINT)
    finally:
        mark.unlink(missing_ok=True)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "Abort" not in err, err
    assert len(err.strip().splitlines()) <= 1, err
    assert not (short_dir / "run").exists() and not (short_dir / "data").exists()
    wait_for(lambda: not session_members(proc.pid), 10, "nothing of it left")


def test_ctrl_c_while_the_gateway_runs_stops_everything(short_dir: Path) -> None:
    proc = start(short_dir)
    try:
        wait_for(
            lambda: (
                (short_dir / "run" / "control.sock").exists()
                and len(session_members(proc.pid)) >= 2
            ),
            30,
            "the gateway up (edgert run, the driver)",
        )
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    code, err = ctrl_c(proc)
    assert code == 0, err
    assert "Traceback" not in err, err
    assert "gateway 'int' stopped" in err, err


PROBE = """
import sys
import edgert.__main__ as m
sys.argv = ["edgert", *sys.argv[1:]]
try:
    m.main()
except SystemExit as e:
    print(e.code, "click" in sys.modules)
"""


@pytest.mark.parametrize("bad", ["missing.toml", "bad.toml"])
def test_run_without_click_fails_as_click_does(short_dir: Path, bad: str) -> None:
    """`edgert run CONFIG` never loads click, and reports a bad config exactly as
    the click command does (`run -- CONFIG` is parsed by click)."""
    (short_dir / "bad.toml").write_text("[gateway]\nid = 'x'\nbogus = 1\n")

    def probe(*args: str) -> tuple[str, str]:
        out = subprocess.run(
            [sys.executable, "-c", PROBE, *args],
            capture_output=True,
            text=True,
            cwd=short_dir,
            timeout=60,
        )
        return out.stdout.strip(), out.stderr

    short, short_err = probe("run", bad)
    full, full_err = probe("run", "--", bad)
    assert short == "2 False", short_err
    assert full == "2 True", full_err
    assert short_err == full_err and short_err.startswith("edgert: error: "), short_err
