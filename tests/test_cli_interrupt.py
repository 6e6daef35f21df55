"""Ctrl-C stops `edgert run` cleanly at any moment: no traceback, nothing left running.

A terminal's Ctrl-C sends SIGINT to the whole foreground process group, so the
tests send it to the group of a real `edgert run` started in its own session.
To hit the windows before the gateway starts every time, not by luck, the
process holds one import (through a `sitecustomize` on its PYTHONPATH) until the
test has sent the signal: while the command line itself loads (click), and
while `run` loads the config.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgert.testing import wait_for

HOLD = '''
import os, sys, time

class _Hold:
    """Holds the first import of one module until the test removes the mark file."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != os.environ["HOLD_IMPORT"]:
            return None
        sys.meta_path.remove(_Hold)
        mark = os.environ["HOLD_MARK"]
        open(mark, "w").close()
        while os.path.exists(mark):
            time.sleep(0.01)
        return None

sys.meta_path.insert(0, _Hold)
'''

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


def start(d: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    cfg = d / "gw.toml"
    cfg.write_text(CONFIG.format(d=d))
    return subprocess.Popen(
        [sys.executable, "-m", "edgert", "run", str(cfg)],
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
    ("held", "code"),
    [("click", 130), ("edgert.config", 0)],
    ids=["while-the-cli-loads", "while-the-config-loads"],
)
def test_ctrl_c_before_the_gateway_starts_ends_quietly(
    short_dir: Path, held: str, code: int
) -> None:
    hook = short_dir / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOLD)
    mark = short_dir / "held"
    env = dict(os.environ, PYTHONPATH=str(hook), HOLD_IMPORT=held, HOLD_MARK=str(mark))
    proc = start(short_dir, env)
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
                and len(session_members(proc.pid)) >= 3
            ),
            30,
            "the gateway up (edgert run, the zygote, the driver)",
        )
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    code, err = ctrl_c(proc)
    assert code == 0, err
    assert "Traceback" not in err, err
    assert "gateway 'int' stopped" in err, err
