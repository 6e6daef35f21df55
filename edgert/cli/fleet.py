"""`edgert fleet`: the gateways on a NATS system, found and asked through NATS.

`ls` sends one `$SRV.STATS.edgert` request (the standard micro protocol) and
collects the answers until `--timeout`: every gateway answers with its
identity, its start time and, in the status endpoint's `data`, its actor
states, buffered and dropped counts and applied config revision. A gateway
that does not answer in time is absent from the list, not an error.
`status GW` asks `<prefix>.GW.svc.status` and prints the status table.

NATS is `--nats URL` with `--user/--password`, `--token` or `--creds`, or
else the `[nats]` section of the local config (`--config`, default
/etc/edgert/gateway.toml).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from dataclasses import replace
from typing import Any

import click

from edgert.config import NatsSection, load

__all__ = ["fleet"]


def _nats(
    config: str | None,
    url: str | None,
    user: str | None,
    password: str | None,
    token: str | None,
    creds: str | None,
) -> NatsSection:
    if url is None:
        from edgert.cli.locate import config_path

        section = load(config_path(config)).nats
    else:
        section = NatsSection(url=url)
    over = {"user": user, "password": password, "token": token, "creds": creds}
    section = replace(section, **{k: v for k, v in over.items() if v is not None})
    section.check()
    return section


def _nats_options(f: Any) -> Any:
    for opt in reversed(
        [
            click.option("--nats", "url", metavar="URL", help="A NATS server (default: [nats])."),
            click.option("--user", help="NATS user (with --password)."),
            click.option("--password", help="NATS password."),
            click.option("--token", help="NATS token."),
            click.option("--creds", type=click.Path(dir_okay=False), help="NATS credentials file."),
            click.option(
                "--config",
                "config",
                type=click.Path(dir_okay=False),
                help="The config whose [nats] to use (default /etc/edgert/gateway.toml).",
            ),
            click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait."),
            click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table."),
        ]
    ):
        f = opt(f)
    return f


async def _connect(section: NatsSection, timeout: float) -> Any:
    import nats

    from edgert.bridge import nats_options

    opts = nats_options(section, name="edgert-fleet")
    opts["connect_timeout"] = min(timeout, opts.get("connect_timeout", timeout))
    errors: list[BaseException] = []

    async def quiet(e: BaseException) -> None:
        errors.append(e)

    try:
        return await nats.connect(**opts, error_cb=quiet)
    except Exception as e:  # noqa: BLE001 - one clear line
        cause = errors[-1] if errors else e
        urls = ", ".join(section.urls)
        raise click.ClickException(f"cannot reach NATS at {urls} ({cause})") from None


async def collect(section: NatsSection, timeout: float) -> list[dict[str, Any]]:
    """Every `$SRV.STATS.edgert` answer that arrives within `timeout`."""
    from edgert.fleet import SERVICE_NAME

    nc = await _connect(section, timeout)
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(f"$SRV.STATS.{SERVICE_NAME}", b"", reply=inbox)
        out: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except Exception:  # noqa: BLE001 - nats-py's TimeoutError: the time is up
                break
            try:
                out.append(json.loads(msg.data))
            except ValueError:
                continue
        return out
    finally:
        await nc.close()


def gateway_line(stats: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """One `ls` row from one STATS answer."""
    data: dict[str, Any] = {}
    for ep in stats.get("endpoints") or []:
        if ep.get("name") == "status" and isinstance(ep.get("data"), dict):
            data = ep["data"]
    try:
        started = dt.datetime.fromisoformat(str(stats.get("started")).replace("Z", "+00:00"))
        uptime = max(0.0, (now - started).total_seconds())
    except ValueError:
        uptime = None
    return {
        "gateway": (stats.get("metadata") or {}).get("gateway") or stats.get("id"),
        "version": stats.get("version"),
        "uptime": uptime,
        "actors": data.get("actors", {}),
        "buffered": data.get("buffered"),
        "dropped": data.get("dropped"),
        "config_revision": data.get("config_revision"),
    }


def _table(lines: list[dict[str, Any]]) -> str:
    from edgert.supervisor.control import _age

    rows = [("GATEWAY", "VERSION", "UPTIME", "ACTORS", "BUFFERED", "DROPPED", "REVISION")]
    for g in lines:
        rows.append(
            (
                str(g["gateway"]),
                str(g["version"]),
                "-" if g["uptime"] is None else _age(g["uptime"]),
                ", ".join(f"{n} {s}" for s, n in g["actors"].items()) or "-",
                str(g["buffered"] if g["buffered"] is not None else "-"),
                str(g["dropped"] if g["dropped"] is not None else "-"),
                str(g["config_revision"] if g["config_revision"] is not None else "-"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


@click.group("fleet")
def fleet() -> None:
    """The gateways on a NATS system: list them, show one's status.

    \b
    Example:
      edgert fleet ls --nats nats://hub:4222
      edgert fleet status gw-17 --config /etc/edgert/gateway.toml
    """


@fleet.command("ls")
@_nats_options
def ls(
    url: str | None,
    user: str | None,
    password: str | None,
    token: str | None,
    creds: str | None,
    config: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """List every gateway that answers within --timeout (one request to all)."""
    section = _nats(config, url, user, password, token, creds)
    answers = asyncio.run(collect(section, timeout))
    now = dt.datetime.now(dt.UTC)
    lines = sorted((gateway_line(a, now) for a in answers), key=lambda g: str(g["gateway"]))
    if as_json:
        click.echo(json.dumps(lines, indent=2))
    else:
        click.echo(_table(lines))


@fleet.command("status")
@_nats_options
@click.option("--prefix", help="The gateways' subject prefix (default: [nats] prefix, edgert).")
@click.argument("gateway")
def status(
    url: str | None,
    user: str | None,
    password: str | None,
    token: str | None,
    creds: str | None,
    config: str | None,
    timeout: float,
    as_json: bool,
    prefix: str | None,
    gateway: str,
) -> None:
    """Show GATEWAY's status table, asked through NATS."""
    from edgert.control import format_status

    section = _nats(config, url, user, password, token, creds)
    subject = f"{prefix or section.prefix}.{gateway}.svc.status"

    async def ask() -> Any:
        nc = await _connect(section, timeout)
        try:
            return await nc.request(subject, b"", timeout=timeout)
        finally:
            await nc.close()

    try:
        msg = asyncio.run(ask())
    except click.ClickException:
        raise
    except Exception as e:  # noqa: BLE001 - no responders or timeout: one line
        raise click.ClickException(
            f"gateway {gateway!r} did not answer on {subject}: {type(e).__name__}: {e}".rstrip(": ")
        ) from None
    snap = json.loads(msg.data)
    if as_json:
        click.echo(json.dumps(snap, indent=2))
    else:
        click.echo(format_status(snap))
