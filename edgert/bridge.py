"""The NATS bridge: points from the local bus up to NATS, commands from NATS down.

The bridge is an actor in its own process whose loop is asyncio. It binds the
bus ROUTER at `ipc://<runtime_dir>/bus.sock` and, per receive burst, decodes
the frames (a malformed one is counted, logged and skipped), keeps each batch
that is next in its sender's sequence (`bus.accepts`; a resent duplicate is
dropped), writes them to the spool in one transaction with each sender's last
seq, and only then acks the senders cumulatively (`["A", epoch, seq]`) and
shows the batches on the tail socket (`ipc://<runtime_dir>/tail.sock`, for
`edgert tail`).

From the spool, oldest first, it publishes one message per batch per node on
`<prefix>.<gateway>.p.<node>` (msgpack or JSON per `nats.encoding`, with
`Content-Type` and a `Nats-Msg-Id` that is the same on every resend), and removes
a batch from the spool only once NATS has it: after the JetStream ack (several in
flight), or after a flush round-trip without JetStream. While NATS is down or
refuses the credentials it logs why and retries with backoff; it never fails for
it, and drains the spool in order when NATS returns.

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
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq

from .actor import Actor, Context, Status, Stop
from .bus import BadFrame, accepts, bus_endpoint, decode_frame, encode_frame
from .config import NatsSection
from .point import BadBatch, Point, decode_batch
from .spool import Batch, Spool, Stored

__all__ = ["Bridge", "BridgeConfig", "tail_endpoint", "nats_options", "CONTENT_TYPES"]

log = logging.getLogger("edgert.bridge")

CONTENT_TYPES = {"msgpack": "application/msgpack", "json": "application/json"}
MAX_BURST = 2000  # frames per spool transaction at most
MERGE_MAX_POINTS = 5000  # a spool batch (one NATS message) joins at most this many points
MERGE_MAX_BYTES = 256 * 1024  # ... and this many bytes
BIG_BURST = 256 * 1024  # bytes of frames that are worth a commit at once (no waiting)
MAX_BURST_BYTES = 1024 * 1024  # and at most this much per transaction (keeps the loop lively)
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
        self.seqs: dict[str, int] = {}  # last seq per sender epoch, when there is no spool
        self.done: list[int] = []  # batch ids NATS has, to remove in the next commit
        self.last_commit = 0.0
        self.pending: dict[int, asyncio.Future[tuple[bool, str]]] = {}
        self.next_cmd = 0
        self.snapshot: dict[str, Any] = {}
        self.status_key: Any = None
        self.connected = False
        self.server = ""
        self.nats_error = ""
        self.connect_attempts = 0
        self.stats = {
            "points_in": 0,
            "points_out": 0,  # points published to NATS
            "batches_out": 0,
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
                    if self.spool is not None and self.done:
                        self.spool.commit(done=self.done)
                        self.done = []
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

    # -- the bus: frames in, spool, acks, tail --------------------------------------
    async def bus(self) -> None:
        router = self.router
        assert router is not None
        loop = asyncio.get_running_loop()
        fd = router.getsockopt(zmq.FD)
        while True:
            frames: list[list[bytes]] = []
            timeout = None
            if self.done:
                timeout = max(0.0, self.last_commit + self.cfg.commit_interval - time.monotonic())
            await _readable(loop, router, fd, timeout, self.poke)
            _drain(router, frames)
            if frames:  # group commit: gather frames until the commit interval has passed
                due = self.last_commit + self.cfg.commit_interval
                while (
                    len(frames) < MAX_BURST
                    and sum(len(f[-1]) for f in frames) < BIG_BURST
                    and (left := due - time.monotonic()) > 0
                ):
                    await _readable(loop, router, fd, left, self.poke)
                    _drain(router, frames)
            if frames or self.done:
                self._burst(frames)
            await asyncio.sleep(0)  # a busy bus must not starve the other tasks

    def _burst(self, frames: list[list[bytes]]) -> None:
        """Decode, spool in one transaction, then ack and tail."""
        spool = self.spool
        seqs: dict[str, int] = {}
        acks: dict[tuple[bytes, str], int] = {}
        merger = _Merger()
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
                last = seqs.get(epoch)
                if last is None:
                    last = spool.last_seq(epoch) if spool is not None else self.seqs.get(epoch, 0)
                if accepts(last, seq, first):
                    seqs[epoch] = last = seq
                    for node, n, packed in _by_node(points, data):
                        merger.add(epoch, seq, node, n, packed)
                    self.stats["points_in"] += len(points)
                elif seq <= last:
                    self.stats["duplicates"] += 1
                else:
                    self.stats["out_of_order"] += 1
                acks[(ident, epoch)] = last
            elif kind == "R":
                _, cmd_id, ok, error = frame
                fut = self.pending.get(cmd_id)
                if fut is not None and not fut.done():
                    fut.set_result((ok, error))
            else:
                self._bad(f"frame kind {kind!r} is not sent by actors")
        batches = merger.batches()
        if spool is not None:
            spool.commit(batches, seqs, self.done)
            self.done = []
        else:
            self.seqs.update(seqs)
        self.last_commit = time.monotonic()
        for (ident, epoch), seq in acks.items():
            try:
                self.router.send_multipart([ident, encode_frame("A", epoch, seq)], zmq.NOBLOCK)  # type: ignore[union-attr]
            except zmq.ZMQError:
                pass  # the sender is gone; it resends to the next bridge
        for b in batches:
            with contextlib.suppress(zmq.ZMQError):
                self.tail.send_multipart([b.node.encode() + b"\0", b.data], zmq.NOBLOCK)  # type: ignore[union-attr]
        if batches:
            self.more.set()
        self._report()
        self._check_status_change()

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
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._publish(nc, js))
            tg.create_task(self._statuses(nc))
            tg.create_task(self._commands(nc, sub, tg))
            await closed.wait()
            raise _Down(nc.last_error and repr(nc.last_error) or "connection closed")

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

    async def _publish(self, nc: Any, js: Any) -> None:
        """Publish from the spool in order; remove what NATS has acknowledged."""
        spool = self.spool
        assert spool is not None
        cfg = self.cfg
        max_payload = nc.max_payload
        in_flight: deque[tuple[Stored, list[asyncio.Future]]] = deque()
        skip = set(self.done)
        cursor = 0
        while True:
            rows: list[Stored] = []
            room = cfg.max_in_flight - len(in_flight)
            if room > 0:
                rows = [r for r in spool.read(cursor, room) if r.id not in skip]
                self.more.clear()
            for row in rows:
                futs = []
                for msg_id, payload in self._payloads(row, max_payload):
                    headers = {"Content-Type": CONTENT_TYPES[self.enc], "Nats-Msg-Id": msg_id}
                    subject = f"{self.base}.p.{row.node}"
                    if js is not None:
                        futs.append(await js.publish_async(subject, payload, headers=headers))
                    else:
                        await nc.publish(subject, payload, headers=headers)
                in_flight.append((row, futs))
                cursor = row.id
            if js is None:
                if in_flight:
                    # shielded: a flush cancelled by stop leaves nats-py a pong it cannot settle
                    await asyncio.shield(nc.flush(timeout=cfg.ack_timeout))
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

    async def _wait_more(self) -> None:
        await _wait(self.more, 1.0)

    def _published(self, row: Stored) -> None:
        self.done.append(row.id)
        self.stats["points_out"] += row.points
        self.stats["batches_out"] += 1

    def _payloads(self, row: Stored, max_payload: int) -> list[tuple[str, bytes]]:
        """The message(s) for one spooled batch: split in halves while too big for NATS."""
        if self.enc == "msgpack" and len(row.data) <= max_payload:
            return [(row.msg_id, row.data)]
        maps = msgpack.unpackb(row.data, raw=False)
        return _split(row.msg_id, maps, self.enc, max_payload)

    async def _statuses(self, nc: Any) -> None:
        headers = {"Content-Type": CONTENT_TYPES[self.enc]}
        while True:
            self.status_changed.clear()
            await nc.publish(f"{self.base}.status", self._encode(self._status()), headers=headers)
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

    def _encode(self, obj: Any) -> bytes:
        if self.enc == "json":
            return json.dumps(obj, separators=(",", ":")).encode()
        return msgpack.packb(obj, use_bin_type=True)

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
        loop.add_reader(fd, _settle, ready)
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


def _settle(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


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


class _Merger:
    """Joins the consecutive batches of one sender and node within a receive burst
    into one spool batch (one NATS message): fewer rows, pages and messages when
    drivers send many small batches. The message id names the seq range, so it is
    the same if the batches are ever sent again.
    """

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], list[Any]] = {}  # -> [first, last, n, parts, size]
        self._done: list[Batch] = []
        self._order: list[tuple[str, str]] = []

    def add(self, epoch: str, seq: int, node: str, n: int, packed: bytes) -> None:
        key = (epoch, node)
        body = _array_body(packed)
        g = self._open.get(key)
        if g is not None and g[2] + n <= MERGE_MAX_POINTS and g[4] + len(body) <= MERGE_MAX_BYTES:
            g[1], g[2], g[4] = seq, g[2] + n, g[4] + len(body)
            g[3].append(body)
            return
        if g is not None:
            self._close(key)
        self._open[key] = [seq, seq, n, [body], len(body)]
        self._order.append(key)

    def _close(self, key: tuple[str, str]) -> None:
        first, last, n, parts, _ = self._open.pop(key)
        epoch, node = key
        span = str(first) if first == last else f"{first}-{last}"
        data = _array_header(n) + b"".join(parts)
        self._done.append(Batch(node, f"{epoch}:{span}:{node}", n, data))

    def batches(self) -> list[Batch]:
        for key in self._order:
            if key in self._open:
                self._close(key)
        self._order = []
        out, self._done = self._done, []
        return out


def _array_body(packed: bytes) -> bytes:
    """The elements of a packed msgpack array, without its header."""
    b0 = packed[0]
    if 0x90 <= b0 <= 0x9F:
        return packed[1:]
    if b0 == 0xDC:
        return packed[3:]
    if b0 == 0xDD:
        return packed[5:]
    raise ValueError("not a msgpack array")


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _maps_part(frame: bytes) -> bytes:
    """The packed array of point maps inside a (valid) P frame, without repacking it."""
    u = msgpack.Unpacker(raw=False)
    u.feed(frame)
    u.read_array_header()
    for _ in range(4):
        u.skip()
    return frame[u.tell() :]


def _split(msg_id: str, maps: list[Any], enc: str, max_payload: int) -> list[tuple[str, bytes]]:
    data = (
        json.dumps(maps, separators=(",", ":")).encode()
        if enc == "json"
        else msgpack.packb(maps, use_bin_type=True)
    )
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
