"""Where a gateway's runtime directory is: `[gateway] runtime_dir`, else one per user;
and which of those directories hold a running gateway.

Standard library only, so `edgert status` and the other commands that find a
running gateway from its config read `[gateway]` and locate it without loading
the config's schema (`edgert.config`, which uses this too).

A runtime directory's default depends on the environment of the process that
started the gateway (`$XDG_RUNTIME_DIR`): a systemd unit sets its own
(`/run`), a login shell or `sudo` another. So a command that looks for the
running gateway of a config whose `runtime_dir` is not set looks for that id
under every root a gateway of this user may have used (`runtime_roots`).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

__all__ = [
    "CONFIG_NOTE",
    "runtime_dir_of",
    "runtime_roots",
    "live",
    "running_dirs",
    "running_dir_of",
    "config_of",
    "gone",
]

CONFIG_NOTE = "config"  # <runtime_dir>/config: the absolute path of the running config file


def runtime_dir_of(gateway_id: str, runtime_dir: str | None = None) -> Path:
    """`runtime_dir` when set, else `$XDG_RUNTIME_DIR/edgert/ID` or `/tmp/edgert-UID/ID`."""
    if runtime_dir:
        return Path(runtime_dir)
    base = os.environ.get("XDG_RUNTIME_DIR")
    root = Path(base) / "edgert" if base else Path(f"/tmp/edgert-{os.getuid()}")
    return root / gateway_id


def runtime_roots() -> list[Path]:
    """Where gateways of this user keep their runtime directories by default: this
    environment's root, the one without `$XDG_RUNTIME_DIR`, a login session's, and
    systemd's `/run/edgert` (`deploy/edgert.service`)."""
    roots = []
    if base := os.environ.get("XDG_RUNTIME_DIR"):
        roots.append(Path(base) / "edgert")
    uid = os.getuid()
    roots += [Path(f"/tmp/edgert-{uid}"), Path(f"/run/user/{uid}/edgert"), Path("/run/edgert")]
    return list(dict.fromkeys(roots))


def live(runtime_dir: Path) -> bool | None:
    """True: a process listens on the control socket; False: a stale socket (left by a
    gateway that was killed); None: no socket (or none this user may see)."""
    path = Path(runtime_dir) / "control.sock"
    try:
        if not path.exists():
            return None
    except OSError:
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False  # ECONNREFUSED: the file is left from a killed gateway
    return True


def running_dirs(state: bool = True) -> list[Path]:
    """The runtime directories under `runtime_roots` whose `live` is `state`: running
    gateways (True), or those left by killed ones (False)."""
    found = []
    for root in runtime_roots():
        try:
            dirs = sorted(p for p in root.iterdir() if p.is_dir())
        except OSError:
            continue
        found += [d for d in dirs if live(d) is state]
    return found


def running_dir_of(gateway_id: str, runtime_dir: str | None = None) -> Path | None:
    """The runtime directory of the running gateway `gateway_id`, or None.

    With `runtime_dir` set that directory alone; else the default one of this
    environment, then the same id under the other roots (a gateway started by
    systemd, or from a shell with another `$XDG_RUNTIME_DIR`).
    """
    if runtime_dir:
        return Path(runtime_dir) if live(Path(runtime_dir)) else None
    first = runtime_dir_of(gateway_id)
    for d in [first, *(root / gateway_id for root in runtime_roots())]:
        if live(d):
            return d
    return None


def config_of(runtime_dir: Path) -> str | None:
    """The config file the gateway at `runtime_dir` was started from, as it noted it."""
    try:
        text = (Path(runtime_dir) / CONFIG_NOTE).read_text().strip()
    except OSError:
        return None
    return text or None


def gone(runtime_dir: Path) -> bool:
    """True when no gateway holds `runtime_dir`: its lock file is missing (a clean stop
    removes it) or names a process that is no more (killed). Read from files only, so
    asking often wakes no process of the gateway; a gateway starting (its lock file
    not yet written) is not gone."""
    try:
        text = (Path(runtime_dir) / "lock").read_text().strip()
    except OSError:
        return True
    if not text.isdigit():
        return False
    try:
        with open(f"/proc/{text}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
