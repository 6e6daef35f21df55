"""The two KV buckets of a managed fleet, as the gateways and `edgert fleet push` use them.

- `edgert-config` (or `[fleet] bucket`), key `<gateway id>`: the desired config,
  TOML; its KV revision names it everywhere (status, reports, `fleet ls`).
- `edgert-applied`, key `<gateway id>`: what became of each revision, JSON
  `{"revision", "state": "applied" | "refused" | "rolled_back", "error", "time"}`.

Whoever comes first creates a bucket (the same settings on both sides, so the
second create is a no-op), with direct gets allowed; a gateway whose NATS user
may not create streams waits until it exists. `edgert fleet push` also allows
direct gets on a bucket made without them.

A gateway reads only its own key, so that a NATS user allowed nothing else
(deploy/nats-gateway-user.conf.in) can: a direct get of the key's last value,
and `KeyWatch`, a consumer filtered to that one key under a name of its own
(nats-py's `kv.watch` makes an unnamed consumer, created on the stream's
unfiltered API subject).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "APPLIED_BUCKET",
    "HISTORY",
    "WATCH_HEARTBEAT",
    "KeyWatch",
    "Revision",
    "WatchLost",
    "bucket",
    "decode_report",
    "watch_name",
]

APPLIED_BUCKET = "edgert-applied"
HISTORY = 5  # revisions of each key kept: a few past configs and reports to look back at
WATCH_HEARTBEAT = 5.0  # seconds between the server's heartbeats on a quiet watch
QUIET = 3  # heartbeats missed before a watch is taken as lost


async def bucket(js: Any, name: str, allow_direct: bool = False) -> Any:
    """The KV bucket `name`, created when missing (direct gets allowed); with
    `allow_direct`, an existing bucket without direct gets is given them."""
    from nats.js.errors import BucketNotFoundError

    try:
        kv = await js.key_value(name)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=name, history=HISTORY, direct=True)
    if allow_direct:
        info = await js.stream_info(f"KV_{name}")
        if not info.config.allow_direct:
            info.config.allow_direct = True
            await js.update_stream(info.config)
            kv = await js.key_value(name)
    return kv


def watch_name(key: str) -> str:
    """The consumer name of the watch on `key` (one per key: a new watch replaces it)."""
    return f"edgert-watch-{key}"


@dataclass(frozen=True, slots=True)
class Revision:
    """One revision of a key, as a watch delivers it."""

    revision: int
    value: bytes
    operation: str | None  # "DEL" or "PURGE"; None for a value


class WatchLost(Exception):
    """The server stopped sending a watch's heartbeats (its consumer is gone)."""


class KeyWatch:
    """The last revision of one key, then each new one, by a consumer filtered to that
    key alone: `start`, `next` (repeatedly), `stop` (always, also after a failure).

    The consumer (`watch_name(key)`, no acks, heartbeats every `heartbeat` seconds)
    replaces one of the same name left from an earlier connection, and is removed by
    the server once nobody listens to it for a minute."""

    def __init__(self, nc: Any, bucket: str, key: str, heartbeat: float = WATCH_HEARTBEAT) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.stream = f"KV_{bucket}"
        self.subject = f"$KV.{bucket}.{key}"
        self.name = watch_name(key)
        self.heartbeat = heartbeat
        self.sub: Any = None
        self.heard = 0.0  # when the server last sent anything on the watch

    async def start(self) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        with contextlib.suppress(NotFoundError):  # the last connection's, if still there
            await self.js.delete_consumer(self.stream, self.name)
        inbox = self.nc.new_inbox()
        self.sub = await self.nc.subscribe(inbox)
        await self.js.add_consumer(
            self.stream,
            ConsumerConfig(
                name=self.name,
                filter_subject=self.subject,
                deliver_subject=inbox,
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                ack_policy=AckPolicy.NONE,
                idle_heartbeat=self.heartbeat,
                inactive_threshold=max(60.0, QUIET * self.heartbeat),
            ),
        )
        self.heard = asyncio.get_running_loop().time()

    async def next(self, timeout: float) -> Revision | None:
        """The next revision, or None when none came within `timeout`; WatchLost when
        the server has sent nothing, not even a heartbeat, for `QUIET` heartbeats."""
        import nats.errors

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            now = loop.time()
            lost_at = self.heard + QUIET * self.heartbeat
            if now >= lost_at:
                raise WatchLost(
                    f"no heartbeat on the watch of {self.subject} for {now - self.heard:.0f}s"
                )
            if now >= deadline:
                return None
            try:
                msg = await self.sub.next_msg(timeout=min(deadline, lost_at) - now)
            except nats.errors.TimeoutError:
                continue
            self.heard = loop.time()
            headers = msg.headers or {}
            if headers.get("Status") or not msg.reply:
                continue  # a heartbeat (or another status), no revision
            op = headers.get("KV-Operation")
            return Revision(msg.metadata.sequence.stream, msg.data, op)

    async def stop(self) -> None:
        if self.sub is None:
            return
        sub, self.sub = self.sub, None
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        with contextlib.suppress(Exception):  # else the server drops it when idle
            async with asyncio.timeout(1.0):
                await self.js.delete_consumer(self.stream, self.name)


def decode_report(value: bytes) -> dict[str, Any] | None:
    """A report from bucket `edgert-applied`, or None when it is not one."""
    try:
        rep = json.loads(value)
    except ValueError:
        return None
    if not isinstance(rep, dict) or not isinstance(rep.get("revision"), int):
        return None
    return rep
