"""A reload's driver code, checked in a new interpreter before the reload applies it.

The supervisor reads a reloaded config with the driver classes it imported when the
gateway started; a driver whose code changed then runs in a new zygote with the new
code (`edgert.proc.zygote`). Code installed since may read its config differently:
a new or renamed key (the supervisor would refuse the new key, or hand the new code
a config object made by the old class, and the driver would fail at every start), a
package installed since (the supervisor cannot import it), or code that no longer
loads at all (a syntax error: the driver would be replaced by one that fails). So
`fresh_keys(path)` loads the config file in a new interpreter, as a restart of the
gateway would, and returns each driver type's config keys there (as
`edgert drivers --keys` lists them), or raises `ConfigError` with what that
interpreter said. The runtime compares those keys with its own classes' and refuses
a reload it cannot apply faithfully, saying that a restart applies it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from .config import ConfigError

__all__ = ["fresh_keys", "keys_of", "TIMEOUT"]

TIMEOUT = 120.0  # seconds: a new interpreter importing every driver, on a slow device

PROGRAM = """
import json, sys
try:
    from edgert.config import load
    from edgert.freshcheck import keys_of
    cfg = load(sys.argv[1])
    out = {"keys": {d.type: keys_of(d.cls) for d in cfg.drivers}}
except Exception as e:
    out = {"error": str(e) or type(e).__name__}
print(json.dumps(out))
"""


def keys_of(cls: type) -> list[list[str]]:
    """A driver class's config keys: table, key, type and default of each."""
    from .configdoc import describe

    config = getattr(cls, "Config", None)
    if config is None:
        return []
    return [[k.table, k.key, k.type, k.default] for k in describe(config)]


def fresh_keys(path: str) -> dict[str, Any]:
    """{driver type: its config keys} as a new interpreter reads `path`; ConfigError
    with that interpreter's words when it cannot."""
    try:
        r = subprocess.run(
            [sys.executable, "-P", "-c", PROGRAM, path],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(f"could not check the installed driver code: {e}") from None
    try:
        out = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        said = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"could not check the installed driver code: {said}") from None
    if "error" in out:
        raise ConfigError(str(out["error"]))
    return dict(out.get("keys", {}))
