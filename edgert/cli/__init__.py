"""The `edgert` command line (click).

Exit codes: 0 clean stop, 1 the group was torn down by failures (or another
runtime error), 2 bad usage or a bad config, 130 interrupted (Ctrl-C) before
anything started. Every error and warning, whichever command and whatever
raised it (a bad config, click's own usage errors, a refusal), is one line on
stderr in one format, `edgert: error: <what>: <why>` (`edgert: warning: ...`),
one line per problem; `edgert -v ...` shows the traceback too.

Kept light to start: `edgert status` on a small device should not pay for the
runtime. Each command imports what it needs when it runs, and the commands in
their own modules are imported only when used (`LAZY`), so `edgert --help`
loads click and little else.
"""

from __future__ import annotations

import os
import sys
from importlib import import_module
from typing import Any

import click

from edgert import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Commands in their own modules: name -> ("module:attribute", the one-line help
# `edgert --help` shows without importing the module; a test keeps it in step).
LAZY: dict[str, tuple[str, str]] = {
    "bench": (
        "edgert.bench:bench",
        "Measure the point path, restarts and memory on this machine.",
    ),
    "cmd": (
        "edgert.cli.cmd:cmd",
        "Write POINTS (TYPE=VALUE ...) to NODE of the gateway in CONFIG; print the reply.",
    ),
    "fleet": (
        "edgert.cli.fleet:fleet",
        "The gateways on a NATS system: list them, show one's status, push config.",
    ),
    "modbus": (
        "edgert.cli.modbus:modbus",
        "Modbus tools: find the units on a bus.",
    ),
    "new-driver": (
        "edgert.cli.scaffold:new_driver",
        "Write a skeleton driver package NAME with a passing test.",
    ),
    "sim": (
        "edgert.cli.sim:sim",
        "Simulated hardware for tests and demos: Modbus devices, GPIO chips.",
    ),
    "tail": (
        "edgert.cli.tail:tail",
        "Print the points flowing through a running gateway, live, one per line: "
        "time (UTC), node, type, key, value.",
    ),
    "values": (
        "edgert.cli.values:values",
        "Print the latest value of every point of a running gateway (or of NODE), "
        "with its age, without waiting for new points.",
    ),
}


class _Group(click.Group):
    """Loads `LAZY` commands on use; turns exceptions into one clear line and the
    contract's exit codes."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *LAZY})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in LAZY:
            module, _, attr = LAZY[name][0].partition(":")
            self.add_command(getattr(import_module(module), attr), name)
        return self.commands.get(name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))
        rows = [
            (
                n,
                self.commands[n].get_short_help_str(limit)
                if n in self.commands
                else click.Command(n, help=LAZY[n][1]).get_short_help_str(limit),
            )
            for n in names
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """click's `main`, with its errors in edgert's one-line format."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.Abort:  # Ctrl-C before a command took over SIGINT
            code = EXIT_INTERRUPTED
        except click.ClickException as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # `edgert` alone: the help
                e.show()
            else:
                say("error", _usage_line(e))
            code = e.exit_code
        sys.exit(code if isinstance(code, int) else EXIT_OK)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BrokenPipeError:  # the reader went away (`edgert tail | head`): stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so the exit's flush cannot fail again
            os.close(devnull)
            ctx.exit(0)
        except Exception as e:  # noqa: BLE001 - the last line of defence
            config = sys.modules.get("edgert.config")  # never loaded: not a ConfigError
            bad_config = config is not None and isinstance(e, config.ConfigError)
            _fail(ctx, e, EXIT_USAGE if bad_config else EXIT_FAILED)


def say(level: str, text: str) -> None:
    """`edgert: LEVEL: LINE` on stderr for each line of `text`: the one format of
    every error ("error") and warning ("warning") of every command."""
    for line in text.splitlines() or [""]:
        click.echo(f"edgert: {level}: {line}", err=True)


def _usage_line(e: click.ClickException) -> str:
    """A click error as one line; a mistyped command line also says what it takes."""
    msg = e.format_message().strip()
    msg = (msg[:1].lower() + msg[1:]).removesuffix(".")
    ctx = getattr(e, "ctx", None)
    if ctx is None:
        return msg
    parsing = (
        click.exceptions.MissingParameter,
        click.exceptions.NoSuchOption,
        click.exceptions.BadOptionUsage,
        click.exceptions.BadArgumentUsage,
    )
    if isinstance(ctx.command, click.Group) and msg.startswith("no such command"):
        return f"{msg} ({ctx.command_path} --help lists them)"
    if isinstance(e, parsing):
        pieces = " ".join(ctx.command.collect_usage_pieces(ctx))
        return f"{msg} (usage: {ctx.command_path} {pieces})"
    return msg


def _fail(ctx: click.Context, e: BaseException, code: int) -> None:
    verbose = (ctx.obj or {}).get("verbose", 0)
    if verbose:
        import traceback

        traceback.print_exception(e)
    say("error", str(e) or type(e).__name__)  # a config's problems: one line each
    ctx.exit(code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging; tracebacks with errors.")
@click.version_option(__version__, prog_name="edgert")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """edgert: an actor runtime for edge gateways.

    Each driver runs in its own process, supervised; points go to NATS.

    \b
    Example:
      edgert check configs/demo.toml
      edgert run configs/demo.toml
      edgert status --config configs/demo.toml
    """
    ctx.obj = {"verbose": verbose}


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.pass_context
def run(ctx: click.Context, config: str) -> None:
    """Run the gateway in CONFIG in the foreground until SIGTERM or SIGINT.

    Exits 0 on a clean stop, 1 when failures tore the group down, 2 for a bad
    config. SIGTERM stops every actor within shutdown_timeout.

    \b
    Example:
      edgert run configs/demo.toml
    """
    from edgert.runcmd import run_gateway

    code = run_gateway(config, ctx.obj["verbose"])
    if code:
        ctx.exit(code)


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
def check(config: str) -> None:
    """Validate CONFIG without starting anything; exit 0, or 2 with the errors.

    Beyond the syntax, it checks what `run` would fail on here: nats-server
    missing or its port taken for `[nats] embedded = true`, a data or runtime
    directory this user cannot create. A device path that does not exist yet
    (a serial adapter not plugged in) is a warning.

    \b
    Example:
      edgert check configs/demo.toml
    """
    from edgert.config import load
    from edgert.preflight import preflight

    cfg = load(config)
    findings = preflight(cfg)
    for f in findings:
        say(f.level, f"{config}: {f.message}")
    if any(f.level == "error" for f in findings):
        raise SystemExit(EXIT_USAGE)
    names = ", ".join(f"{d.name} ({d.type})" for d in cfg.drivers) or "none"
    click.echo(f"{config}: ok: gateway {cfg.gateway.id!r}, drivers: {names}")


@cli.command()
@click.option(
    "--config", "config", type=click.Path(dir_okay=False), help="The gateway's config file."
)
@click.option(
    "--runtime-dir", type=click.Path(file_okay=False), help="The gateway's runtime directory."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(config: str | None, runtime_dir: str | None, as_json: bool) -> None:
    """Show each actor of a running gateway: pid, state, restarts, errors, points.

    \b
    Example:
      edgert status                 # the only running gateway, or /etc/edgert/gateway.toml
      edgert status --config configs/demo.toml
      edgert status --runtime-dir /run/edgert/gw1 --json
    """
    from edgert.control import format_status, request

    rdir = _runtime_dir(config, runtime_dir)
    snap = request(rdir, "status")["status"]
    if as_json:
        out = {
            "gateway": snap["gateway"],
            "config_revision": snap.get("config_revision"),
            "actors": [
                {k: a[k] for k in a if k != "stats"} | {"stats": a.get("stats", {})}
                for a in snap["actors"]
            ],
        }
        import json

        click.echo(json.dumps(out, indent=2))
    else:
        from edgert.table import is_tty

        click.echo(format_status(snap, tty=is_tty()))


@cli.command()
@click.option(
    "--config", "config", type=click.Path(dir_okay=False), help="The gateway's config file."
)
@click.option(
    "--runtime-dir", type=click.Path(file_okay=False), help="The gateway's runtime directory."
)
def reload(config: str | None, runtime_dir: str | None) -> None:
    """Make a running gateway re-read its config file (as SIGHUP does).

    Unchanged drivers keep running, changed ones restart with their new config,
    removed ones stop, new ones start. A broken config is refused: the gateway
    keeps running as it was and this exits 1 with the reason. Check first with
    `edgert check`.

    \b
    Example:
      edgert reload --config /etc/edgert/gateway.toml
    """
    from edgert.config import load
    from edgert.control import request

    if config is not None:
        load(config)  # a broken file is refused here, before the gateway is asked (exit 2)
    rdir = _runtime_dir(config, runtime_dir)
    changes = request(rdir, "reload", timeout=10.0)["changes"]
    for what in ("added", "changed", "removed", "kept"):
        if changes.get(what):
            click.echo(f"{what}: {', '.join(changes[what])}")


def _runtime_dir(config: str | None, runtime_dir: str | None) -> str:
    from edgert.cli.locate import locate

    return str(locate(config, runtime_dir))


@cli.command()
@click.option(
    "--keys", "keys_of", metavar="TYPE", help="Show the config keys of driver TYPE instead."
)
def drivers(keys_of: str | None) -> None:
    """List the installed driver types (the `edgert.drivers` entry points).

    With --keys TYPE, show the keys a `[[driver]]` of that type takes: type,
    bounds, default and what each is for.

    \b
    Example:
      edgert drivers
      edgert drivers --keys sim
    """
    from edgert.config import installed_drivers, resolve_driver

    if keys_of is not None:
        _print_keys(keys_of)
        return
    for name, target in sorted(installed_drivers().items()):
        try:
            doc = (resolve_driver(name).__doc__ or "").strip().splitlines()
            about = doc[0] if doc else ""
        except LookupError as e:
            about = f"(cannot load: {e})"
        click.echo(f"{name:10} {target:36} {about}")


def _print_keys(type_name: str) -> None:
    import textwrap

    from edgert.config import _COMMON, installed_drivers, resolve_driver
    from edgert.configdoc import describe

    try:
        cls = resolve_driver(type_name)
    except LookupError as e:
        raise click.BadParameter(str(e), param_hint="--keys") from None
    target = installed_drivers().get(type_name, type_name)
    doc = (cls.__doc__ or "").strip().splitlines()
    click.echo(f"{type_name}: {target}" + (f": {doc[0]}" if doc else ""))
    common = ", ".join(_COMMON)
    if cls.Config is None:
        click.echo(f'\n[[driver]]  (type = "{type_name}"): no keys besides {common}')
        return
    table = None
    for k in describe(cls.Config):
        if k.table != table:
            table = k.table
            note = f'  (type = "{type_name}"; also {common})' if table == "driver" else ""
            click.echo(f"\n[[{table}]]{note}")
        default = "required" if k.default == "required" else f"default {k.default}"
        click.echo(f"  {k.key} = {k.type}, {default}")
        if k.doc:
            click.echo(textwrap.fill(k.doc, 96, initial_indent=" " * 6, subsequent_indent=" " * 6))


def main() -> None:
    cli(prog_name="edgert")
