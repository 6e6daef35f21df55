"""The uplink: the bridge's NATS connection, one session at a time.

`nats_options` turns the `[nats]` section into `nats.connect` arguments (auth,
TLS, URLs). `Uplink.run` connects, and while connected runs one `Session`:
it makes sure the JetStream stream exists (when `jetstream = true`),
subscribes to commands, publishes what the forwarder asks in order, and tells
the forwarder when NATS took each message: the JetStream ack, or on core NATS
a marker the bridge publishes to its own inbox behind each round of messages
(when the server delivers it back, it has processed everything before it). A publish error, an ack missing for `ack_timeout` or a lost
connection ends the session; the forwarder then takes back what was in flight.
While NATS is down or refuses the credentials the uplink logs why and retries
with a short, jittered backoff (`backoff_min` doubling up to `backoff_max`), so
the first point leaves within about a second of NATS coming back. It never
fails for it. nats-py's own reconnection is off: every outage is seen here.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import NatsSection
from .forwarder import Publish
from .payload import CONTENT_TYPES, messages

if TYPE_CHECKING:
    from .actor import _Run

__all__ = ["nats_options", "Uplink", "Session"]


def nats_options(section: NatsSection, name: str = "edgert") -> dict[str, Any]:
    """Keyword arguments for `nats.connect` from the `[nats]` section (auth, TLS, URLs).

    Reconnection is left to the caller (one connection per session, so the
    bridge's loop sees every outage); a missing TLS file raises ValueError.
    """
    opts: dict[str, Any] = {
        "servers": section.urls,
        "name": name,
        "allow_reconnect": False,
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0.05,
        "connect_timeout": 3,
        "ping_interval": 5,
        "max_outstanding_pings": 2,
    }
    if section.user is not None:
        opts["user"], opts["password"] = section.user, section.password
    if section.token is not None:
        opts["token"] = section.token
    if section.creds is not None:
        if not Path(section.creds).is_file():
            raise ValueError(f"[nats] creds: no such file {section.creds!r}")
        opts["user_credentials"] = section.creds
    tls_wanted = (
        section.tls_ca or section.tls_cert or any(u.startswith("tls://") for u in section.urls)
    )
    if tls_wanted:
        for key in ("tls_ca", "tls_cert", "tls_key"):
            f = getattr(section, key)
            if f is not None and not Path(f).is_file():
                raise ValueError(f"[nats] {key}: no such file {f!r}")
        tls = ssl.create_default_context(cafile=section.tls_ca)
        if section.tls_cert:
            tls.load_cert_chain(section.tls_cert, section.tls_key)
        opts["tls"] = tls
    return opts


class Down(Exception):
    """The NATS connection of this session is gone."""


class Session:
    """One NATS connection: what to publish next, and what awaits NATS's ack."""

    def __init__(self, nc: Any, js: Any, number: int, inbox: str) -> None:
        self.nc = nc
        self.js = js
        self.number = number  # the forwarder's session number
        self.inbox = inbox  # core NATS: where our markers come back
        self.mark = 0
        self.marks: deque[tuple[int, int]] = deque()  # (marker, messages before it)
        self.outgoing: deque[Publish] = deque()
        self.more = asyncio.Event()
        self.acks: deque[list[asyncio.Future]] = deque()  # JetStream: per message, in order
        self.acked = asyncio.Event()


class Uplink:
    """Connects, runs sessions, retries; owned by the bridge's loop (`_Run`)."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.cfg = run.cfg
        self.session: Session | None = None
        self.connected = False
        self.server = ""
        self.error = ""
        self.attempts = 0

    def publish(self, action: Publish) -> None:
        s = self.session
        if s is not None and s.number == action.session:
            s.outgoing.append(action)
            s.more.set()

    async def run_forever(self) -> None:
        import nats as nats_py

        cfg = self.cfg
        backoff = cfg.backoff_min
        opts = nats_options(cfg.nats, name=f"edgert-{cfg.gateway_id}")
        while True:
            errors: list[BaseException] = []
            closed = asyncio.Event()

            async def on_error(e: Exception, errors: list[BaseException] = errors) -> None:
                errors.append(e)

            async def on_closed(closed: asyncio.Event = closed) -> None:
                closed.set()

            self.attempts += 1
            try:
                nc = await nats_py.connect(**opts, error_cb=on_error, closed_cb=on_closed)
            except Exception as e:  # noqa: BLE001 - NATS down or refusing: retry, never fail
                self._down(why(e, errors), first=self.connected or not self.error)
                self.run.feed(self.run.fwd.unreachable(time.monotonic()))
                self.run.changed()
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(cfg.backoff_max, backoff * 2)
                continue
            backoff = cfg.backoff_min
            self.connected, self.error = True, ""
            self.server = str(nc.connected_url.geturl()) if nc.connected_url else ""
            self.run.log.info("NATS: connected to %s", self.server)
            try:
                await self._session(nc, closed)
            except* (Down, OSError, TimeoutError, nats_py.errors.Error) as eg:
                self._down(why(eg.exceptions[0], errors), first=True)
            finally:
                self.connected = False
                if self.session is not None:
                    self.session = None
                    self.run.feed(self.run.fwd.lost(time.monotonic()))
                with contextlib.suppress(Exception):
                    await nc.close()
                self.run.changed()
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))

    def _down(self, reason: str, first: bool) -> None:
        changed = reason != self.error
        self.connected, self.error = False, reason
        if first or changed:
            self.run.log.error("NATS: %s; retrying with backoff", reason)

    async def _session(self, nc: Any, closed: asyncio.Event) -> None:
        run = self.run
        js = None
        if self.cfg.nats.jetstream:
            js = nc.jetstream(timeout=self.cfg.ack_timeout, domain=self.cfg.nats.jetstream_domain)
            await self._ensure_stream(js)
        sub = await nc.subscribe(f"{run.base}.cmd.>")
        inbox = nc.new_inbox()
        marks = await nc.subscribe(inbox) if js is None else None
        async with asyncio.TaskGroup() as tg:
            sess = Session(nc, js, run.fwd.session + 1, inbox)
            self.session = sess
            run.feed(run.fwd.connected(time.monotonic()))
            assert run.fwd.session == sess.number
            run.changed()
            tg.create_task(self._sender(sess))
            if js is not None:
                tg.create_task(self._js_acks(sess))
            else:
                tg.create_task(self._core_acks(sess, marks))
            tg.create_task(run.statuses(nc))
            tg.create_task(self._commands(nc, sub, tg))
            await closed.wait()
            raise Down(nc.last_error and repr(nc.last_error) or "connection closed")

    async def _ensure_stream(self, js: Any) -> None:
        import nats as nats_py

        n = self.cfg.nats
        subjects = [f"{self.run.base}.p.>", f"{self.run.base}.status"]
        try:
            await js.stream_info(n.stream)
            return
        except nats_py.js.errors.NotFoundError:
            pass
        await js.add_stream(name=n.stream, subjects=subjects)
        self.run.log.info("JetStream: created stream %s for %s", n.stream, ", ".join(subjects))

    async def _commands(self, nc: Any, sub: Any, tg: asyncio.TaskGroup) -> None:
        commands = self.run.commands
        async for msg in sub.messages:
            if commands.admit():  # bounded: past it, "busy" at once and no task
                tg.create_task(commands.handle(nc, msg, self.run.log))
            else:
                await commands.refuse_busy(nc, msg)

    async def _sender(self, sess: Session) -> None:
        """Publish in order; on core NATS a flush round trip says NATS took them."""
        run = self.run
        enc = run.enc
        ctype = CONTENT_TYPES[enc]
        nc, js = sess.nc, sess.js
        while True:
            if not sess.outgoing:
                sess.more.clear()
                await sess.more.wait()
                continue
            n = 0
            while sess.outgoing:
                a = sess.outgoing.popleft()
                subject = f"{run.base}.p.{a.node}"
                futs = []
                for msg_id, payload in messages(a.msg_id, a.data, enc, nc.max_payload):
                    headers = {"Content-Type": ctype, "Nats-Msg-Id": msg_id}
                    if js is not None:
                        futs.append(await js.publish_async(subject, payload, headers=headers))
                    else:
                        await nc.publish(subject, payload, headers=headers)
                n += 1
                if js is not None:
                    sess.acks.append(futs)
                    sess.acked.set()
            if js is None:
                # a marker to ourselves, behind the messages on the same connection: when
                # it comes back, the server has taken them (rounds are pipelined)
                sess.mark += 1
                sess.marks.append((sess.mark, n))
                await nc.publish(sess.inbox, b"%d" % sess.mark)
                sess.acked.set()

    async def _core_acks(self, sess: Session, sub: Any) -> None:
        """Core NATS: each marker back from the server confirms the messages before it."""
        run = self.run
        timeout = self.cfg.ack_timeout
        while True:
            if not sess.marks:
                sess.acked.clear()
                await sess.acked.wait()
                continue
            msg = await sub.next_msg(timeout=timeout)  # nats.errors.TimeoutError ends it
            n = 0
            while sess.marks and sess.marks[0][0] <= int(msg.data):
                n += sess.marks.popleft()[1]
            if n and self.session is sess:
                run.feed(run.fwd.published(sess.number, time.monotonic(), n))

    async def _js_acks(self, sess: Session) -> None:
        """JetStream acks, oldest first; an error or a missing ack ends the session."""
        run = self.run
        timeout = self.cfg.ack_timeout
        while True:
            if not sess.acks:
                sess.acked.clear()
                await sess.acked.wait()
                continue
            head = sess.acks[0]
            if not all(f.done() for f in head):
                finished, _ = await asyncio.wait(head, timeout=timeout)
                if len(finished) < len(head):
                    raise TimeoutError(f"no JetStream ack within {timeout:g}s")
            n = 0
            while sess.acks and all(f.done() for f in sess.acks[0]):
                for f in sess.acks.popleft():
                    f.result()  # a JetStream error (no stream, ...) ends the session
                n += 1
            if self.session is sess:
                run.feed(run.fwd.published(sess.number, time.monotonic(), n))


def why(e: BaseException, errors: list[BaseException]) -> str:
    """A one-line reason for a failed or lost connection."""
    cause = errors[-1] if errors else e
    text = str(cause) or type(cause).__name__
    if "Authorization Violation" in text or "authorization" in text.lower():
        return (
            f"the server refused our credentials ({text}): check [nats] user/password/token/creds"
        )
    if isinstance(cause, ConnectionRefusedError | OSError):
        return f"cannot reach the server: {text}"
    return f"{type(cause).__name__}: {text}"
