"""`edgert cmd`: send a command to a running gateway through NATS, print the reply.

It does what any program upstream does: a request on
`<prefix>.<gateway>.cmd.<node>` with a batch of points, encoded per
`nats.encoding`, using the `[nats]` section of the gateway's config (URLs,
credentials, TLS). So it tests the whole way down — NATS, the bridge, the
driver's checks — from a shell on the device or anywhere that reaches NATS.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from edgert.config import ConfigError, NatsSection, decode
from edgert.point import Point, encode_batch, unpack_limited, valid_name

__all__ = ["cmd", "parse_assignment"]


def parse_assignment(text: str) -> tuple[str, Any]:
    """`TYPE=VALUE` -> (type, value): true/false, an int, a float, else the string."""
    name, sep, raw = text.partition("=")
    if not sep or not valid_name(name):
        raise click.BadParameter(
            f"{text!r}: expected TYPE=VALUE, TYPE of letters, digits, _ and -", param_hint="POINTS"
        )
    low = raw.strip().lower()
    if low in ("true", "false"):
        return name, low == "true"
    for kind in (int, float):
        try:
            return name, kind(raw)
        except ValueError:
            pass
    return name, raw


class _Unreachable(Exception):
    """No connection to any NATS server of the config could be made."""


async def _request(opts: dict[str, Any], subject: str, data: bytes, headers: dict, t: float) -> Any:
    import nats

    errors: list[BaseException] = []

    async def quiet(e: BaseException) -> None:  # nats-py would log each try with a traceback
        errors.append(e)

    try:
        nc = await nats.connect(**opts, error_cb=quiet)
    except Exception as e:  # noqa: BLE001 - reported as one line by the caller
        cause = errors[-1] if errors else e
        raise _Unreachable(f"{type(cause).__name__}: {cause}".rstrip(": ")) from None
    try:
        return await nc.request(subject, data, timeout=t, headers=headers)
    finally:
        await nc.close()


@click.command("cmd")
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    help="The gateway's config file (default: the only running gateway's, else /etc/edgert/gateway.toml).",
)
@click.option("--key", default="0", show_default=True, help="The points' key.")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for the reply.")
@click.argument("node")
@click.argument("points", nargs=-1, required=True)
def cmd(config: str | None, key: str, timeout: float, node: str, points: tuple[str, ...]) -> None:
    """Write POINTS (TYPE=VALUE ...) to NODE of the gateway in CONFIG; print the reply.

    Exits 0 when the driver applied the command, 1 when it was refused (the
    reason is printed) or no answer came.

    Without --config: the config the only running gateway was started from, else
    /etc/edgert/gateway.toml. Of it only [gateway] id and [nats] are read.

    \b
    Example:
      edgert cmd boiler setpoint=65     # the only running gateway
      edgert cmd --config configs/demo.toml boiler setpoint=65
      edgert cmd --config gw.toml relays relay1=true relay2=false
    """
    from edgert.bridge import CONTENT_TYPES, nats_options
    from edgert.cli.locate import config_path

    config = config_path(config)
    gateway_id, section = _target(config)
    if not valid_name(node):
        raise click.BadParameter(f"{node!r}: letters, digits, _ and - only", param_hint="NODE")
    if not section.enabled:
        raise click.UsageError(f"{config}: [nats] enabled = false: the gateway takes no commands")
    batch = [Point(node, t, key, v, origin="cli") for t, v in map(parse_assignment, points)]
    enc = section.encoding
    subject = f"{section.prefix}.{gateway_id}.cmd.{node}"
    opts = nats_options(section, name=f"edgert-cmd-{gateway_id}")
    opts["connect_timeout"] = min(timeout, opts.get("connect_timeout", timeout))
    headers = {"Content-Type": CONTENT_TYPES[enc]}
    try:
        msg = asyncio.run(_request(opts, subject, encode_batch(batch, enc), headers, timeout))
    except _Unreachable as e:
        urls = ", ".join(section.urls)
        raise click.ClickException(f"cannot reach NATS at {urls} ({e}); nothing was sent") from None
    except Exception as e:  # noqa: BLE001 - one clear line, whatever nats-py raised
        raise click.ClickException(_no_reply(e, gateway_id, subject, timeout)) from None
    if (msg.headers or {}).get("Content-Type") == CONTENT_TYPES["json"]:
        reply = json.loads(msg.data)
    else:
        reply = unpack_limited(msg.data)
    if isinstance(reply, dict) and reply.get("ok"):
        click.echo("ok")
        return
    why = reply.get("error") if isinstance(reply, dict) else f"unexpected reply {reply!r}"
    raise click.ClickException(f"refused: {why}")


def _target(config: str) -> tuple[str, NatsSection]:
    """The gateway's id and `[nats]` section, all a command needs of its config: a
    problem elsewhere in the file (a driver's typo, which `check` reports) is no reason
    to refuse a command to the gateway that runs."""
    from edgert.cli.locate import read_leniently

    doc = read_leniently(config)
    gw = doc.get("gateway")
    gid = gw.get("id") if isinstance(gw, dict) else None
    problems = []
    if not isinstance(gid, str) or not valid_name(gid):
        problems.append(f"{config}: [gateway] id: missing or not a name ([A-Za-z0-9_-]+)")
    raw = doc.get("nats", {})
    section = None
    if not isinstance(raw, dict):
        problems.append(f"{config}: [nats] must be a table")
    else:
        try:
            section = decode(NatsSection, raw, f"{config}: [nats]")
        except ConfigError as e:
            problems += e.problems
    if problems or section is None:
        raise ConfigError(problems)
    return str(gid), section


def _no_reply(e: Exception, gateway: str, subject: str, timeout: float) -> str:
    """Why a request got no reply, in the words of what the user can do about it."""
    kind = type(e).__name__
    if kind == "NoRespondersError":  # NATS knows nobody subscribes: nothing was delivered
        return (
            f"no gateway {gateway!r} listens on {subject}: it is not running, or not "
            "connected to this NATS server (edgert status shows its link); nothing was sent"
        )
    if kind == "TimeoutError":
        return (
            f"no reply on {subject} within {timeout:g}s: the gateway may be stopping or "
            "overloaded, and may or may not have applied the command"
        )
    return f"no reply on {subject}: {kind}: {e}"
