"""The NATS bridge: points from the local bus up to NATS, commands from NATS down.

The bridge is an actor in its own process whose loop is asyncio. It binds the
bus ROUTER at `ipc://<runtime_dir>/bus.sock` and decodes each receive burst (a
malformed frame is counted, logged and skipped). It keeps each batch that is
next in its sender's sequence (`bus.accepts`; a resent duplicate is dropped),
shows it on the tail socket (`ipc://<runtime_dir>/tail.sock`, for `edgert
tail`), and splits it by node: one message per bus batch and node, published on
`<prefix>.<gateway>.p.<node>` (msgpack or JSON per `nats.encoding`, with
`Content-Type` and a `Nats-Msg-Id` of `<epoch>:<seq>:<node>`, the same on every
resend and on either route below, so JetStream drops duplicates).

A batch is safe once NATS has it (the JetStream ack, or a flush round trip
without JetStream) or once it is in the spool; the bridge acks each sender
cumulatively (`["A", epoch, seq]`) up to its last batch of which every earlier
one is safe. Two routes lead to NATS:

- the fast path: while NATS is connected and nothing older of the batch's node
  waits in the spool or in memory, the batch is published at once. If NATS
  takes it within `commit_interval`, it is never written to disk;
- the spool path: a batch not yet safe `commit_interval` after it came (NATS
  down or slow, a backlog of its node, too many in flight) is written to the
  spool, in one transaction per burst with each sender's last seq (once NATS
  has been down for a few seconds, one per `outage_commit_interval`: fewer,
  larger writes; a quick reconnect keeps the short interval). The spool is
  published oldest first, and a batch leaves it once NATS has it. A batch that
  NATS took after it was written is deleted in a later commit.

Per node, batches are published in the order they came, on both routes: a
batch waits while an older one of its node is still only in the spool. When the
fast path fails (a publish error, an ack timeout, a lost connection) the session
ends, and what it had in flight is spooled and resent in order. While NATS is
down or refuses the credentials the bridge logs why and retries with backoff; it
never fails for it, and drains the spool in order when NATS returns.

Commands: a request on `<prefix>.<gateway>.cmd.<node>` carries a batch of points
for that node; it goes to the driver that owns the node (`routes`) as
`["C", id, maps]`, and the driver's `["R", id, ok, error]` becomes the reply
`{"ok": true}` or `{"ok": false, "error": "..."}`. An unknown node, a driver that
is not running, a malformed payload or no answer within `command_timeout` gets
an error reply naming the problem.

The gateway's health (actors from the supervisor's `Status`, spool depth, drops)
goes to `<prefix>.<gateway>.status` every `status_interval` seconds and on change.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import random
import ssl
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq

from .actor import Actor, Context, Status, Stop, settle_future
from .bus import BadFrame, accepts, bus_endpoint, decode_frame, encode_frame
from .config import NatsSection
from .point import BadBatch, Point, decode_batch
from .spool import Batch, Spool, Stored

__all__ = ["Bridge", "BridgeConfig", "tail_endpoint", "nats_options", "CONTENT_TYPES"]

log = logging.getLogger("edgert.bridge")

CONTENT_TYPES = {"msgpack": "application/msgpack", "json": "application/json"}
MAX_BURST = 2000  # frames per spool transaction at most
KEEP_SENDERS = 1000  # sender epochs remembered in memory (the spool keeps their seqs too)
BIG_BURST = 256 * 1024  # bytes waiting unpublished that are worth a commit at once
MAX_BURST_BYTES = 1024 * 1024  # and at most this much per transaction (keeps the loop lively)
OUTAGE_AFTER = 3.0  # seconds without NATS before the spool commits at the outage pace
LOG_FIRST_BAD = 10  # malformed frames logged one by one, then every 1000th


def tail_endpoint(runtime_dir: str | Path) -> str:
    """Where the bridge publishes every accepted batch for `edgert tail`."""
    return f"ipc://{runtime_dir}/tail.sock"


@dataclass
class BridgeConfig:
    gateway_id: str
    runtime_dir: str
    data_dir: str
    nats: NatsSection
    routes: dict[str, str] = field(default_factory=dict)  # node -> driver actor name
    status_interval: float = 5.0  # seconds between status messages (and on change)
    command_timeout: float = 5.0  # seconds a driver has to answer a command
    commit_interval: float = 0.05  # at most one spool transaction per this (group commit)
    # while NATS is down everything goes to disk and nothing waits for it but the
    # drivers' acks: commit less often, so an outage writes less to the SD card
    outage_commit_interval: float = 1.0
    backoff_min: float = 0.2  # reconnect backoff to NATS
    backoff_max: float = 5.0
    max_in_flight: int = 64  # batches published and not yet acknowledged by NATS
    ack_timeout: float = 5.0  # seconds to wait for a JetStream ack or a flush


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


class _Down(Exception):
    """The NATS connection of this session is gone."""


class Bridge(Actor):
    """Forwards points from the bus to NATS through the spool, and commands back."""

    Config = BridgeConfig
    uses_bus = False
    wants_status = True

    def run(self, ctx: Context) -> None:
        asyncio.run(_Run(ctx).main())


class _Run:
    """The state of one run of the bridge, owned by its asyncio loop."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.cfg: BridgeConfig = ctx.config
        n = self.cfg.nats
        self.enc = n.encoding
        self.base = f"{n.prefix}.{self.cfg.gateway_id}"
        self.log = ctx.log
        self.spool: Spool | None = None
        self.router: zmq.Socket | None = None
        self.tail: zmq.Socket | None = None
        self.more = asyncio.Event()  # new batches in the spool
        self.status_changed = asyncio.Event()
        self.poke = asyncio.Event()  # set after sending on the ROUTER from outside the bus task
        self.senders: dict[str, _Sender] = {}  # by epoch
        self.acks_due: set[str] = set()  # epochs whose sender is owed an ack
        self.fresh: dict[int, _Entry] = {}  # accepted, not yet safe, not in the spool: by key
        self.unsent: deque[_Entry] = deque()  # fresh and not published in this session
        self.unsent_bytes = 0  # their data, kept as they come and go (checked every loop turn)
        self.next_key = 0
        self.session: _Session | None = None  # while NATS is connected
        self.backlog: Counter[str] = Counter()  # spool batches per node not yet sent this session
        self.sent_rows: set[int] = set()  # spool ids published from memory, not yet removed
        self.cursor = 0  # the spool is published up to this id in this session
        self.done: list[int] = []  # batch ids NATS has, to remove in the next commit
        self.last_commit = 0.0
        self.pending: dict[int, asyncio.Future[tuple[bool, str]]] = {}
        self.next_cmd = 0
        self.snapshot: dict[str, Any] = {}
        self.status_key: Any = None
        self.connected = False
        self.up_last = time.monotonic()  # when NATS was last seen connected
        self.server = ""
        self.nats_error = ""
        self.connect_attempts = 0
        self.stats = {
            "points_in": 0,
            "points_out": 0,  # points published to NATS
            "batches_out": 0,
            "fast_batches": 0,  # of those, batches NATS took straight from memory
            "bad_frames": 0,
            "duplicates": 0,
            "out_of_order": 0,
            "commands": 0,
            "command_errors": 0,
        }

    # -- the whole run -------------------------------------------------------------
    async def main(self) -> None:
        cfg = self.cfg
        zctx = zmq.Context(1)
        try:
            with contextlib.ExitStack() as stack:
                if cfg.nats.enabled:
                    self.spool = stack.enter_context(
                        Spool(Path(cfg.data_dir) / "spool.db", cfg.nats.spool_max_bytes)
                    )
                self.router = stack.enter_context(self._socket(zctx, zmq.ROUTER))
                self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
                self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
                self.router.setsockopt(zmq.RCVHWM, 1000)
                self.router.bind(bus_endpoint(cfg.runtime_dir))
                self.tail = stack.enter_context(self._socket(zctx, zmq.PUB))
                self.tail.setsockopt(zmq.SNDHWM, 10_000)
                self.tail.bind(tail_endpoint(cfg.runtime_dir))
                self._report()
                try:
                    async with asyncio.TaskGroup() as tg:
                        tasks = [tg.create_task(self.bus())]
                        if cfg.nats.enabled:
                            tasks.append(tg.create_task(self.nats()))
                        await self.inbox()
                        for t in tasks:
                            t.cancel()
                finally:
                    for fut in self.pending.values():
                        fut.cancel()
                    if self.spool is not None and (self.fresh or self.done):
                        self._commit()  # what came and is not safe yet is kept
                        self._send_acks()
        finally:
            zctx.term()

    @staticmethod
    @contextlib.contextmanager
    def _socket(zctx: zmq.Context, kind: int) -> Iterator[zmq.Socket]:
        sock = zctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            yield sock
        finally:
            sock.close(0)

    async def inbox(self) -> None:
        """Stop and Status from the supervisor; returns on Stop."""
        while True:
            msg = await self.ctx.areceive()
            match msg:
                case Stop():
                    return
                case Status():
                    self.snapshot = msg.snapshot
                    self._check_status_change()

    def _report(self) -> None:
        s: dict[str, Any] = dict(self.stats)
        if self.spool is not None:
            s.update(self.spool.stats())
            s["buffered"] = self.spool.points
            s["dropped"] = self.spool.dropped_points
        s["nats"] = "connected" if self.connected else f"down: {self.nats_error or 'connecting'}"
        s["nats_connect_attempts"] = self.connect_attempts
        self.ctx.report(**s)

    # -- the bus: frames in, fast path, spool, acks, tail ---------------------------
    async def bus(self) -> None:
        router = self.router
        assert router is not None
        loop = asyncio.get_running_loop()
        fd = router.getsockopt(zmq.FD)
        while True:
            await _readable(loop, router, fd, self._commit_wait(), self.poke)
            frames: list[list[bytes]] = []
            _drain(router, frames)
            self._receive(frames)
            if self.unsent and self.session is not None:
                await self._fast(self.session)
            self._settle(bool(frames))
            await asyncio.sleep(0)  # a busy bus must not starve the other tasks

    def _burst(self, frames: list[list[bytes]]) -> None:
        """One burst without NATS: take the frames, spool what is due, send the acks owed."""
        self._receive(frames)
        self._settle(bool(frames))

    def _receive(self, frames: list[list[bytes]]) -> None:
        """Decode and take what is next per sender (a malformed frame is counted, skipped)."""
        for parts in frames:
            if len(parts) != 2:
                self._bad(f"a message of {len(parts)} parts (expected one frame)")
                continue
            ident, data = parts
            try:
                frame = decode_frame(data)
            except BadFrame as e:
                self._bad(str(e))
                continue
            kind = frame[0]
            if kind == "P":
                _, epoch, seq, first, points = frame
                self._take(ident, epoch, seq, first, points, data)
            elif kind == "R":
                _, cmd_id, ok, error = frame
                fut = self.pending.get(cmd_id)
                if fut is not None and not fut.done():
                    fut.set_result((ok, error))
            else:
                self._bad(f"frame kind {kind!r} is not sent by actors")

    def _settle(self, report: bool) -> None:
        """Spool what is due, send the acks owed."""
        if self._commit_due():
            self._commit()
        self._send_acks()
        if report:
            self._report()
            self._check_status_change()

    def _take(
        self, ident: bytes, epoch: str, seq: int, first: int, points: list[Point], data: bytes
    ) -> None:
        """One P frame: keep it when it is next from its sender, else count it; ack either way."""
        sender = self._sender(ident, epoch)
        self.acks_due.add(epoch)
        if not accepts(sender.accepted, seq, first):
            self.stats["duplicates" if seq <= sender.accepted else "out_of_order"] += 1
            return
        sender.accepted = seq
        sender.dirty = True
        self.stats["points_in"] += len(points)
        parts = _by_node(points, data)
        slot = [seq, len(parts)]
        sender.open.append(slot)
        now = time.monotonic()
        for node, n, packed in parts:
            batch = Batch(node, f"{epoch}:{seq}:{node}", n, packed)
            with contextlib.suppress(zmq.ZMQError):
                self.tail.send_multipart([node.encode() + b"\0", packed], zmq.NOBLOCK)  # type: ignore[union-attr]
            entry = _Entry(self.next_key, batch, epoch, slot, now)
            self.next_key += 1
            if self.spool is None:
                self._safe(entry)  # no NATS configured: nothing to keep
                continue
            self.fresh[entry.key] = entry
            self.unsent.append(entry)
            self.unsent_bytes += len(batch.data)
        sender.advance()

    def _sender(self, ident: bytes, epoch: str) -> _Sender:
        sender = self.senders.get(epoch)
        if sender is None:
            last = self.spool.last_seq(epoch) if self.spool is not None else 0
            sender = self.senders[epoch] = _Sender(ident, last, last)
            if len(self.senders) > KEEP_SENDERS:
                self._forget_senders()
        sender.ident = ident
        return sender

    def _forget_senders(self) -> None:
        """Drop the oldest idle senders beyond KEEP_SENDERS (their seqs are in the spool)."""
        for epoch in list(self.senders)[: len(self.senders) - KEEP_SENDERS]:
            if not self.senders[epoch].open and not self.senders[epoch].dirty:
                del self.senders[epoch]

    def _safe(self, entry: _Entry) -> None:
        """`entry` is in NATS or in the spool: its sender may be acked further."""
        if entry.safe:
            return
        entry.safe = True
        entry.slot[1] -= 1
        sender = self.senders.get(entry.epoch)
        if sender is not None and sender.advance():
            self.acks_due.add(entry.epoch)

    def _send_acks(self) -> None:
        for epoch in self.acks_due:
            sender = self.senders.get(epoch)
            if sender is None:
                continue
            try:
                self.router.send_multipart(  # type: ignore[union-attr]
                    [sender.ident, encode_frame("A", epoch, sender.acked)], zmq.NOBLOCK
                )
            except zmq.ZMQError:
                pass  # the sender is gone; it resends to the next bridge
        self.acks_due.clear()

    # -- the spool path --------------------------------------------------------------
    def _commit_wait(self) -> float | None:
        """Seconds until the next spool commit is due (None: nothing to commit)."""
        if self.fresh:
            oldest = next(iter(self.fresh.values())).came
        elif self.done:
            oldest = self.last_commit
        else:
            return None
        if len(self.unsent) >= 16 and self.unsent_bytes >= BIG_BURST:  # many add up to a burst
            return 0.0
        interval = self.cfg.commit_interval
        if not self.connected and time.monotonic() - self.up_last > OUTAGE_AFTER:
            interval = self.cfg.outage_commit_interval  # a real outage, not a reconnect
        return max(0.0, oldest + interval - time.monotonic())

    def _commit_due(self) -> bool:
        wait = self._commit_wait()
        return wait is not None and wait <= 0 and self.spool is not None

    def _set_unsent(self, entries: deque[_Entry]) -> None:
        self.unsent = entries
        self.unsent_bytes = sum(len(e.batch.data) for e in entries)

    def _commit(self) -> None:
        """Write every batch not yet safe to the spool with the senders' seqs; all are safe after."""
        spool = self.spool
        assert spool is not None
        entries = list(self.fresh.values())
        seqs = {e: s.accepted for e, s in self.senders.items() if s.dirty}
        dropped = spool.dropped_batches
        ids = spool.commit_rows([e.batch for e in entries], seqs, self.done)
        self.sent_rows.difference_update(self.done)
        self.done = []
        self.last_commit = time.monotonic()
        for s in self.senders.values():
            s.dirty = False
        self.fresh.clear()
        self._set_unsent(deque())
        for entry, row in zip(entries, ids, strict=True):
            entry.row = row or 0
            if row is not None:
                if entry.sent:
                    self.sent_rows.add(row)  # in flight: removed from the spool once NATS has it
                else:
                    self.backlog[entry.batch.node] += 1
            self._safe(entry)
        if spool.dropped_batches != dropped and self.session is not None:
            self._count_backlog()  # the cap dropped old batches: count again
        if entries:
            self.more.set()

    def _count_backlog(self) -> None:
        """Spool batches per node not yet published in this session."""
        assert self.spool is not None
        skip = self.sent_rows.union(self.done)
        self.backlog = Counter(
            node for rid, node in self.spool.nodes_after(self.cursor) if rid not in skip
        )

    def _bad(self, why: str) -> None:
        self.stats["bad_frames"] += 1
        n = self.stats["bad_frames"]
        if n <= LOG_FIRST_BAD or n % 1000 == 0:
            self.log.warning("bus: dropped a malformed frame (%d so far): %s", n, why)

    # -- NATS: connect, publish, status, commands ----------------------------------
    async def nats(self) -> None:
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

            self.connect_attempts += 1
            try:
                nc = await nats_py.connect(**opts, error_cb=on_error, closed_cb=on_closed)
            except Exception as e:  # noqa: BLE001 - NATS down or refusing: retry, never fail
                self._nats_down(_why(e, errors), first=self.connected or not self.nats_error)
                self._report()
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(cfg.backoff_max, backoff * 2)
                continue
            started = time.monotonic()
            self.connected, self.nats_error = True, ""
            self.server = str(nc.connected_url.geturl()) if nc.connected_url else ""
            self.log.info("NATS: connected to %s", self.server)
            self._report()
            self._check_status_change()
            try:
                await self._session(nc, closed)
            except* (_Down, OSError, TimeoutError, nats_py.errors.Error) as eg:
                self._nats_down(_why(eg.exceptions[0], errors), first=True)
            finally:
                self.connected = False
                self.up_last = time.monotonic()
                with contextlib.suppress(Exception):
                    await nc.close()
                self._report()
                self._check_status_change()
            if time.monotonic() - started > 10 * cfg.backoff_max:
                backoff = cfg.backoff_min  # a session that lasted resets the backoff
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(cfg.backoff_max, backoff * 2)

    def _nats_down(self, why: str, first: bool) -> None:
        changed = why != self.nats_error
        self.connected, self.nats_error = False, why
        if first or changed:
            self.log.error("NATS: %s; retrying with backoff", why)

    async def _session(self, nc: Any, closed: asyncio.Event) -> None:
        js = None
        if self.cfg.nats.jetstream:
            js = nc.jetstream(timeout=self.cfg.ack_timeout)
            await self._ensure_stream(js)
        sub = await nc.subscribe(f"{self.base}.cmd.>")
        sess = _Session(nc, js)
        self._begin(sess)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._publish(sess))
                tg.create_task(self._fast_acks(sess))
                tg.create_task(self._statuses(nc))
                tg.create_task(self._commands(nc, sub, tg))
                await closed.wait()
                raise _Down(nc.last_error and repr(nc.last_error) or "connection closed")
        finally:
            self._fall_back(sess)

    def _begin(self, sess: _Session) -> None:
        """A new session publishes the whole spool first: count its batches per node."""
        if self.fresh or self.done:
            self._commit()  # everything not yet safe joins the spool, in order
        self.cursor = 0
        self.sent_rows.clear()
        self._count_backlog()
        self.session = sess
        self.poke.set()  # the bus task sends the acks owed and resumes the fast path

    def _fall_back(self, sess: _Session) -> None:
        """The session ended: what it had in flight from memory goes by the spool path."""
        if self.session is sess:
            self.session = None
        for _, futs in sess.flight:
            for f in futs:
                f.cancel()
        sess.flight.clear()
        for entry in self.fresh.values():
            entry.sent = False
        self._set_unsent(deque(self.fresh.values()))
        self.sent_rows.clear()  # spooled, not acknowledged: sent again in the next session

    async def _ensure_stream(self, js: Any) -> None:
        import nats as nats_py

        n = self.cfg.nats
        subjects = [f"{self.base}.p.>", f"{self.base}.status"]
        try:
            await js.stream_info(n.stream)
            return
        except nats_py.js.errors.NotFoundError:
            pass
        await js.add_stream(name=n.stream, subjects=subjects)
        self.log.info("JetStream: created stream %s for %s", n.stream, ", ".join(subjects))

    # -- the fast path ---------------------------------------------------------------
    async def _fast(self, sess: _Session) -> None:
        """Publish the batches in memory now, in order per node, unless their node has
        older batches in the spool not yet sent or in-flight room is short."""
        room = self.cfg.max_in_flight - len(sess.flight)
        blocked = {node for node, n in self.backlog.items() if n > 0}
        keep: deque[_Entry] = deque()
        for entry in list(self.unsent):
            node = entry.batch.node
            if room <= 0 or node in blocked:
                blocked.add(node)  # nothing newer of this node may pass it
                keep.append(entry)
                continue
            try:
                futs = await self._send(sess, entry.batch)
            except Exception as e:  # noqa: BLE001 - the session ends; the spool path takes over
                sess.fail(e)
                return
            if self.session is not sess:
                return  # the session ended meanwhile; _fall_back has taken everything back
            entry.sent = True
            sess.flight.append((entry, futs))
            sess.sent.set()
            room -= 1
        self._set_unsent(keep)

    async def _send(self, sess: _Session, batch: Batch | Stored) -> list[asyncio.Future]:
        """Publish one batch (split while too big); the JetStream ack futures, if any."""
        futs = []
        subject = f"{self.base}.p.{batch.node}"
        for msg_id, payload in self._payloads(batch, sess.nc.max_payload):
            headers = {"Content-Type": CONTENT_TYPES[self.enc], "Nats-Msg-Id": msg_id}
            if sess.js is not None:
                futs.append(await sess.js.publish_async(subject, payload, headers=headers))
            else:
                await sess.nc.publish(subject, payload, headers=headers)
        return futs

    async def _fast_acks(self, sess: _Session) -> None:
        """Wait for NATS to take what the fast path sent, oldest first; a failure ends
        the session (the batches then go by the spool path)."""
        cfg = self.cfg
        while True:
            if sess.error is not None:
                raise _Down(f"publish failed: {sess.error!r}")
            if not sess.flight:
                sess.sent.clear()
                await _wait(sess.sent, 1.0)
                continue
            if sess.js is None:
                n = len(sess.flight)
                # shielded: a flush cancelled by stop leaves nats-py a pong it cannot settle
                await asyncio.shield(sess.nc.flush(timeout=cfg.ack_timeout))
                took = [sess.flight.popleft()[0] for _ in range(n)]
            else:
                futs = sess.flight[0][1]
                if futs and not all(f.done() for f in futs):
                    finished, _ = await asyncio.wait(futs, timeout=cfg.ack_timeout)
                    if len(finished) < len(futs):
                        raise TimeoutError(f"no JetStream ack within {cfg.ack_timeout:g}s")
                took = []
                while sess.flight and all(f.done() for f in sess.flight[0][1]):
                    entry, futs = sess.flight.popleft()
                    for f in futs:
                        f.result()  # a JetStream error (no stream, ...) ends the session
                    took.append(entry)
            for entry in took:
                self._nats_took(entry)
            self.poke.set()  # the bus task sends the acks

    def _nats_took(self, entry: _Entry) -> None:
        self.stats["points_out"] += entry.batch.points
        self.stats["batches_out"] += 1
        self.stats["fast_batches"] += 1
        if entry.row:
            self.done.append(entry.row)  # written meanwhile: removed in the next commit
        self.fresh.pop(entry.key, None)
        self._safe(entry)

    # -- the spool path to NATS --------------------------------------------------------
    async def _publish(self, sess: _Session) -> None:
        """Publish from the spool in order; remove what NATS has acknowledged."""
        spool = self.spool
        assert spool is not None
        cfg = self.cfg
        in_flight: deque[tuple[Stored, list[asyncio.Future]]] = deque()
        while True:
            rows: list[Stored] = []
            room = cfg.max_in_flight - len(in_flight)
            if room > 0:
                self.more.clear()
                rows = spool.read(self.cursor, room)
            for row in rows:
                self.cursor = row.id
                if row.id in self.sent_rows:
                    continue  # published from memory, written while in flight
                futs = await self._send(sess, row)
                in_flight.append((row, futs))
                self._backlog_sent(row.node)
            if sess.js is None:
                if in_flight:
                    # shielded: a flush cancelled by stop leaves nats-py a pong it cannot settle
                    await asyncio.shield(sess.nc.flush(timeout=cfg.ack_timeout))
                    while in_flight:
                        self._published(in_flight.popleft()[0])
                elif not rows:
                    await self._wait_more()
                continue
            while in_flight and all(f.done() for f in in_flight[0][1]):
                row, futs = in_flight.popleft()
                for f in futs:
                    f.result()  # a JetStream error (no stream, ...) ends the session
                self._published(row)
            if rows and len(in_flight) < cfg.max_in_flight:
                continue
            if in_flight:
                head = in_flight[0][1]
                waits = [*head]
                more = None
                if len(in_flight) < cfg.max_in_flight:
                    more = asyncio.ensure_future(self.more.wait())
                    waits.append(more)
                finished, _ = await asyncio.wait(
                    waits, timeout=cfg.ack_timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if more is not None:
                    more.cancel()
                if not finished:
                    raise TimeoutError(f"no JetStream ack within {cfg.ack_timeout:g}s")
            else:
                await self._wait_more()

    def _backlog_sent(self, node: str) -> None:
        n = self.backlog[node] - 1
        if n > 0:
            self.backlog[node] = n
        else:
            del self.backlog[node]
            self.poke.set()  # the node's newer batches in memory may go now

    async def _wait_more(self) -> None:
        await _wait(self.more, 1.0)

    def _published(self, row: Stored) -> None:
        self.done.append(row.id)
        self.stats["points_out"] += row.points
        self.stats["batches_out"] += 1

    def _payloads(self, batch: Batch | Stored, max_payload: int) -> list[tuple[str, bytes]]:
        """The message(s) for one batch: split in halves while too big for NATS."""
        if self.enc == "msgpack" and len(batch.data) <= max_payload:
            return [(batch.msg_id, batch.data)]
        maps = msgpack.unpackb(batch.data, raw=False)
        return _split(batch.msg_id, maps, self.enc, max_payload)

    async def _statuses(self, nc: Any) -> None:
        headers = {"Content-Type": CONTENT_TYPES[self.enc]}
        while True:
            self.status_changed.clear()
            await nc.publish(
                f"{self.base}.status", _encode(self._status(), self.enc), headers=headers
            )
            await _wait(self.status_changed, self.cfg.status_interval)

    def _status(self) -> dict[str, Any]:
        spool = self.spool.stats() if self.spool is not None else {}
        actors = []
        for a in self.snapshot.get("actors", []):
            err = (a.get("last_error") or "").strip().splitlines()
            actors.append(
                {
                    "name": a.get("name"),
                    "kind": a.get("kind"),
                    "pid": a.get("pid"),
                    "state": a.get("state"),
                    "restarts": a.get("restarts"),
                    "last_error": err[-1] if err else "",
                    "uptime": a.get("uptime"),
                    "points_out": a.get("points_out"),
                    "buffered": a.get("buffered"),
                    "dropped": a.get("dropped"),
                }
            )
        return {
            "gateway": self.cfg.gateway_id,
            "time": time.time_ns(),
            "nats": {"connected": self.connected, "server": self.server},
            "spool": {
                "points": spool.get("spool_points", 0),
                "batches": spool.get("spool_batches", 0),
                "bytes": spool.get("spool_bytes", 0),
                "dropped": spool.get("spool_dropped", 0),
            },
            "bus": {k: self.stats[k] for k in ("bad_frames", "duplicates", "out_of_order")},
            "actors": actors,
        }

    def _check_status_change(self) -> None:
        key = (
            tuple(
                (a.get("name"), a.get("state"), a.get("pid"), a.get("restarts"))
                for a in self.snapshot.get("actors", [])
            ),
            self.spool.dropped_points if self.spool is not None else 0,
            self.connected,
        )
        if key != self.status_key:
            self.status_key = key
            self.status_changed.set()

    # -- commands ------------------------------------------------------------------
    async def _commands(self, nc: Any, sub: Any, tg: asyncio.TaskGroup) -> None:
        async for msg in sub.messages:
            tg.create_task(self._command(nc, msg))

    async def _command(self, nc: Any, msg: Any) -> None:
        self.stats["commands"] += 1
        error = await self._apply(msg)
        if error:
            self.stats["command_errors"] += 1
            self.log.warning("command on %s refused: %s", msg.subject, error)
        if not msg.reply:
            return
        reply = {"ok": True} if error is None else {"ok": False, "error": error}
        enc = _request_encoding(msg, self.enc)
        data = (
            json.dumps(reply).encode() if enc == "json" else msgpack.packb(reply, use_bin_type=True)
        )
        await nc.publish(msg.reply, data, headers={"Content-Type": CONTENT_TYPES[enc]})

    async def _apply(self, msg: Any) -> str | None:
        """Send a command to the driver that owns its node; its answer, or what is wrong."""
        node = msg.subject[len(self.base) + len(".cmd.") :]
        if not msg.reply:
            return "a command must be a request (it has no reply subject)"
        driver = self.cfg.routes.get(node)
        if driver is None:
            known = ", ".join(sorted(self.cfg.routes)) or "none"
            return f"unknown node {node!r} (nodes of this gateway: {known})"
        enc = _request_encoding(msg, self.enc)
        try:
            points = decode_batch(msg.data, enc)
        except BadBatch as e:
            return f"malformed command payload ({enc}): {e}"
        if not points:
            return "the command holds no points"
        for i, p in enumerate(points):
            if p.node != node:
                return f"point {i} is for node {p.node!r}, but the subject names node {node!r}"
        self.next_cmd += 1
        cmd_id = self.next_cmd
        frame = encode_frame("C", cmd_id, [p.to_map() for p in points])
        try:
            self.router.send_multipart([driver.encode(), frame], zmq.NOBLOCK)  # type: ignore[union-attr]
        except zmq.ZMQError as e:
            self.poke.set()
            if e.errno == errno.EHOSTUNREACH:
                return f"driver {driver!r} of node {node!r} is not running"
            return f"driver {driver!r} of node {node!r} cannot take commands now: {e}"
        self.poke.set()
        fut: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()
        self.pending[cmd_id] = fut
        try:
            async with asyncio.timeout(self.cfg.command_timeout):
                ok, error = await fut
        except TimeoutError:
            return f"driver {driver!r} did not answer within {self.cfg.command_timeout:g}s"
        finally:
            self.pending.pop(cmd_id, None)
        return None if ok else (error or f"driver {driver!r} refused the command")


# --- helpers ------------------------------------------------------------------------


async def _readable(
    loop: asyncio.AbstractEventLoop,
    sock: zmq.Socket,
    fd: int,
    timeout: float | None,
    wake: asyncio.Event,
) -> None:
    """Wait until `sock` has a message, `wake` is set, or `timeout` passed.

    The zmq FD only signals that the socket's state may have changed, and any
    send on the socket may consume that signal: so the socket's EVENTS are
    checked before each wait, and whoever sends on the socket sets `wake`.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
        left = None if deadline is None else deadline - time.monotonic()
        if (left is not None and left <= 0) or wake.is_set():
            break
        ready = loop.create_future()
        loop.add_reader(fd, settle_future, ready)
        waker = asyncio.ensure_future(wake.wait())
        try:
            await asyncio.wait([ready, waker], timeout=left, return_when=asyncio.FIRST_COMPLETED)
        finally:
            loop.remove_reader(fd)
            waker.cancel()
    wake.clear()


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    """Wait for `event` up to `timeout`; False on timeout. (Not asyncio.wait_for,
    which in Python 3.11 can swallow a cancellation that races the event.)"""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
        return True
    except TimeoutError:
        return False


def _drain(sock: zmq.Socket, into: list[list[bytes]]) -> None:
    size = sum(len(f[-1]) for f in into)
    while len(into) < MAX_BURST and size < MAX_BURST_BYTES:
        try:
            into.append(sock.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            return
        size += len(into[-1][-1])


def _by_node(points: list[Point], frame: bytes) -> list[tuple[str, int, bytes]]:
    """(node, points, packed maps) for each node of a bus batch."""
    nodes: dict[str, list[Point]] = {}
    for p in points:
        nodes.setdefault(p.node, []).append(p)
    if len(nodes) == 1:
        return [(points[0].node, len(points), _maps_part(frame))]
    return [
        (node, len(pts), msgpack.packb([p.to_map() for p in pts], use_bin_type=True))
        for node, pts in nodes.items()
    ]


@dataclass(slots=True, eq=False)
class _Entry:
    """A batch of one node from one bus batch, in memory until it is safe."""

    key: int
    batch: Batch
    epoch: str
    slot: list[int]  # [seq, batches of that bus batch not yet safe], shared with its sender
    came: float  # monotonic time it was accepted
    sent: bool = False  # published in the current session, NATS has not acked it yet
    safe: bool = False  # in NATS or in the spool
    row: int = 0  # its spool id once written (0: never, or dropped by the cap)


@dataclass(slots=True, eq=False)
class _Sender:
    """One sender epoch: the last seq accepted, the last acked, and the seqs between."""

    ident: bytes
    accepted: int
    acked: int
    open: deque[list[int]] = field(default_factory=deque)  # slots of accepted, unacked seqs
    dirty: bool = False  # accepted something since the last spool commit

    def advance(self) -> bool:
        """Move `acked` over every leading seq whose batches are all safe; True if it moved."""
        moved = False
        while self.open and self.open[0][1] <= 0:
            self.acked = self.open.popleft()[0]
            moved = True
        return moved


@dataclass(eq=False)
class _Session:
    """One NATS connection, and what the fast path has in flight on it (oldest first)."""

    nc: Any
    js: Any
    flight: deque[tuple[_Entry, list[asyncio.Future]]] = field(default_factory=deque)
    sent: asyncio.Event = field(default_factory=asyncio.Event)
    error: BaseException | None = None

    def fail(self, e: BaseException) -> None:
        self.error = e
        self.sent.set()


def _maps_part(frame: bytes) -> bytes:
    """The packed array of point maps inside a (valid) P frame, without repacking it."""
    u = msgpack.Unpacker(raw=False)
    u.feed(frame)
    u.read_array_header()
    for _ in range(4):
        u.skip()
    return frame[u.tell() :]


def _encode(obj: Any, enc: str) -> bytes:
    """A payload for NATS per `nats.encoding` (compact JSON, or msgpack)."""
    if enc == "json":
        return json.dumps(obj, separators=(",", ":")).encode()
    return msgpack.packb(obj, use_bin_type=True)


def _split(msg_id: str, maps: list[Any], enc: str, max_payload: int) -> list[tuple[str, bytes]]:
    data = _encode(maps, enc)
    if len(data) <= max_payload or len(maps) <= 1:
        return [(msg_id, data)]
    half = len(maps) // 2
    return _split(f"{msg_id}.0", maps[:half], enc, max_payload) + _split(
        f"{msg_id}.1", maps[half:], enc, max_payload
    )


def _request_encoding(msg: Any, default: str) -> str:
    ctype = (msg.headers or {}).get("Content-Type", "")
    for enc, name in CONTENT_TYPES.items():
        if ctype == name:
            return enc
    return default


def _why(e: BaseException, errors: list[BaseException]) -> str:
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
