"""The gateway as a NATS micro service: discovery, stats, `svc.status`, `svc.reload`.

Speaks the standard micro protocol (`io.nats.micro.v1`), so `nats micro
ls|info|stats edgert` and `edgert fleet` find every gateway on a NATS system:

- `$SRV.PING|INFO|STATS`, `$SRV.<verb>.edgert` and `$SRV.<verb>.edgert.<id>`
  answer with the service's identity (name `edgert`, version, metadata
  `{"gateway": id}`), its endpoints, or their counts; the status endpoint's
  STATS `data` carries the figures `edgert fleet ls` shows (`summary`);
- `<prefix>.<id>.svc.status` (queue group `q`) replies with the JSON of
  `edgert status --json`, from the latest snapshot the supervisor sent the bridge;
- `<prefix>.<id>.svc.reload` asks the supervisor to re-read its config over the
  control socket, as `edgert reload` does, and replies
  `{"ok", "error", "changed", "kept"}`.

The service keeps its own NATS connection (nats-py reconnects it), apart from
the bridge's point sessions: an outage of the point path, or its backoff, does
not hide the gateway from the fleet, and service traffic never queues behind
points. Its host is the fleet actor (`actor.py`) when `[fleet] enabled = true`,
which serves it on its own connection (`serve`), else the bridge, where
`run_forever` is one task of the bridge's loop. Either way it reads its host's
latest status snapshot (`host.snapshot`) only from the host's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .. import __version__
from ..roundtrip import round_trip
from .local import control_request
from .summary import summary

if TYPE_CHECKING:
    from ..config import NatsSection

__all__ = ["FleetService", "SERVICE_NAME", "status_json"]

SERVICE_NAME = "edgert"
QUEUE = "q"
VERBS = ("PING", "INFO", "STATS")
RELOAD_TIMEOUT = 30.0  # seconds the supervisor has to answer a reload
STOP_GRACE = 5.0  # seconds a stopping bridge still waits for a reload's answer
FLUSH_TIMEOUT = 10.0  # seconds the server has to confirm the subscriptions (a PING)


@dataclass
class _Endpoint:
    name: str
    subject: str
    num_requests: int = 0
    num_errors: int = 0
    last_error: str = ""
    processing_time: int = 0  # ns, summed

    def stats(self, data: Any = None) -> dict[str, Any]:
        n = self.num_requests
        return {
            "name": self.name,
            "subject": self.subject,
            "queue_group": QUEUE,
            "num_requests": n,
            "num_errors": self.num_errors,
            "last_error": self.last_error,
            "processing_time": self.processing_time,
            "average_processing_time": self.processing_time // n if n else 0,
            "data": data,
        }


def status_json(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The JSON `edgert status --json` prints, from a supervisor snapshot."""
    return {
        "gateway": snapshot.get("gateway"),
        "config_revision": snapshot.get("config_revision"),
        "actors": [
            {k: a[k] for k in a if k != "stats"} | {"stats": a.get("stats", {})}
            for a in snapshot.get("actors", [])
        ],
    }


class Host(Protocol):
    """What the service reads from the actor that hosts it."""

    snapshot: dict[str, Any]  # the latest status snapshot from the supervisor


class FleetService:
    """One gateway's micro service; owned by its host's loop."""

    def __init__(self, host: Host, gateway: str, base: str, runtime_dir: str) -> None:
        from nats.nuid import NUID

        self.host = host
        self.gateway = gateway
        self.runtime_dir = runtime_dir
        self.id = NUID().next().decode()
        self.started = dt.datetime.now(dt.UTC)
        self.metadata = {"gateway": self.gateway}
        self.status = _Endpoint("status", f"{base}.svc.status")
        self.reload = _Endpoint("reload", f"{base}.svc.reload")
        self.connected = False

    # -- the protocol's documents -------------------------------------------------
    def _identity(self, kind: str) -> dict[str, Any]:
        return {
            "type": f"io.nats.micro.v1.{kind}_response",
            "name": SERVICE_NAME,
            "id": self.id,
            "version": __version__,
            "metadata": self.metadata,
        }

    def ping(self) -> dict[str, Any]:
        return self._identity("ping")

    def info(self) -> dict[str, Any]:
        return self._identity("info") | {
            "description": f"edgert gateway {self.gateway}",
            "endpoints": [
                {"name": e.name, "subject": e.subject, "queue_group": QUEUE, "metadata": None}
                for e in (self.status, self.reload)
            ],
        }

    def stats(self) -> dict[str, Any]:
        started = self.started.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return self._identity("stats") | {
            "started": started,
            "endpoints": [self.status.stats(summary(self.host.snapshot)), self.reload.stats()],
        }

    # -- the endpoints ---------------------------------------------------------------
    def status_reply(self) -> dict[str, Any]:
        return status_json(self.host.snapshot)

    async def reload_reply(self) -> dict[str, Any]:
        try:
            reply = await control_request(self.runtime_dir, "reload", RELOAD_TIMEOUT)
        except Exception as e:  # noqa: BLE001 - the asker gets the reason
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        if not reply.get("ok"):
            return {
                "ok": False,
                "error": reply.get("error") or "refused",
                "changed": [],
                "kept": [],
            }
        ch = reply.get("changes") or {}
        changed = [*ch.get("added", []), *ch.get("changed", []), *ch.get("removed", [])]
        return {
            "ok": True,
            "error": None,
            "changed": changed,
            "kept": list(ch.get("kept", [])),
            "added": list(ch.get("added", [])),
            "removed": list(ch.get("removed", [])),
        }

    # -- NATS --------------------------------------------------------------------------
    async def run_forever(self, nats: NatsSection, backoff_min: float, backoff_max: float) -> None:
        """Connect (retrying while NATS is down), then serve until cancelled."""
        async for nc in connections(nats, f"edgert-{self.gateway}-svc", backoff_min, backoff_max):
            try:
                self.connected = True
                await self.serve(nc)
            finally:
                self.connected = False

    async def serve(self, nc: Any) -> None:
        """Answer on connection `nc` until cancelled."""
        subs = []
        for verb in VERBS:
            for subject in (
                f"$SRV.{verb}",
                f"$SRV.{verb}.{SERVICE_NAME}",
                f"$SRV.{verb}.{SERVICE_NAME}.{self.id}",
            ):
                subs.append((verb, await nc.subscribe(subject)))
        for ep in (self.status, self.reload):
            subs.append((ep.name, await nc.subscribe(ep.subject, queue=QUEUE)))
        if not await round_trip(nc, FLUSH_TIMEOUT):  # the server has the subscriptions
            raise TimeoutError("the server did not answer a PING")
        async with asyncio.TaskGroup() as tg:
            for what, sub in subs:
                tg.create_task(self._answer(nc, what, sub))

    async def _answer(self, nc: Any, what: str, sub: Any) -> None:
        async for msg in sub.messages:
            if not msg.reply:
                continue
            if what == "PING":
                await _reply(nc, msg, self.ping())
            elif what == "INFO":
                await _reply(nc, msg, self.info())
            elif what == "STATS":
                await _reply(nc, msg, self.stats())
            elif what == "status":
                self._count(self.status, time.perf_counter_ns(), {"ok": True})
                await _reply(nc, msg, self.status_reply())
            else:
                await self._reload(nc, msg)

    async def _reload(self, nc: Any, msg: Any) -> None:
        """A reload that changes the bridge itself (new routes) stops this bridge while
        the supervisor answers: the answer is still awaited, briefly, and sent."""
        t0 = time.perf_counter_ns()
        task = asyncio.ensure_future(self.reload_reply())
        try:
            reply = await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STOP_GRACE):
                    reply = await task
                    reply["note"] = "this gateway's bridge restarts with the new config"
                    self._count(self.reload, t0, reply)
                    await _reply(nc, msg, reply)
                    await round_trip(nc, STOP_GRACE)
            task.cancel()
            raise
        self._count(self.reload, t0, reply)
        await _reply(nc, msg, reply)

    def _count(self, ep: _Endpoint, t0: int, reply: dict[str, Any]) -> None:
        ep.num_requests += 1
        if reply.get("ok") is False:
            ep.num_errors += 1
            ep.last_error = str(reply.get("error"))
        ep.processing_time += time.perf_counter_ns() - t0


async def connections(
    nats: NatsSection, name: str, backoff_min: float, backoff_max: float
) -> AsyncIterator[Any]:
    """One NATS connection at a time, made as soon as NATS lets it (nats-py reconnects
    it after), closed when the consumer is done with it; never raises for NATS down."""
    import nats as nats_py

    from ..bridge.uplink import nats_options

    opts = nats_options(nats, name=name)
    opts.update(allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    backoff = backoff_min

    async def quiet(e: Exception) -> None:  # the uplink already says why NATS is down
        pass

    while True:
        try:
            nc = await nats_py.connect(**opts, error_cb=quiet)
        except Exception:  # noqa: BLE001 - NATS down: retry, never fail
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff_max * 4, backoff * 2)
            continue
        backoff = backoff_min
        try:
            yield nc
        finally:
            with contextlib.suppress(Exception):
                await nc.close()


async def _reply(nc: Any, msg: Any, reply: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):
        await nc.publish(
            msg.reply, json.dumps(reply).encode(), headers={"Content-Type": "application/json"}
        )
