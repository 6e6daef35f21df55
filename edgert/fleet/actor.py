"""The fleet actor: a managed gateway's link to its fleet, in its own process.

Runs when `[fleet] enabled = true`, with the local file's `[nats]` (so a pushed
config never cuts the gateway off from the fleet that manages it), on one NATS
connection of its own:

- the micro service (`service.py`: discovery, `svc.status`, `svc.reload`);
- the watch on key `<id>` of the desired-config bucket (a consumer filtered to
  that key, `kv.KeyWatch`, and direct gets: nothing a gateway's own NATS user
  may not do). Each new revision is
  validated as `edgert check` does (the local file overlaid with it, then the
  preflight) and refused if broken; else it is kept as pending in the data
  directory (`store.py`) and the supervisor reloads (the control socket, as
  `edgert reload`), so unchanged drivers keep their processes. If within
  `health_timeout` every actor is running, steadily, and the bridge's point
  session is on NATS, the revision becomes the last good one (`applied`); if
  not, the pending one is dropped and the supervisor reloads the last good one
  (`rolled_back`). A driver the push did not touch that was not running before
  it either (given up on for its hardware) is not held against it. The command
  connection is held against it only when the push changes how the bridge
  connects (`[nats]` url, credentials, TLS files or prefix): then both must
  connect; otherwise a command connection down (status: `commands_error`) is
  reported and logged, not rolled back, since the points flow;
- the reports: each outcome goes to bucket `edgert-applied`, key `<id>`, once
  NATS takes it (kept in the data directory until then).

A revision newer than the one waiting to be tried replaces it (the older is
refused as superseded). A reload can restart this actor itself (a pushed
`[supervisor]` changes its heartbeats); the new one finds the pending revision,
reloads again (a no-op when it already runs) and judges it afresh. Deleting the
key changes nothing: the gateway keeps what it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from ..actor import Actor
from ..bridge.natsimport import import_nats
from ..config import ConfigError, FleetSection, NatsSection, load, overlay
from ..context import Context, statuses
from ..tasks import cancel_all
from .kv import APPLIED_BUCKET, KeyWatch, Revision, bucket
from .local import control_request
from .service import RELOAD_TIMEOUT, FleetService, connections
from .store import Desired, Outcome, Store, now_text

__all__ = ["Fleet", "FleetConfig", "judge"]

STEADY = 1.0  # seconds every actor must have been running for to count as healthy
# the [nats] keys that decide where and as whom the bridge connects, and to what subjects
CONNECTION = (
    "url",
    "user",
    "password",
    "token",
    "creds",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "prefix",
)
BACKSTOP = 30.0  # seconds between direct reads of the key, should a watch miss an update


@dataclass
class FleetConfig:
    gateway_id: str
    runtime_dir: str
    data_dir: str
    config_path: str  # the local file, overlaid with each desired revision to check it
    nats: NatsSection  # the local file's: the connection to the fleet
    fleet: FleetSection = field(default_factory=FleetSection)
    backoff_min: float = 0.1  # reconnect backoff to NATS, doubling up to backoff_max
    backoff_max: float = 0.5
    steady: float = STEADY


class Fleet(Actor):
    """Watches the desired config in KV, applies it, rolls it back, reports; serves the
    gateway's micro service."""

    Config = FleetConfig
    uses_bus = False
    wants_status = True

    def run(self, ctx: Context) -> None:
        import_nats()  # without importlib.metadata: see edgert.bridge.natsimport
        asyncio.run(_Run(ctx).main())


def judge(
    snapshot: dict[str, Any],
    revision: int,
    steady: float,
    excused: frozenset[str] = frozenset(),
    commands: bool = False,
) -> tuple[str, float]:
    """Is the gateway healthy running `revision`? ("", seconds it must still stay so), or
    (what is wrong, 0). Every actor running for `steady` seconds, the bridge's point
    session on NATS, and with `commands` its command connection too; `excused`: actors
    the push left alone that were not running before it either."""
    if snapshot.get("config_revision") != revision:
        return f"the supervisor does not run revision {revision} yet", 0.0
    wrong = []
    wait = 0.0
    for a in snapshot.get("actors", []):
        if a.get("name") in excused and a.get("state") != "running":
            continue
        if a.get("state") != "running":
            err = (a.get("last_error") or "").strip().splitlines()
            wrong.append(f"{a.get('name')} {a.get('state')}" + (f" ({err[-1]})" if err else ""))
            continue
        nats = (a.get("stats") or {}).get("nats") or ""
        # "connected", "connected; commands down: <why>" or "down: <why>"
        up = nats == "connected" or (not commands and nats.startswith("connected;"))
        if a.get("kind") == "bridge" and not up:
            wrong.append(f"bridge: nats {nats or 'not connected yet'}")
        wait = max(wait, steady - float(a.get("uptime") or 0.0))
    return "; ".join(wrong), wait


def commands_down(snapshot: dict[str, Any]) -> str:
    """The bridge's "commands down: <why>" while its point session is up, else ""."""
    for a in snapshot.get("actors", []):
        nats = (a.get("stats") or {}).get("nats") or ""
        if a.get("kind") == "bridge" and nats.startswith("connected; "):
            return nats.removeprefix("connected; ")
    return ""


class _Run:
    """One run of the fleet actor: the state its loop owns."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.cfg: FleetConfig = ctx.config
        self.log: logging.Logger = ctx.log
        self.gw = self.cfg.gateway_id
        self.store = Store(self.cfg.data_dir)
        self.snapshot: dict[str, Any] = {}  # read by the service too
        self.snap_time = 0.0
        self.snap_changed = asyncio.Event()
        self.wanted: Desired | None = None  # the newest revision not yet taken up
        self.wanted_set = asyncio.Event()
        self.reports: list[Outcome] = []  # outcomes not yet in edgert-applied
        self.report_ready = asyncio.Event()
        self.trying: int | None = None
        self.watch_error = ""
        out = self.store.outcome()
        last = self.store.pending() or out or self.store.applied()
        self.handled: int | None = last.revision if last is not None else None
        if out is not None and not out.reported:
            self.reports.append(out)
        base = f"{self.cfg.nats.prefix}.{self.gw}"
        self.service = FleetService(self, self.gw, base, self.cfg.runtime_dir)
        self.service.metadata["managed"] = "true"  # `fleet push --all` pushes to these

    async def main(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self.connected()), tg.create_task(self.applier())]
            self._report()
            await self.inbox()
            await cancel_all(tasks, log=self.log)

    async def inbox(self) -> None:
        """The supervisor's snapshots, judged by a trial; returns on Stop."""
        async for snapshot in statuses(self.ctx):
            self.snapshot = snapshot
            self.snap_time = asyncio.get_running_loop().time()
            self.snap_changed.set()

    def _report(self) -> None:
        """The figures `edgert status` shows for this actor."""
        rev = self.snapshot.get("config_revision")
        if self.trying is not None:
            now = f"trying revision {self.trying}"
        else:
            now = f"revision {rev}" if rev is not None else "local file"
        if not self.service.connected:
            now += "; nats connecting"
        elif self.watch_error:
            now += f"; kv: {self.watch_error}"
        self.ctx.report(now=now, trying=self.trying, unreported=len(self.reports))

    # -- NATS: the service, the watch, the reports ----------------------------------------
    async def connected(self) -> None:
        cfg = self.cfg
        name = f"edgert-{self.gw}-fleet"
        async for nc in connections(cfg.nats, name, cfg.backoff_min, cfg.backoff_max):
            self.service.connected = True
            self._report()
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self.service.serve(nc))
                    tg.create_task(self.watch(nc))
                    tg.create_task(self.reporter(nc))
            finally:
                self.service.connected = False

    async def watch(self, nc: Any) -> None:
        """Offer every new revision of key `<id>`; retry (never fail) while the bucket or
        JetStream is not there. Only the key's own subject is used (`KeyWatch`, and a
        direct get after `BACKSTOP` quiet seconds), so a gateway's NATS user needs no
        rights on the other keys."""
        from nats.js.errors import KeyNotFoundError

        js = nc.jetstream()
        backoff = self.cfg.backoff_min
        while True:
            watcher: KeyWatch | None = None
            try:
                kv = await bucket(js, self.cfg.fleet.bucket)
                watcher = KeyWatch(nc, self.cfg.fleet.bucket, self.gw)
                await watcher.start()
                self._watch_ok()
                while True:
                    entry = await watcher.next(BACKSTOP)
                    if entry is None:  # a quiet while: read the key itself
                        with contextlib.suppress(KeyNotFoundError):  # deleted, or never put
                            e = await kv.get(self.gw)
                            entry = Revision(e.revision, e.value or b"", e.operation)
                    if entry is not None:
                        self.offer(entry.revision, entry.value, entry.operation)
                    backoff = self.cfg.backoff_min
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - no JetStream, no bucket, no rights: retry
                why = f"{type(e).__name__}: {e}".rstrip(": ")
                if why != self.watch_error:
                    self.log.warning("cannot watch KV %s: %s", self.cfg.fleet.bucket, why)
                    self.watch_error = why
                    self._report()
            finally:
                if watcher is not None:
                    await watcher.stop()
            await asyncio.sleep(backoff)
            backoff = min(5.0, backoff * 2)

    def _watch_ok(self) -> None:
        if self.watch_error:
            self.log.info("watching KV %s key %s", self.cfg.fleet.bucket, self.gw)
            self.watch_error = ""
            self._report()

    def offer(self, revision: int, value: bytes | None, operation: str | None) -> None:
        """A revision of the key, from the watch or the backstop read."""
        if operation in ("DEL", "PURGE"):
            self.log.info("desired config deleted (revision %d): keeping what runs", revision)
            return
        if revision == self.handled or (self.wanted and revision == self.wanted.revision):
            return
        if self.wanted is not None:
            self.finish(
                Outcome(
                    self.wanted.revision,
                    "refused",
                    f"superseded by revision {revision} before it was tried",
                    now_text(),
                )
            )
        text = (value or b"").decode("utf-8", errors="replace")
        self.wanted = Desired(revision, text, now_text())
        self.wanted_set.set()

    async def reporter(self, nc: Any) -> None:
        """Put each outcome into bucket `edgert-applied`, oldest first, as NATS takes them."""
        js = nc.jetstream()
        backoff = self.cfg.backoff_min
        said = ""
        while True:
            self.report_ready.clear()
            while self.reports:
                out = self.reports[0]
                try:
                    kv = await bucket(js, APPLIED_BUCKET)
                    await kv.put(self.gw, json.dumps(out.report()).encode())
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - kept, tried again
                    why = f"{type(e).__name__}: {e}".rstrip(": ")
                    if why != said:  # once per cause, not once per try
                        self.log.warning("cannot report revision %d yet: %s", out.revision, why)
                        said = why
                    await asyncio.sleep(backoff)
                    backoff = min(5.0, backoff * 2)
                    continue
                backoff, said = self.cfg.backoff_min, ""
                self.reports.pop(0)
                if self.store.outcome() == out:
                    self.store.record(replace(out, reported=True))
                self._report()
            await self.report_ready.wait()

    def finish(self, out: Outcome) -> None:
        """Keep an outcome (data directory first) and hand it to the reporter."""
        log = self.log.info if out.state == "applied" else self.log.error
        log("revision %d %s%s", out.revision, out.state, f": {out.error}" if out.error else "")
        self.store.record(out)
        self.reports.append(out)
        self.report_ready.set()
        self._report()

    # -- applying ---------------------------------------------------------------------
    async def applier(self) -> None:
        """Judge a revision left pending by an earlier run of this actor, then take up each
        new revision in turn."""
        pending = self.store.pending()
        if pending is not None:
            self.log.info("revision %d was being tried: judging it again", pending.revision)
            await self.trial(pending, resumed=True)
        while True:
            await self.wanted_set.wait()
            self.wanted_set.clear()
            d, self.wanted = self.wanted, None
            if d is not None:
                await self.apply(d)

    async def apply(self, d: Desired) -> None:
        self.handled = d.revision
        try:
            self.check(d)
        except ConfigError as e:
            self.finish(Outcome(d.revision, "refused", str(e), now_text()))
            return
        self.store.try_(d)
        await self.trial(d)

    def check(self, d: Desired) -> None:
        """Validate as `edgert check` does: the local file overlaid with `d`, then what
        `run` would fail on here; raise ConfigError."""
        from ..preflight import preflight

        local = load(self.cfg.config_path)
        cfg = overlay(local, d.toml, d.where(self.cfg.fleet.bucket, self.gw))
        errors = [f.message for f in preflight(cfg) if f.level == "error"]
        if errors:
            raise ConfigError("; ".join(errors))

    async def trial(self, d: Desired, resumed: bool = False) -> None:
        """Run `d` (pending) and keep it if the gateway is healthy within health_timeout.

        An actor the push kept as it was, and that was not running before it either (a
        driver given up on for its hardware), does not count against it; after a
        restart of this actor (`resumed`) that is not known any more, and every actor
        counts."""
        self.trying = d.revision
        self._report()
        before = {a.get("name"): a.get("state") for a in self.snapshot.get("actors", [])}
        commands = self.moves_nats(d)
        try:
            reply = await control_request(self.cfg.runtime_dir, "reload", RELOAD_TIMEOUT)
            if not reply.get("ok"):
                self.store.drop_pending()
                error = str(reply.get("error") or "the supervisor refused the reload")
                self.finish(Outcome(d.revision, "refused", error, now_text()))
                return
            kept = (reply.get("changes") or {}).get("kept") or []
            excused = frozenset(
                () if resumed else (n for n in kept if before.get(n, "running") != "running")
            )
            limit = self.cfg.fleet.health_timeout
            wrong = await self.health(d.revision, limit, excused, commands)
            if not wrong:
                if down := commands_down(self.snapshot):
                    self.log.warning("applied revision %d; %s", d.revision, down)
                self.store.accept(d)
                self.finish(Outcome(d.revision, "applied", None, now_text()))
                return
            self.store.drop_pending()
            error = f"not healthy within {limit:g}s: {wrong}"
            reply = await control_request(self.cfg.runtime_dir, "reload", RELOAD_TIMEOUT)
            if not reply.get("ok"):
                error += f"; restoring the last good config failed: {reply.get('error')}"
            self.finish(Outcome(d.revision, "rolled_back", error, now_text()))
        finally:
            self.trying = None
            self._report()

    def moves_nats(self, d: Desired) -> bool:
        """Does `d` change where or as whom the bridge connects (`CONNECTION`), compared
        with the last good config? Then its command connection must connect too."""
        try:
            local = load(self.cfg.config_path)
            good = self.store.applied()
            where = self.cfg.fleet.bucket, self.gw
            old = overlay(local, good.toml, good.where(*where)).nats if good else local.nats
            new = overlay(local, d.toml, d.where(*where)).nats
        except ConfigError:
            return True  # cannot tell: the stricter judgement
        return any(getattr(old, k) != getattr(new, k) for k in CONNECTION)

    async def health(
        self, revision: int, limit: float, excused: frozenset[str], commands: bool
    ) -> str:
        """ "" once every actor has run `revision` steadily, else what is wrong at `limit`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            wrong, wait = judge(self.snapshot, revision, self.cfg.steady, excused, commands)
            now = loop.time()
            if not wrong:
                # a crash in the meantime sends a new snapshot at once
                wait -= now - self.snap_time
                if wait <= 0:
                    return ""
            if now >= deadline:
                return wrong or "not steady yet"
            self.snap_changed.clear()
            timeout = deadline - now if wrong else min(wait, deadline - now)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.snap_changed.wait()
