"""The uplink: the bridge's NATS connection, one session at a time.

`nats_options` turns the `[nats]` section into `nats.connect` arguments (auth,
TLS, URLs). `Uplink.run` connects, and while connected runs one `Session`:
it makes sure the JetStream stream exists and takes the gateway's subjects
(when `jetstream = true`, `edgert.bridge.stream`; a stream that does not is
said once, in the log and on the status subject, and looked at again every
`STREAM_RETRY` seconds while points wait in the spool; the environment variable
`EDGERT_STREAM_RETRY` shortens it for tests that watch the looks again),
publishes what the forwarder asks in order (the bus task calls `send` at the
end of its turn, so a batch leaves in the turn it came in), and tells
the forwarder when NATS took each message: the JetStream ack, or on core NATS
a marker the bridge publishes to its own inbox behind a round of messages
(when the server delivers it back, it has processed everything before it); and
the acks that marker releases go to the drivers at once (`_Run.feed`). A marker
goes behind a round once `MARK_EVERY` has passed since the last one, or
`MARK_POINTS` points or `MARK_MESSAGES` messages wait for one (a fast path's
credit, well inside a driver's window and the forwarder's `max_in_flight`); a
round that comes sooner is covered by the marker of a later turn of the bus
task, which comes by `mark_due` (`MARK_EVERY` after the oldest message without
one) when no frame does. Unless the bridge is quiet: a round may also have its
marker sooner, up to `MARK_SPARE` of them, one more every `MARK_SPARE_EVERY`
(a bucket), so the few rounds of an idle second (drivers polling on the host's
shared grid send their batches together, in two or three turns of the bus
task) each go with their marker in the same write, and the bus task does not
wake `MARK_EVERY` later for a marker alone; a busy bus has spent the bucket
after a few turns, and gets one more marker every `MARK_SPARE_EVERY`. A busy bus turns a hundred times a second or more,
and each marker back costs the bridge three turns of its loop (the client's
reader, the subscription's task, the acks) and the server a delivery, while
acks only return credit: one every `MARK_EVERY` is what the acks need (the
bridge gathered acks for as long before, and no longer has to).
JetStream acks come to `<inbox>.<n>`, one subscription for all, matched to
their batches by the counter `n` (`edgert.bridge.pubacks`: no future, callback
or JSON parse per message), and are taken in the subscription's own task as
markers are: the acks to the drivers they release go at once, paced as the
markers are (`MARK_EVERY`, `MARK_POINTS`, `MARK_MESSAGES`; in between, the
bridge gathers them).
A publish error, an ack missing for `[nats] ack_timeout` seconds or a lost
connection ends the session; the forwarder then takes back what was in flight.
While NATS is down or refuses the credentials the uplink logs why and retries
with a short, jittered backoff (`backoff_min` doubling up to `backoff_max`), so
the first point leaves within about a second of NATS coming back. It never
fails for it. nats-py's own reconnection is off: every outage is seen here.

Commands (`Uplink.commands_forever`) have a connection of their own, so a
flood of requests never delays the point session's acks; when it alone is
down, status says so with its reason (`state`: "connected; commands down: ...").
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import NatsSection
from ..envtime import env_seconds
from ..roundtrip import round_trip
from .forwarder import Publish
from .payload import CONTENT_TYPES, messages
from .pubacks import PubAcks, ack_error
from .status import nats_state
from .stream import StreamError, ensure_stream

if TYPE_CHECKING:
    from .actor import _Run

__all__ = ["nats_options", "Uplink", "Session"]


def _stream_retry(default: float = 10.0) -> float:
    """Seconds between looks at a JetStream stream that was refused: `default`, or
    EDGERT_STREAM_RETRY (for tests that watch the looks) when it is a number from 0.1
    to 3600; anything else there is ignored."""
    return env_seconds("EDGERT_STREAM_RETRY", default, 0.1, 3600)


STREAM_RETRY = _stream_retry()
LAG_EVERY = 0.2  # seconds between measures of how far behind the reading of commands is
COMMANDS_STABLE = 10.0  # seconds up after which the command connection's next loss is logged
LAG_TIMEOUT = 30.0  # a measure given up on (the connection's own pings end a dead one)
ACK_LATE = 0.5  # seconds: an oldest JetStream ack this late holds further publishes (`_held`)
MARK_EVERY = 0.02  # seconds between core NATS markers at most (see the module doc)...
MARK_POINTS = 1000  # ... unless this many points wait for one
MARK_MESSAGES = 16  # ... or this many messages
MARK_SPARE = 4  # markers a round may have sooner than MARK_EVERY after the last one...
MARK_SPARE_EVERY = 0.25  # ... of which one comes back every this many seconds
STARTING = 3  # first attempts on an embedded server that may still be starting: logged INFO


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


class AckTimeout(TimeoutError):
    """NATS did not acknowledge a publish within `[nats] ack_timeout`: the session ends."""


class Attempt:
    """One try at a NATS connection: `nc` once connected, else None and `error` says
    why; `closed` is set when it closes (or, with `subject`, when the server refuses
    the subscription to it); `errors`, the latest the connection reported; `pause`,
    the seconds to wait after it before the next try."""

    def __init__(self, subject: str | None, pause: float) -> None:
        self.subject = subject
        self.nc: Any = None
        self.error = ""
        self.errors: list[BaseException] = []
        self.closed = asyncio.Event()
        self.pause = pause

    async def on_error(self, e: Exception) -> None:
        if self.subject is not None:
            if refusal(e, self.subject):
                self.closed.set()  # the connection stays open, but may not do its one job
            elif "permissions violation" in str(e).lower():
                return  # a reply refused, say: that request's loss, not the connection's
        self.errors.append(e)
        del self.errors[:-4]  # the latest say why; a flood of errors keeps no more

    async def on_closed(self) -> None:
        self.closed.set()


class Reconnect:
    """Tries at a NATS connection, one after another, with a jittered backoff:
    `backoff` seconds after a failed connect, doubling up to `high`; after a
    connection that was made, its `pause`. The caller resets or raises `backoff`
    as what happened on the connection warrants."""

    def __init__(self, opts: dict[str, Any], low: float, high: float, subject: str | None = None):
        self.opts = opts
        self.high = high
        self.subject = subject  # a subscription the connection is for (see `Attempt`)
        self.backoff = low

    @contextlib.asynccontextmanager
    async def attempt(self) -> AsyncIterator[Attempt]:
        """Connect, then the block; the connection is closed after it, and the block's
        end waits before the next try (not when the block raised)."""
        import nats as nats_py

        a = Attempt(self.subject, self.backoff)
        try:
            a.nc = await nats_py.connect(**self.opts, error_cb=a.on_error, closed_cb=a.on_closed)
        except Exception as e:  # noqa: BLE001 - NATS down or refusing: retry, never fail
            a.error = why(e, a.errors)
        if a.nc is None:
            yield a
            await asyncio.sleep(self.backoff * random.uniform(0.8, 1.2))
            self.backoff = min(self.high, self.backoff * 2)
            return
        try:
            yield a
        finally:
            with contextlib.suppress(Exception):
                await a.nc.close()
        await asyncio.sleep(a.pause * random.uniform(0.8, 1.2))


class Session:
    """One NATS connection: what to publish next, and what awaits NATS's ack."""

    def __init__(self, nc: Any, js: Any, number: int, inbox: str) -> None:
        self.nc = nc
        self.js = js
        self.number = number  # the forwarder's session number
        self.inbox = inbox  # core NATS: where our markers come back
        self.mark = 0
        self.marks: deque[tuple[int, int]] = deque()  # (marker, messages before it)
        self.mark_progress = 0.0  # when a marker last came back (or the first went out)
        self.marked_at = 0.0  # when the last marker went out
        self.unmarked = 0  # messages published behind the last marker
        self.unmarked_points = 0  # ... and their points
        self.unmarked_since = 0.0  # when the oldest of them was published
        self.spare = float(MARK_SPARE)  # markers that may go sooner than MARK_EVERY...
        self.spare_at = 0.0  # ... as of then (the bucket fills again with time)
        self.outgoing: deque[Publish] = deque()
        self.more = asyncio.Event()
        self.sending = False  # a task is publishing `outgoing` (`Uplink._send`)
        self.failed: Exception | None = None  # why a publish by the bus task failed
        self.acked = asyncio.Event()  # the first marker or JetStream message of a round out
        # JetStream: the messages in flight, their acks on `<inbox>.<n>` (`edgert.bridge.pubacks`)
        self.pubacks = PubAcks(inbox) if js is not None else None
        self.confirmed = False  # JetStream: the stream has acked a message of this session
        self.released_at = 0.0  # JetStream: when acks last went to the drivers at once
        self.released_points = 0  # ... and the points and batches acked since
        self.released = 0


class Uplink:
    """Connects, runs sessions, retries; owned by the bridge's loop (`_Run`)."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.cfg = run.cfg
        self.session: Session | None = None
        self.connected = False  # the point session
        self.commands_connected = False  # the command subscription (its own connection)
        self.commands_error = ""  # why it is down ("" while connecting the first time)
        self.commands_logged = ""  # the last reason logged for it
        self.commands_attempts = 0
        self.server = ""
        self.error = ""
        self.said = ""  # the reason last logged as an error
        self.attempts = 0
        self.stream_note = ""  # what the last session found of the JetStream stream
        self.stream_error = ""  # why the last session could not use it (logged once)
        self.batching = False  # the bus task is in its turn: it calls `send` at the end
        self.in_turn = False  # the bus task is publishing (`send`)

    def publish(self, action: Publish) -> None:
        s = self.session
        if s is not None and s.number == action.session:
            s.outgoing.append(action)
            if not self.batching:
                s.more.set()  # the session's sender publishes it (no bus turn is coming)

    async def run_forever(self) -> None:
        import nats as nats_py

        cfg = self.cfg
        opts = nats_options(cfg.nats, name=f"edgert-{cfg.gateway_id}")
        retry = Reconnect(opts, cfg.backoff_min, cfg.backoff_max)
        while True:
            self.attempts += 1
            async with retry.attempt() as a:
                if a.nc is None:
                    self._down(a.error, first=self.connected or not self.error)
                    self.run.feed(self.run.fwd.unreachable(time.monotonic()))
                    self.run.changed()
                    continue
                retry.backoff = a.pause = cfg.backoff_min
                nc = a.nc
                self.connected, self.error = True, ""
                self.server = str(nc.connected_url.geturl()) if nc.connected_url else ""
                self.run.log.info("NATS: connected to %s", self.server)
                try:
                    await self._session(nc, a.closed)
                except* StreamError as eg:
                    # the server's configuration, not an outage: said once (status and log),
                    # looked at again every STREAM_RETRY seconds, points spooled meanwhile
                    reason = str(eg.exceptions[0])
                    if reason != self.stream_error:
                        self.run.log.error("%s; looking again every %gs", reason, STREAM_RETRY)
                    self.stream_error = reason
                    self.connected, self.error = False, reason
                    self.run.feed(self.run.fwd.unreachable(time.monotonic()))
                    a.pause = STREAM_RETRY
                except* (Down, OSError, TimeoutError, nats_py.errors.Error) as eg:
                    self._down(why(eg.exceptions[0], a.errors), first=True)
                finally:
                    self.connected = False
                    if self.session is not None:
                        self.session = None
                        self.run.feed(self.run.fwd.lost(time.monotonic()))
                    self.run.changed()

    async def commands_forever(self) -> None:
        """Commands, on a NATS connection of their own: a flood of requests queues in
        that connection's socket, never in front of the point session's acks and
        pings, so the points keep flowing and their session holds. Reconnects with
        the same backoff. Why it is down is kept in `commands_error` (status shows
        it) and logged once per reason while the point session is up (a whole
        outage the point session says); once more only after the connection held
        `COMMANDS_STABLE` seconds. A permissions error on its subscription closes
        it: an open connection that takes no commands is down."""
        import nats as nats_py

        cfg = self.cfg
        opts = nats_options(cfg.nats, name=f"edgert-{cfg.gateway_id}-commands")
        subject = f"{self.run.base}.cmd.>"
        retry = Reconnect(opts, cfg.backoff_min, cfg.backoff_max, subject)
        while True:
            self.commands_attempts += 1
            async with retry.attempt() as a:
                if a.nc is None:
                    self._commands_down(a.error)
                    continue
                since = time.monotonic()
                try:
                    await self._serve_commands(a.nc, a.closed, a.errors, subject)
                    reason = why(a.errors[-1], []) if a.errors else "the connection closed"
                except Refused as e:  # the server took the connection, not the subscription
                    reason = str(e)
                    a.pause = retry.backoff = min(cfg.backoff_max, retry.backoff * 2)
                except (OSError, TimeoutError, nats_py.errors.Error) as e:
                    reason = why(e, a.errors)
                else:
                    retry.backoff = cfg.backoff_min
                if time.monotonic() - since > COMMANDS_STABLE:
                    self.commands_logged = ""  # it worked a while: a new failure is news
                self._commands_down(reason)

    def _commands_down(self, reason: str) -> None:
        """The command connection is down for `reason`: keep it, say it once."""
        if self.connected and reason != self.commands_logged:  # else the points say it
            self.run.log.error("NATS commands: %s; retrying with backoff", reason)
            self.commands_logged = reason
        if reason != self.commands_error:
            self.commands_error = reason
            self.run.changed()

    def state(self) -> str:
        """The NATS link as `edgert status` and the status subject say it."""
        return nats_state(self.connected, self.error, self.commands_connected, self.commands_error)

    async def _serve_commands(
        self, nc: Any, closed: asyncio.Event, errors: list[BaseException], subject: str
    ) -> None:
        run = self.run
        commands = run.commands
        handling: set[asyncio.Task] = set()  # admitted requests, until they are answered

        arrived = asyncio.Event()  # a request came: the lag is worth measuring

        async def command(msg: Any) -> None:  # the subscription's own task calls it
            arrived.set()
            # Called for each queued request in turn without a pause, so the queue
            # drains as fast as it fills. Bounded: requests being handled, requests
            # queued behind them, and how far behind a flood the reading is (a flood
            # answered late is as good as unanswered): past any, "busy" undecoded.
            if commands.admit(queued=sub.pending_msgs):
                t = asyncio.create_task(commands.handle(nc, msg, run.log))
                handling.add(t)
                t.add_done_callback(handling.discard)
            else:
                await commands.refuse_busy(nc, msg)

        async def measure_lag() -> None:
            # a round trip to the server, every LAG_EVERY while requests come: its answer
            # comes back behind every request the server has sent and this connection
            # has not read yet (none at idle: a quiet gateway does not wake for it)
            while True:
                await arrived.wait()
                arrived.clear()
                commands.probe_out(time.monotonic())
                try:
                    await round_trip(nc, LAG_TIMEOUT)  # given up on: measured as that late
                except Exception:  # noqa: BLE001 - the connection is ending: `closed` says it
                    return
                commands.probe_back(time.monotonic())
                await asyncio.sleep(LAG_EVERY)

        sub = await nc.subscribe(subject, cb=command)
        lag = None
        try:
            for _ in range(2):  # the server has the subscription (a refusal may come behind one)
                if not await round_trip(nc, self.cfg.nats.ack_timeout):
                    raise TimeoutError("the server did not answer a PING")
            refused(errors, subject)  # ... or said no
            lag = asyncio.create_task(measure_lag())
            self.commands_connected, self.commands_error = True, ""
            run.changed()
            await closed.wait()  # closed, or refused the subscription (`on_error`)
            refused(errors, subject)
        finally:
            self.commands_connected = False
            commands.probe, commands.flooded = None, False
            run.changed()
            for t in [*handling, *([lag] if lag else [])]:
                t.cancel()

    def _down(self, reason: str, first: bool) -> None:
        changed = reason != self.error
        self.connected, self.error = False, reason
        # an embedded server still starting refuses the first attempts: not an error
        if not self.server and self.cfg.nats.embedded and self.attempts <= STARTING:
            if first or changed:
                self.run.log.info("NATS: %s (the server is starting?); retrying", reason)
            return
        if first or changed or reason != self.said:
            self.run.log.error("NATS: %s; retrying with backoff", reason)
            self.said = reason

    async def _session(self, nc: Any, closed: asyncio.Event) -> None:
        run = self.run
        js = None
        if self.cfg.nats.jetstream:
            opts: dict[str, Any] = {"timeout": self.cfg.nats.ack_timeout}
            if self.cfg.nats.jetstream_domain:
                opts["domain"] = self.cfg.nats.jetstream_domain
            js = nc.jetstream(**opts)
            try:
                done = await ensure_stream(js, self.cfg.nats, self.cfg.gateway_id, run.base)
            except StreamError as e:
                await run.status_once(nc, str(e))  # said on the status subject too
                raise
            if done != self.stream_note or self.stream_error:
                self.stream_note, self.stream_error = done, ""
                run.log.info("%s", done)
        sess = Session(nc, js, run.fwd.session + 1, nc.new_inbox())
        if js is None:

            async def marked(msg: Any) -> None:  # the subscription's own task calls it
                self._marked(sess, msg)

            await nc.subscribe(sess.inbox, cb=marked)
        else:
            acks = sess.pubacks
            assert acks is not None

            async def stored(msg: Any) -> None:  # the subscription's own task calls it
                self._js_acked(sess, acks, msg)

            await nc.subscribe(acks.subject, cb=stored)
        async with asyncio.TaskGroup() as tg:
            self.session = sess
            run.feed(run.fwd.connected(time.monotonic()))
            assert run.fwd.session == sess.number
            run.changed()
            tg.create_task(self._sender(sess))
            if js is not None:
                tg.create_task(self._js_acks(sess))
            else:
                tg.create_task(self._core_acks(sess))
            tg.create_task(run.statuses(nc))
            tg.create_task(run.twins.watch(nc))
            await closed.wait()
            raise Down(nc.last_error and repr(nc.last_error) or "connection closed")

    async def _sender(self, sess: Session) -> None:
        """Publish what other tasks than the bus's asked for (acks, spool reads)."""
        while True:
            if sess.failed is not None:
                raise sess.failed  # a publish in the bus task failed: end the session
            sess.more.clear()
            await self._send(sess)
            await sess.more.wait()

    async def send(self) -> None:
        """Publish what the forwarder asked for, now: the bus task calls this at the end
        of each turn, so a batch leaves in the turn it came in, without waiting for
        another task's turn of the loop."""
        s = self.session
        if s is None or not (s.outgoing or s.unmarked):
            return
        self.in_turn = True
        try:
            await self._send(s)
            now = time.monotonic()
            if s.unmarked and self._mark_now(s, now):
                await self._mark(s, now)  # behind what any task published so far
        except Exception as e:  # noqa: BLE001 - the session's own task ends it with this
            s.failed = e
            s.more.set()
        finally:
            self.in_turn = False

    def mark_due(self) -> float | None:
        """Core NATS: when the bus task's turn must come to send the marker behind
        messages published without one (monotonic seconds), or None."""
        s = self.session
        return s.unmarked_since + MARK_EVERY if s is not None and s.unmarked else None

    @staticmethod
    def _mark_now(sess: Session, now: float) -> bool:
        """Core NATS: does the marker behind the unmarked messages go now? (It goes when
        this says so: a spare one is taken from the bucket.)"""
        if (  # (the oldest unmarked message is never older than the last marker)
            now - sess.marked_at >= MARK_EVERY
            or sess.unmarked_points >= MARK_POINTS
            or sess.unmarked >= MARK_MESSAGES
        ):
            return True
        spare = min(float(MARK_SPARE), sess.spare + (now - sess.spare_at) / MARK_SPARE_EVERY)
        sess.spare_at = now
        if spare >= 1.0:  # a quiet bridge: this round's marker goes with it
            sess.spare = spare - 1.0
            return True
        sess.spare = spare
        return False

    async def _send(self, sess: Session) -> None:
        """Publish everything queued, in order, as rounds; on core NATS a marker behind
        each round says when NATS took it. One caller at a time (`sess.sending`): a
        second returns at once, as the first keeps going until nothing is queued."""
        if sess.sending:
            return
        sess.sending = True
        try:
            while (
                sess.outgoing
                and sess is self.session
                and sess.failed is None
                and not self._held(sess)
            ):
                await self._round(sess)
        finally:
            sess.sending = False

    async def _round(self, sess: Session) -> None:
        run = self.run
        enc = run.enc
        ctype = CONTENT_TYPES[enc]
        nc, acks = sess.nc, sess.pubacks
        n = 0
        # a session that ended while a publish waited (NATS's back-pressure) publishes no
        # more: the forwarder has taken back what it had in flight for the next one
        while (
            sess.outgoing and sess is self.session and sess.failed is None and not self._held(sess)
        ):
            a = sess.outgoing.popleft()
            subject = f"{run.base}.p.{a.node}"
            data, clock = run.clock_check(a)
            parts = messages(a.msg_id, data, enc, nc.max_payload)
            replies = None
            if acks is not None:  # JetStream: each message's ack comes to <inbox>.<n>
                if not acks.waiting:
                    sess.acked.set()  # the ack task times the wait from now
                replies = acks.publish(len(parts), a.points, time.monotonic())
            for i, (msg_id, payload) in enumerate(parts):
                headers = {"Content-Type": ctype, "Nats-Msg-Id": msg_id}
                if clock:
                    headers["Edgert-Clock"] = clock
                reply = replies[i] if replies is not None else ""
                await nc.publish(subject, payload, reply=reply, headers=headers)
            if acks is None:
                if not sess.unmarked:
                    sess.unmarked_since = time.monotonic()
                sess.unmarked += 1  # in the client's buffer: any marker from now is behind it
                sess.unmarked_points += a.points
                n += 1
        if n:
            now = time.monotonic()
            if self._mark_now(sess, now):
                await self._mark(sess, now)
            elif sess.unmarked == n and not self.in_turn:
                self.run.wake_at(sess.unmarked_since + MARK_EVERY)  # the bus task marks them

    @staticmethod
    async def _mark(sess: Session, now: float) -> None:
        """Core NATS: a marker to ourselves, behind the messages published so far on
        the same connection: when it comes back, the server has taken them (markers
        are pipelined)."""
        sess.mark += 1
        first = not sess.marks
        if first:
            sess.mark_progress = now
        sess.marks.append((sess.mark, sess.unmarked))
        sess.unmarked = sess.unmarked_points = 0
        sess.marked_at = now
        await sess.nc.publish(sess.inbox, b"%d" % sess.mark)
        if first:
            sess.acked.set()  # the ack task starts waiting for it

    @staticmethod
    def _held(sess: Session) -> bool:
        """JetStream: publish nothing more while the oldest message in flight awaits its
        ack and the session has had none yet, or has awaited it `ACK_LATE`, or once an
        ack came back as an error, until that ack comes (`_js_acked` wakes the sender)
        or the session ends.

        Order per subject depends on it. A message the stream did not take (dropped
        on the way to a stream leader that died, or refused while a new one is
        elected) is re-published only in the next session, once this one saw its
        ack missing (`ack_timeout`) or failed; a message published meanwhile and
        taken by a new leader would be stored before it, and stay there. So a
        session's first message goes alone (what piled up during an election would
        otherwise go out at once, the leader coming up in the middle of it), and
        later the pipeline stops within `ACK_LATE` of a lost message, far sooner
        than a new leader is elected (seconds)."""
        acks = sess.pubacks
        if acks is None or not acks.waiting:
            return False
        if acks.refused:
            return True
        return not sess.confirmed or time.monotonic() - acks.oldest_sent() >= ACK_LATE

    def _marked(self, sess: Session, msg: Any) -> None:
        """Core NATS: a marker came back, so the server took the messages before it."""
        sess.mark_progress = time.monotonic()
        try:
            back = int(msg.data)
        except ValueError:
            return
        n = 0
        while sess.marks and sess.marks[0][0] <= back:
            n += sess.marks.popleft()[1]
        if n and self.session is sess:
            run = self.run  # the acks it releases go now: markers are paced as acks were
            run.feed(run.fwd.published(sess.number, time.monotonic(), n), at_once=True)

    async def _core_acks(self, sess: Session) -> None:
        """Core NATS: markers must keep coming back (`_marked` takes them): none for
        `ack_timeout` while some are out ends the session."""
        timeout = self.cfg.nats.ack_timeout
        while True:
            if not sess.marks:
                sess.acked.clear()
                await sess.acked.wait()
                continue
            left = sess.mark_progress + timeout - time.monotonic()
            if left <= 0:
                raise AckTimeout(f"no marker back from NATS within {timeout:g}s")
            await asyncio.sleep(left)

    def _js_acked(self, sess: Session, acks: PubAcks, msg: Any) -> None:
        """JetStream: the stream's reply to a message (`edgert.bridge.pubacks`). The
        batches it releases are published, for the forwarder; their acks go to the
        drivers at once when `MARK_EVERY` has passed since acks last went so, or
        `MARK_POINTS` points or `MARK_MESSAGES` batches wait (acks are paced as core
        NATS markers are), else by the bridge's own gathering of acks. A refused
        message holds further publishes, and ends the session once every message
        before it has its ack."""
        n = acks.number(msg.subject)
        if not n:
            return
        error = ack_error(msg.data, msg.headers)
        now = time.monotonic()
        if error is not None:
            acks.refuse(n, error)
            released = points = 0
        else:
            released, points = acks.acked(n, now)
        if self.session is not sess:
            return
        if released:
            sess.confirmed = True
            sess.released += released
            sess.released_points += points
            at_once = (
                now - sess.released_at >= MARK_EVERY
                or sess.released_points >= MARK_POINTS
                or sess.released >= MARK_MESSAGES
            )
            if at_once:
                sess.released_at, sess.released_points, sess.released = now, 0, 0
            run = self.run
            run.feed(run.fwd.published(sess.number, now, released), at_once=at_once)
        if acks.failure is not None:
            sess.failed = acks.failure  # the session's sender raises it
            sess.more.set()
        elif released and sess.outgoing:
            sess.more.set()  # publishing may have been held behind that ack

    async def _js_acks(self, sess: Session) -> None:
        """JetStream: acks must keep coming (`_js_acked` takes them): the oldest message
        without one waiting `ack_timeout` ends the session."""
        acks = sess.pubacks
        assert acks is not None
        timeout = self.cfg.nats.ack_timeout
        while True:
            if not acks.waiting:
                sess.acked.clear()
                await sess.acked.wait()
                continue
            left = acks.progress + timeout - time.monotonic()
            if left <= 0:
                raise AckTimeout(f"no JetStream ack within {timeout:g}s")
            await asyncio.sleep(left)


class Refused(Exception):
    """The server refused the command subscription (permissions)."""


def refusal(e: BaseException, subject: str) -> bool:
    """Is `e` the server refusing our subscription to `subject` (permissions)?"""
    text = str(e).lower()
    return "permissions violation" in text and "subscription" in text and subject.lower() in text


def refused(errors: list[BaseException], subject: str) -> None:
    """Raise `Refused` if the server refused the subscription to `subject`."""
    for e in errors:
        if refusal(e, subject):
            raise Refused(
                f"the server refused the subscription to {subject} ({str(e).strip()}):"
                " check the NATS user's permissions"
            )


def why(e: BaseException, errors: list[BaseException]) -> str:
    """A one-line reason for a failed or lost connection."""
    if isinstance(e, AckTimeout):
        return str(e)  # connected, and the server said nothing of it: not unreachable
    cause = errors[-1] if errors else e
    text = str(cause) or type(cause).__name__
    if "Authorization Violation" in text or "authorization" in text.lower():
        return (
            f"the server refused our credentials ({text}): check [nats] user/password/token/creds"
        )
    if isinstance(cause, ConnectionRefusedError | OSError):
        return f"cannot reach the server: {text}"
    return f"{type(cause).__name__}: {text}"
