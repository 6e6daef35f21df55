"""A reload's driver code, checked in a new interpreter before the reload applies it.

The supervisor reads a reloaded config with the driver classes it imported when the
gateway started; a driver whose code changed then runs in a new zygote with the new
code (`edgert.proc.zygote`). Code installed since may read its config differently:
a new or renamed key (the supervisor would refuse the new key, or hand the new code
a config object made by the old class, and the driver would fail at every start), a
package installed since (the supervisor cannot import it), or code that no longer
loads at all (a syntax error: the driver would be replaced by one that fails). So
`fresh_keys(path, sys_path)` reads the config file in a new interpreter with the
zygote's import path, as a restart of the gateway would (overlaid with the fleet's
desired config when the gateway is managed, as the runtime does), and returns each
driver type's config keys there (as `edgert drivers --keys` lists them), or raises
`ConfigError` with what that interpreter said. The runtime compares those keys with
its own classes' and refuses a reload it cannot apply faithfully, saying that a
restart applies it. The check blocks the supervisor's loop while it runs (its
children's heartbeats wait on their links): `TIMEOUT` keeps it well under a
systemd watchdog's 30 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from .config import ConfigError

__all__ = ["fresh_keys", "keys_of", "TIMEOUT"]

TIMEOUT = 20.0  # seconds: a new interpreter importing every driver, on a slow device
MARK = "edgert-freshcheck: "  # the line that holds the answer (a driver may print too)

PROGRAM = (
    f"MARK = {MARK!r}\n"
    + """
import json, sys
path, sys.path[:] = sys.argv[1], json.loads(sys.argv[2])
try:
    from edgert.config import load
    from edgert.freshcheck import keys_of
    from edgert.runtime import overlaid  # as the runtime runs it: the fleet's config on top
    cfg, _ = overlaid(load(path))
    out = {"keys": {d.type: keys_of(d.cls) for d in cfg.drivers}}
except Exception as e:
    out = {"error": str(e) or type(e).__name__}
print(MARK + json.dumps(out), flush=True)
"""
)


def keys_of(cls: type) -> list[list[str]]:
    """A driver class's config keys: table, key, type and default of each."""
    from .configdoc import describe

    config = getattr(cls, "Config", None)
    if config is None:
        return []
    return [[k.table, k.key, k.type, k.default] for k in describe(config)]


def fresh_keys(path: str, sys_path: list[str]) -> dict[str, Any]:
    """{driver type: its config keys} as a new interpreter with `sys_path` reads `path`;
    ConfigError with that interpreter's words when it cannot."""
    try:
        r = subprocess.run(
            [sys.executable, "-P", "-c", PROGRAM, path, json.dumps(sys_path)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(f"could not check the installed driver code: {e}") from None
    said = [line[len(MARK) :] for line in r.stdout.splitlines() if line.startswith(MARK)]
    try:
        out = json.loads(said[-1])
    except (ValueError, IndexError):
        last = (r.stderr.strip().splitlines() or ["no answer"])[-1]
        raise ConfigError(f"could not check the installed driver code: {last}") from None
    if not isinstance(out, dict):
        raise ConfigError(f"could not check the installed driver code: it said {out!r}")
    if "error" in out:
        raise ConfigError(str(out["error"]))
    keys = out.get("keys")
    return dict(keys) if isinstance(keys, dict) else {}
