"""`edgert fleet`: the gateways on a NATS system, found and asked through NATS.

`ls` sends one `$SRV.STATS.edgert` request (the standard micro protocol) and
collects the answers until none has come for `QUIET` seconds after the last
one, or `--timeout` passes (with no answer at all): every gateway answers with its
identity, its start time and, in the status endpoint's `data`, its actor
states, buffered and dropped counts and applied config revision. A gateway
that does not answer in time is absent from the list, not an error.
`status GW` asks `<prefix>.GW.svc.status` and prints the status table.
`push GW... FILE` (or `push --all FILE`) checks FILE here, puts it as key GW
of the desired-config bucket and waits for each gateway's report in bucket
`edgert-applied` (the revision it put): exit 0 only when every one applied it.

NATS is `--nats URL` with `--user/--password`, `--token` or `--creds`, or
else the `[nats]` section of the local config (`--config`, default
/etc/edgert/gateway.toml).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
from dataclasses import dataclass, replace
from typing import Any

import click

from edgert.config import GatewayConfig, NatsSection, load

__all__ = ["fleet"]


@dataclass(frozen=True)
class _Where:
    """Where the NATS system is: `--nats URL` and the credentials options, or else the
    `[nats]` section of the local config (`--config`)."""

    config: str | None
    url: str | None
    user: str | None
    password: str | None
    token: str | None
    creds: str | None

    def resolve(self) -> tuple[NatsSection, GatewayConfig | None]:
        """The `[nats]` to connect with, and the local config when it came from there
        (read once, for whatever else the command takes from it)."""
        local = None
        if self.url is None:
            from edgert.cli.locate import config_path

            local = load(config_path(self.config, "give --nats URL or --config FILE"))
            section = local.nats
        else:
            section = NatsSection(url=self.url)
        over = {
            "user": self.user,
            "password": self.password,
            "token": self.token,
            "creds": self.creds,
        }
        section = replace(section, **{k: v for k, v in over.items() if v is not None})
        section.check()
        return section, local


def _nats_options(timeout: float = 2.0, what: str = "Seconds to wait.") -> Any:
    """The options of every `fleet` command; the command gets them as one `_Where`
    (its first argument), then `timeout`, `as_json` and its own."""

    def decorate(f: Any) -> Any:
        @functools.wraps(f)
        def command(
            *,
            url: str | None,
            user: str | None,
            password: str | None,
            token: str | None,
            creds: str | None,
            config: str | None,
            **rest: Any,
        ) -> Any:
            return f(_Where(config, url, user, password, token, creds), **rest)

        for opt in reversed(_options(timeout, what)):
            command = opt(command)
        return command

    return decorate


def _options(timeout: float, what: str) -> list[Any]:
    return [
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
        click.option("--timeout", default=timeout, show_default=True, help=what),
        click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table."),
    ]


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


QUIET = 0.5  # seconds with no new answer that end `ls`: the fleet has answered


async def collect(section: NatsSection, timeout: float) -> list[dict[str, Any]]:
    """Every `$SRV.STATS.edgert` answer that arrives within `timeout`."""
    from edgert.fleet.service import SERVICE_NAME

    nc = await _connect(section, timeout)
    try:
        return await _answers(nc, f"$SRV.STATS.{SERVICE_NAME}", timeout, quiet=QUIET)
    finally:
        await nc.close()


async def _answers(nc: Any, subject: str, timeout: float, quiet: float | None = None) -> list[Any]:
    """The answers to one request on `subject` from every responder, as JSON, until
    `timeout`, or until `quiet` seconds pass with no new answer after one came; an
    answer that is not JSON is left out."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish(subject, b"", reply=inbox)
        out: list[Any] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            if quiet is not None and out:
                left = min(left, quiet)  # the responders have spoken: wait only for stragglers
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
        await sub.unsubscribe()


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
    from edgert.table import age

    rows = [("GATEWAY", "VERSION", "UPTIME", "ACTORS", "BUFFERED", "DROPPED", "REVISION")]
    for g in lines:
        rows.append(
            (
                str(g["gateway"]),
                str(g["version"]),
                "-" if g["uptime"] is None else age(g["uptime"]),
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
    """The gateways on a NATS system: list them, show one's status, push config.

    \b
    Example:
      edgert fleet ls --nats nats://hub:4222
      edgert fleet status gw-17 --config /etc/edgert/gateway.toml
      edgert fleet push gw-17 site.toml --nats nats://hub:4222
    """


@fleet.command("ls")
@_nats_options()
def ls(
    where: _Where,
    timeout: float,
    as_json: bool,
) -> None:
    """List every gateway that answers within --timeout (one request to all)."""
    section, _ = where.resolve()
    answers = asyncio.run(collect(section, timeout))
    now = dt.datetime.now(dt.UTC)
    lines = sorted((gateway_line(a, now) for a in answers), key=lambda g: str(g["gateway"]))
    if as_json:
        click.echo(json.dumps(lines, indent=2))
    else:
        click.echo(_table(lines))


@fleet.command("status")
@_nats_options()
@click.option("--prefix", help="The gateways' subject prefix (default: [nats] prefix, edgert).")
@click.argument("gateway")
def status(
    where: _Where,
    timeout: float,
    as_json: bool,
    prefix: str | None,
    gateway: str,
) -> None:
    """Show GATEWAY's status table, asked through NATS."""
    from edgert.control import format_status

    section, _ = where.resolve()
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


@fleet.command("push")
@_nats_options(60.0, "Seconds to wait for every gateway's report.")
@click.option(
    "--all", "to_all", is_flag=True, help="Push to every managed gateway that answers a PING."
)
@click.option(
    "--bucket", help="The desired-config bucket (default: [fleet] bucket, edgert-config)."
)
@click.option(
    "--no-check",
    is_flag=True,
    help="Do not validate FILE here (it names drivers this machine lacks); the gateway does.",
)
@click.argument("gateways", nargs=-1)
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
def push(
    where: _Where,
    timeout: float,
    as_json: bool,
    to_all: bool,
    bucket: str | None,
    no_check: bool,
    gateways: tuple[str, ...],
    file: str,
) -> None:
    """Push FILE as the desired config of GATEWAYS and wait for what each made of it.

    FILE is TOML: every section it sets but [gateway] and [fleet] replaces the
    gateway's own (the others stay as its local file has them). It is validated
    here first (exit 2 when broken), then put into the KV bucket under each
    gateway's id. Each gateway with [fleet] enabled = true validates it again,
    applies it and reports applied, refused or rolled_back. Exits 0 only when
    every gateway applied it; 1 with the reasons otherwise, or when a report did
    not come within --timeout.

    \b
    Example:
      edgert fleet push gw-17 site.toml --nats nats://hub:4222
      edgert fleet push --all site.toml
    """
    from pathlib import Path

    from edgert.point import valid_name

    if to_all == bool(gateways):
        raise click.UsageError("name the gateways, or give --all (not both)")
    for gw in gateways:
        if not valid_name(gw):
            raise click.BadParameter(f"{gw!r} is not a gateway id", param_hint="GATEWAYS")
    text = Path(file).read_text()
    if not no_check:
        check_desired(text, file, gateways[0] if gateways else "gw")
    section, local = where.resolve()
    if bucket is None:
        bucket = local.fleet.bucket if local is not None else "edgert-config"
    results = asyncio.run(push_and_wait(section, bucket, list(gateways), text, timeout))
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            line = f"{r['gateway']}: {r['state']} revision {r['revision']}"
            click.echo(line + (f": {r['error']}" if r.get("error") else ""))
    if not results:
        raise click.ClickException(
            f"no managed gateway ([fleet] enabled) answered within {min(timeout, 2.0):g}s"
        )
    if any(r["state"] != "applied" for r in results):
        raise SystemExit(1)


def check_desired(text: str, file: str, gateway: str) -> None:
    """Validate a desired config as a gateway with no other local sections would."""
    from edgert.config import loads, overlay

    overlay(loads(f'[gateway]\nid = "{gateway}"\n', "(push)"), text, file)


async def push_and_wait(
    section: NatsSection, bucket_name: str, gateways: list[str], text: str, timeout: float
) -> list[dict[str, Any]]:
    """Put `text` for each gateway (every answering one when `gateways` is empty) and
    collect the report of the revision put, until `timeout`; one row per gateway."""
    import nats.errors

    from edgert.fleet.kv import APPLIED_BUCKET, bucket, decode_report
    from edgert.fleet.service import SERVICE_NAME

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    nc = await _connect(section, timeout)
    try:
        if not gateways:
            gateways = sorted(await _answering(nc, f"$SRV.PING.{SERVICE_NAME}", min(timeout, 2.0)))
        js = nc.jetstream()
        desired = await bucket(js, bucket_name, allow_direct=True)  # gateways read by direct get
        applied = await bucket(js, APPLIED_BUCKET)
        watcher = await applied.watch(">")  # before the puts: no report is missed
        try:
            revisions = {gw: await desired.put(gw, text.encode()) for gw in gateways}
            reports: dict[str, dict[str, Any]] = {}
            while len(reports) < len(revisions) and (left := deadline - loop.time()) > 0:
                try:
                    entry = await watcher.updates(timeout=left)
                except nats.errors.TimeoutError:
                    break
                if entry is None or entry.key not in revisions or not entry.value:
                    continue
                rep = decode_report(entry.value)
                if rep is not None and rep["revision"] == revisions[entry.key]:
                    reports[entry.key] = rep
        finally:
            await watcher.stop()
    finally:
        await nc.close()
    no_report = {
        "state": "no report",
        "error": f"none within {timeout:g}s (is the gateway running, with [fleet] enabled?)",
        "time": None,
    }
    return [
        {"gateway": gw} | (reports.get(gw) or no_report) | {"revision": rev}
        for gw, rev in revisions.items()
    ]


async def _answering(nc: Any, subject: str, timeout: float) -> set[str]:
    """The managed gateways (`[fleet] enabled`) answering one request on `subject`
    within `timeout`: their ids."""
    out: set[str] = set()
    for a in await _answers(nc, subject, timeout):
        meta = (a.get("metadata") if isinstance(a, dict) else None) or {}
        if isinstance(meta, dict) and isinstance(meta.get("gateway"), str):
            if meta.get("managed") == "true":
                out.add(meta["gateway"])
    return out
