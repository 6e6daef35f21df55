"""`status`/`tail`/`reload` find the obvious gateway, survive a config typo, spot a killed one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from edgert.testing import descendants, pid_alive, wait_for

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

    # Nothing running: a clear word, not a wait.
    r = edgert("status")
    assert r.returncode == 2 and "no running gateway found" in r.stderr, r.stderr

    proc = subprocess.Popen([*EDGERT, "run", str(cfg)], env=env, stderr=subprocess.DEVNULL)
    try:

        def up() -> dict | None:
            r = edgert("status", "--json")  # no flags: the only running gateway
            if r.returncode != 0:
                return None
            snap = json.loads(r.stdout)
            return snap if all(a["state"] == "running" for a in snap["actors"]) else None

        snap = wait_for(up, timeout=30, what="the gateway found without flags")
        assert snap["gateway"] == "loc"

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
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
