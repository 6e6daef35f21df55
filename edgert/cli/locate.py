"""Find the gateway a command talks to: by flag, by config, or the obvious one.

`status`, `tail`, `values`, `reload` and `cmd` need a gateway's runtime
directory (or, for `cmd`, its config). With `--runtime-dir` or `--config` that
is given; with neither, the obvious gateway is used: the only one running for
this user (a live control socket under the runtime roots), else
`/etc/edgert/gateway.toml`.

A config without `[gateway] runtime_dir` names its gateway by id only: the
directory depends on the environment that started it (systemd's `/run`, a
shell's `$XDG_RUNTIME_DIR`), so the running gateway of that id is looked for
under every runtime root (`edgert.rundir`).

A config file is read leniently here: these commands only need `[gateway] id`
and `runtime_dir`, so a typo elsewhere in the file (which `check` reports) does
not keep a person from looking at the running gateway.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import click

from edgert import rundir
from edgert.rundir import config_of, live, running_dir_of, running_dirs

__all__ = [
    "SYSTEM_CONFIG",
    "live",
    "running_gateways",
    "locate",
    "config_path",
    "read_leniently",
]

SYSTEM_CONFIG = Path("/etc/edgert/gateway.toml")


def running_gateways() -> list[Path]:
    return running_dirs(True)


def read_leniently(config: str) -> dict[str, Any]:
    """The TOML document of `config`, or a UsageError saying in one line why not."""
    try:
        return tomllib.loads(Path(config).read_text())
    except OSError as e:
        from edgert.config import unreadable

        why = unreadable(config, e)
        if (
            isinstance(e, PermissionError)
            and Path(config).absolute().parent == SYSTEM_CONFIG.parent
        ):
            why += " (the installed gateway's config is root's and group edgert's: use sudo)"
        raise click.UsageError(f"{config}: cannot read: {why}") from None
    except tomllib.TOMLDecodeError as e:
        raise click.UsageError(f"{config}: not valid TOML: {e}") from None


def _gateway_of(config: str) -> tuple[str, str | None]:
    """`[gateway]` id and runtime_dir of `config`, read leniently."""
    doc = read_leniently(config)
    gw = doc.get("gateway") if isinstance(doc.get("gateway"), dict) else {}
    gid, rdir = gw.get("id"), gw.get("runtime_dir")
    if not isinstance(gid, str) or not gid:
        raise click.UsageError(f"{config}: [gateway] id is missing: cannot tell which gateway")
    return gid, rdir if isinstance(rdir, str) and rdir else None


def _lenient_runtime_dir(config: str, must_run: bool = True) -> Path:
    """The runtime directory of the gateway of `config`: where it runs; else, with
    `must_run`, an error naming where it was looked for (and a killed one found
    there); else where it will run (a directory a gateway used before, first)."""
    from edgert.rundir import runtime_dir_of  # not edgert.config: its schema costs start-up

    gid, rdir = _gateway_of(config)
    found = running_dir_of(gid, rdir)
    if found is not None or rdir is not None:
        return found or runtime_dir_of(gid, rdir)
    places = list(dict.fromkeys([runtime_dir_of(gid), *(r / gid for r in rundir.runtime_roots())]))
    if not must_run:
        return next((p for p in places if _is_dir(p)), places[0])
    killed = [p for p in places if live(p) is False]
    if killed:
        raise click.ClickException(_killed(killed[0]))
    raise click.ClickException(
        f"no gateway {gid!r} is running (looked in {', '.join(map(str, places))})"
    )


def _is_dir(p: Path) -> bool:
    try:
        return p.is_dir()
    except OSError:  # another user's directory on the way
        return False


def locate(config: str | None, runtime_dir: str | None, must_run: bool = True) -> Path:
    """The runtime directory of the gateway meant, or a ClickException saying why none is.

    With `must_run`, a gateway that is not running (or was killed) is an error (exit 1).
    """
    if config is not None and runtime_dir is not None:
        raise click.UsageError("give --config FILE or --runtime-dir DIR, not both")
    if runtime_dir is not None:
        rdir = Path(runtime_dir)
    elif config is not None:
        rdir = _lenient_runtime_dir(config, must_run)
    else:
        rdir = _obvious(must_run)
    state = live(rdir)
    if not must_run:
        return rdir
    if state is None:
        raise click.ClickException(f"no gateway is running at {rdir} (no control socket)")
    if state is False:
        raise click.ClickException(_killed(rdir))
    return rdir


def _killed(rdir: Path) -> str:
    return (
        f"the gateway at {rdir} is not running: its control socket is left from a "
        "process that was killed"
    )


def _obvious(must_run: bool = True) -> Path:
    running = running_gateways()
    if len(running) == 1:
        return running[0]
    if len(running) > 1:
        names = ", ".join(str(p) for p in running)
        raise click.UsageError(
            f"several gateways are running ({names}): pick one with --runtime-dir DIR "
            "or --config FILE"
        )
    if SYSTEM_CONFIG.is_file():
        return _lenient_runtime_dir(str(SYSTEM_CONFIG), must_run)
    killed = running_dirs(False)
    if len(killed) == 1:
        if not must_run:  # `tail` waits for it to start again
            return killed[0]
        raise click.ClickException(_killed(killed[0]))
    roots = ", ".join(str(r) for r in rundir.runtime_roots())
    left = f"; left by killed ones: {', '.join(map(str, killed))}" if killed else ""
    raise click.ClickException(
        f"no gateway is running (none in {roots}{left}, and no {SYSTEM_CONFIG}); "
        "for one elsewhere give --config FILE or --runtime-dir DIR"
    )


def config_path(config: str | None, hint: str = "give --config FILE") -> str:
    """`cmd` needs the whole config (NATS URL, credentials): the given one, that of
    the only running gateway (which notes it in its runtime directory), or the system one."""
    if config is not None:
        return config
    running = running_gateways()
    if len(running) == 1:
        noted = config_of(running[0])
        if noted is None:
            raise click.UsageError(
                f"the gateway running at {running[0]} did not note its config file: {hint}"
            )
        return noted
    if len(running) > 1:
        names = ", ".join(str(p) for p in running)
        raise click.UsageError(f"several gateways are running ({names}): {hint}")
    if SYSTEM_CONFIG.is_file():
        return str(SYSTEM_CONFIG)
    raise click.ClickException(f"no gateway is running and there is no {SYSTEM_CONFIG}: {hint}")
