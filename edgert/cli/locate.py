"""Find the gateway a command talks to: by flag, by config, or the obvious one.

`status`, `tail`, `reload` and `cmd` need a gateway's runtime directory (or,
for `cmd`, its config). With `--runtime-dir` or `--config` that is given; with
neither, the obvious gateway is used: the only one running for this user (a
live control socket under the runtime roots), else `/etc/edgert/gateway.toml`.

A config file is read leniently here: these commands only need `[gateway] id`
and `runtime_dir`, so a typo elsewhere in the file (which `check` reports) does
not keep a person from looking at the running gateway.
"""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path

import click

__all__ = ["SYSTEM_CONFIG", "runtime_roots", "live", "running_gateways", "locate", "config_path"]

SYSTEM_CONFIG = Path("/etc/edgert/gateway.toml")


def runtime_roots() -> list[Path]:
    """Where gateways of this user keep their runtime directories (see `edgert.rundir`)."""
    roots = []
    if base := os.environ.get("XDG_RUNTIME_DIR"):
        roots.append(Path(base) / "edgert")
    roots += [Path(f"/tmp/edgert-{os.getuid()}"), Path("/run/edgert")]
    return list(dict.fromkeys(roots))


def live(runtime_dir: Path) -> bool | None:
    """True: a process listens on the control socket; False: a stale socket; None: none."""
    path = runtime_dir / "control.sock"
    if not path.exists():
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False  # ECONNREFUSED: the file is left from a killed gateway
    return True


def running_gateways() -> list[Path]:
    found = []
    for root in runtime_roots():
        try:
            dirs = sorted(p for p in root.iterdir() if p.is_dir())
        except OSError:
            continue
        found += [d for d in dirs if live(d)]
    return found


def _lenient_runtime_dir(config: str) -> Path:
    from edgert.rundir import runtime_dir_of  # not edgert.config: its schema costs start-up

    try:
        doc = tomllib.loads(Path(config).read_text())
    except OSError as e:
        from edgert.config import unreadable

        raise click.UsageError(f"{config}: cannot read: {unreadable(config, e)}") from None
    except tomllib.TOMLDecodeError as e:
        raise click.UsageError(f"{config}: not valid TOML: {e}") from None
    gw = doc.get("gateway") if isinstance(doc.get("gateway"), dict) else {}
    gid, rdir = gw.get("id"), gw.get("runtime_dir")
    if not isinstance(gid, str) or not gid:
        raise click.UsageError(f"{config}: [gateway] id is missing: cannot tell which gateway")
    return runtime_dir_of(gid, rdir if isinstance(rdir, str) else None)


def locate(config: str | None, runtime_dir: str | None, must_run: bool = True) -> Path:
    """The runtime directory of the gateway meant, or a UsageError saying why none is.

    With `must_run`, a gateway that is not running (or was killed) is an error.
    """
    if config is not None and runtime_dir is not None:
        raise click.UsageError("give --config FILE or --runtime-dir DIR, not both")
    if runtime_dir is not None:
        rdir = Path(runtime_dir)
    elif config is not None:
        rdir = _lenient_runtime_dir(config)
    else:
        rdir = _obvious()
    state = live(rdir)
    if not must_run:
        return rdir
    if state is None:
        raise click.ClickException(f"no gateway is running at {rdir} (no control socket)")
    if state is False:
        raise click.ClickException(
            f"the gateway at {rdir} is not running: its control socket is left from a "
            "process that was killed"
        )
    return rdir


def _obvious() -> Path:
    running = running_gateways()
    if len(running) == 1:
        return running[0]
    if len(running) > 1:
        names = ", ".join(str(p) for p in running)
        raise click.UsageError(
            f"several gateways are running ({names}): pick one with --runtime-dir"
        )
    if SYSTEM_CONFIG.is_file():
        return _lenient_runtime_dir(str(SYSTEM_CONFIG))
    roots = ", ".join(str(r) for r in runtime_roots())
    raise click.UsageError(
        f"no running gateway found (looked in {roots}) and no {SYSTEM_CONFIG}: "
        "give --config FILE or --runtime-dir DIR"
    )


def config_path(config: str | None) -> str:
    """`cmd` needs the whole config (NATS URL, credentials): the given one or the system one."""
    if config is not None:
        return config
    if SYSTEM_CONFIG.is_file():
        return str(SYSTEM_CONFIG)
    raise click.UsageError(f"no {SYSTEM_CONFIG}: give --config FILE")
