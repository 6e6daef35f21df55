"""The bridge actor: one asyncio loop around the forwarder.

The bridge runs in its own process. Its loop owns every piece of state; the
decisions are the forwarder's (`edgert.bridge.forwarder`), and this module only
carries out what it returns:

- the bus: binds the ROUTER at `ipc://<runtime_dir>/bus.sock` (frames over
  `BUS_MAX_BYTES` are never read: ZeroMQ drops the sender's connection,
  counted as `bus_disconnects`), reads bursts of
  frames, checks them (`edgert.bus.decode_points`: split by node on the raw
  maps, a malformed frame refused whole, counted and logged), shows accepted
  parts on the tail socket (`ipc://<runtime_dir>/tail.sock`, for
  `edgert tail`), feeds the forwarder, publishes what it asks for in the same
  turn, lets the NATS client write it, and only then sends the acks it owes,
  gathered for up to `ACK_DELAY` (or until `ACK_POINTS` points are owed): a
  driver does not wait for an ack to send its next batch (`edgert.bus.outbox`),
  so an ack only returns credit, and one ack every few batches costs the
  bridge and the drivers fewer wake-ups (a quiet sender's ack goes at once: a
  driver polling once a second gets its ack in the turn that NATS took its
  batch, not in a turn of its own). On core NATS the markers are paced as the
  acks are (`edgert.bridge.uplink`), so the acks a marker releases go when it
  comes back, in its turn of the loop. A deadline set outside the bus task's
  turn moves the timer it waits on (`wake_at`) rather than waking it for a
  turn. Acks go on a ROUTER of their own
  (`ipc://<runtime_dir>/ack.sock`), which a driver reads when it wakes anyway
  unless it waits for one, and on the bus to a sender with no ack socket
  connected;
- the spool: `<data_dir>/spool.db`, opened, used and closed by ONE worker
  thread (sqlite never runs on the loop); commits and reads are queued to it
  in order and their results fed back in that order. A spool with nothing on
  disk (a new or empty file) is opened, and sqlite3 and the thread loaded, at
  its first commit: while NATS takes every point, never;
- the uplink (`edgert.bridge.uplink`): the NATS sessions, publishing,
  commands (`edgert.bridge.commands`) and the status subject
  (`edgert.bridge.status`);
- the clock (`edgert.clock`): read at every turn of the bus while it is not
  synchronized (one adjtimex), so a part taken after a step is known to be, and
  on the host's grid every 2 s, with the heartbeats (every 10 s once
  synchronized, when a change is rare and nothing waits on it); a turn of the
  bus that takes batches does the timed reading and sends the heartbeat when
  they are due soon, so the bridge does not wake for them apart. When it is not synchronized at start, the points read until it is wait in the spool for the sync
  (`clock_hold` seconds at most after the first connection to NATS: the
  forwarder holds them); at the sync they leave with their times corrected by
  the step (`Edgert-Clock: corrected`), after the hold with
  `Edgert-Clock: unsynced`, as does any message published while the clock is
  not synchronized.

On Stop the bridge finishes the spool work in progress, writes everything not
yet safe to the spool in one last commit, acks it, and closes what it opened.
"""

from __future__ import annotations

from .natsimport import defer_openssl

defer_openssl()  # first: asyncio, nats-py and the uplink load OpenSSL only to use it

import asyncio
import contextlib
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq

from ..actor import Actor
from ..bus import BadFrame, ack_endpoint, bus_endpoint, decode_points_after, encode_frame, p_head
from ..clock import ClockWatch, clock_source
from ..config import NatsSection
from ..context import HB_EARLY, HB_PHASE, Context, statuses
from ..fleet.service import FleetService
from ..point import MAX_BATCH_BYTES
from ..proc.zygote import fixed_mmap_threshold, trim
from ..roundtrip import round_trip
from ..spool import Spool, SpoolError
from ..tasks import cancel_all
from ..timers import grid_after
from . import tail_endpoint
from .commands import Commands
from .forwarder import Ack, Action, Commit, Forwarder, Publish, Read
from .latest import Latest, values_endpoint
from .natsimport import import_nats
from .payload import CONTENT_TYPES, encode
from .status import change_key, status_message
from .twins import Twins
from .uplink import Uplink

__all__ = ["Bridge", "BridgeConfig"]

MAX_BURST = 2000  # frames read per turn of the loop at most
MAX_BURST_BYTES = 1024 * 1024  # and at most this much
LOG_FIRST_BAD = 10  # malformed frames logged one by one, then every 1000th
DISK_RETRY = 1.0  # seconds between tries of a commit the disk refused
SYNCED_EVERY = 5  # timed clock readings are this many clock_intervals apart once synced
BUS_MAX_BYTES = MAX_BATCH_BYTES + 64 * 1024  # the largest frame a batch makes, and room
ACK_DELAY = 0.02  # seconds acks owed may wait to go together (well under the outbox's slow_ack)
ACK_POINTS = 2000  # ... unless this many points came in meanwhile (a fast driver's credit)
ACK_QUIET = 0.1  # seconds: a sender not acked for this long is acked at once (no company)
KEEP_ACKED = 1000  # senders whose last ack time is kept, beyond those acked within ACK_QUIET


@dataclass
class BridgeConfig:
    gateway_id: str
    runtime_dir: str
    data_dir: str
    nats: NatsSection
    routes: dict[str, str] = field(default_factory=dict)  # node -> driver actor name
    clock: str = "kernel"  # edgert.clock.clock_source
    # seconds between timed readings of the clock while it is not synchronized (it is
    # also read with every batch then): on the grid, as the heartbeats (every 2 s)
    clock_interval: float = 2.0
    clock_hold: float = 0.0  # see [gateway] clock_hold (0: no hold)
    status_interval: float = 5.0  # seconds between status messages (and on change)
    command_timeout: float = 5.0  # seconds a driver has to answer a command
    commit_interval: float = 0.05  # NATS down: parts wait this long for one spool commit
    # once NATS has been down for `outage_after` seconds, commit less often: fewer,
    # larger rows and writes (the drivers wait for their acks meanwhile)
    outage_interval: float = 1.0
    outage_after: float = 3.0
    # at start, parts wait (unacked) this long at most for the first connect to NATS
    # before they go to the spool: the spool is for outages, not for a slow start
    connect_grace: float = 1.5
    backoff_min: float = 0.1  # reconnect backoff to NATS, doubling up to backoff_max
    backoff_max: float = 0.5
    max_in_flight: int = 64  # messages published and not yet acknowledged by NATS
    service: bool = True  # host the micro service (false: the fleet actor does)


class Bridge(Actor):
    """Forwards points from the bus to NATS through the spool, and commands back."""

    Config = BridgeConfig
    uses_bus = False
    wants_status = True

    def run(self, ctx: Context) -> None:
        fixed_mmap_threshold()  # its heap keeps no freed buffers (0.16 MB)
        asyncio.run(_Run(ctx).main())


class _Run:
    """One run of the bridge: the state its loop owns."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.cfg: BridgeConfig = ctx.config
        n = self.cfg.nats
        self.enc = n.encoding
        self.base = f"{n.prefix}.{self.cfg.gateway_id}"
        self.log = ctx.log
        self.router: zmq.Socket | None = None
        self.ack_router: zmq.Socket | None = None  # acks, apart from the bus (`_ack`)
        self.tail: zmq.Socket | None = None  # XPUB: it says who subscribes (`_tailed`)
        self.tail_topics: set[bytes] = set()  # the topics `edgert tail` subscribed to
        self.values_sock: zmq.Socket | None = None
        self.latest = Latest()
        self.spool: Spool | None = None
        self.boot_id = ""  # the kernel's boot id, recorded in the spool when it opens
        self.worker: ThreadPoolExecutor | None = None  # its thread starts with its first job
        self.seqs: dict[str, int] = {}  # epoch -> last seq in the spool
        self.fwd = Forwarder(spooling=False)
        self.jobs: deque[Commit | Read] = deque()  # for the spool worker, in order
        self.acks: dict[str, Ack] = {}  # owed, by epoch: sent together (`_acks_owed`)
        self.ack_due: float | None = None  # when the acks owed go at the latest
        self.acked_points = 0  # the forwarder's points_in when they last went
        self.last_acked: dict[str, float] = {}  # epoch -> when it was last acked
        self.job_ready = asyncio.Event()
        self.poke = asyncio.Event()  # wakes the bus task: the ROUTER's FD, or a send on it
        self.bus_timer: asyncio.Timeout | None = None  # the bus task's wait, while it waits
        self.status_changed = asyncio.Event()
        self.snapshot: dict[str, Any] = {}
        self.status_key: Any = None
        self.uplink = Uplink(self)
        self.clock = clock_source(self.cfg.clock)
        self.clock_watch = ClockWatch(self.clock.read())
        self.clock_unsynced_out = 0  # points published with Edgert-Clock: unsynced
        self.holding = False  # the forwarder held points for the sync at the last reading
        self.clock_due = 0.0  # when the timed reading of the clock is due (`_clock_next`)
        self.clock_timer: asyncio.Timeout | None = None  # the wait for it, moved by readings
        self.twins = Twins(self.cfg.gateway_id, self.base, self.log, lambda: self.changed())
        self.commands = Commands(
            self.base, self.cfg.routes, self.cfg.command_timeout, self._send_router, self.enc
        )
        self.bad_frames = 0
        self.bus_disconnects = 0  # bus connections that ended (see `disconnects`)
        self.disk_error = ""
        self.disk_faults = 0
        ctx._figures = self._figures  # the heartbeats' figures, made when one goes

    # -- the whole run -------------------------------------------------------------
    async def main(self) -> None:
        cfg = self.cfg
        zctx = zmq.Context(1)
        try:
            with contextlib.ExitStack() as stack:
                if cfg.nats.enabled:
                    import_nats()  # before the uplink or the service does: see there
                    self.worker = stack.enter_context(
                        ThreadPoolExecutor(1, thread_name_prefix="edgert-spool")
                    )
                    spool = Spool(
                        Path(cfg.data_dir) / "spool.db",
                        cfg.nats.spool_max_bytes,
                        cfg.nats.spool_sync,
                    )
                    self.boot_id = self.clock.boot_id()
                    if spool.create():  # nothing to read: opened by the first commit
                        rows, last_row, first_row = {}, 0, 1  # what a new spool says
                    else:
                        rows, last_row, first_row = await self._in_worker(
                            _open_spool, spool, self.boot_id
                        )
                    self.spool = spool
                    stack.callback(self._close_spool)
                    self.seqs = dict(spool._seqs)
                    self.fwd = Forwarder(
                        spooling=True,
                        last_seq=self._last_seq,
                        rows=Counter(rows),
                        max_in_flight=cfg.max_in_flight,
                        commit_interval=cfg.commit_interval,
                        outage_interval=cfg.outage_interval,
                        outage_after=cfg.outage_after,
                        last_row=last_row,
                    )
                    self.fwd.starting(time.monotonic(), cfg.connect_grace)
                    if not self.clock_watch.synced:
                        self.fwd.unsynced(time.monotonic(), cfg.clock_hold, first_row)
                self.router = stack.enter_context(_socket(zctx, zmq.ROUTER))
                self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
                self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
                self.router.setsockopt(zmq.RCVHWM, 1000)
                # a bigger frame is never read: ZeroMQ drops that sender's connection
                self.router.setsockopt(zmq.MAXMSGSIZE, BUS_MAX_BYTES)
                self.router.bind(bus_endpoint(cfg.runtime_dir))
                self.ack_router = stack.enter_context(_socket(zctx, zmq.ROUTER))
                self.ack_router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unknown: on the bus
                self.ack_router.setsockopt(zmq.ROUTER_HANDOVER, 1)
                self.ack_router.bind(ack_endpoint(cfg.runtime_dir))
                monitor = self.router.get_monitor_socket(zmq.EVENT_DISCONNECTED)
                stack.callback(monitor.close, 0)
                stack.callback(self.router.disable_monitor)
                self.tail = stack.enter_context(_socket(zctx, zmq.XPUB))
                self.tail.setsockopt(zmq.SNDHWM, 10_000)
                self.tail.bind(tail_endpoint(cfg.runtime_dir))
                self.values_sock = stack.enter_context(_socket(zctx, zmq.ROUTER))
                self.values_sock.bind(values_endpoint(cfg.runtime_dir))
                async with asyncio.TaskGroup() as tg:
                    tasks = [tg.create_task(self.bus()), tg.create_task(self.disconnects(monitor))]
                    tasks.append(tg.create_task(self.values()))
                    tasks.append(tg.create_task(self.watch_clock()))
                    spooler = None
                    if self.spool is not None:
                        spooler = tg.create_task(self.spooler())
                        tasks.append(tg.create_task(self.uplink.run_forever()))
                        tasks.append(tg.create_task(self.uplink.commands_forever()))
                        if cfg.service:
                            svc = FleetService(self, cfg.gateway_id, self.base, cfg.runtime_dir)
                            run_svc = svc.run_forever(cfg.nats, cfg.backoff_min, cfg.backoff_max)
                            tasks.append(tg.create_task(run_svc))
                    await self.inbox()
                    if spooler is not None:
                        self.jobs.append(None)  # type: ignore[arg-type] # finish, then return
                        self.job_ready.set()
                    await cancel_all(tasks, log=self.log)
                await self._final()
        finally:
            self.commands.cancel()
            zctx.term()

    def _last_seq(self, epoch: str) -> int:
        return self.seqs.get(epoch, 0)

    async def _in_worker(self, fn: Any, *args: Any) -> Any:
        assert self.worker is not None
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)

    async def _spool_open(self) -> Spool:
        """The spool, opened (in the worker) if it is not yet."""
        spool = self.spool
        assert spool is not None
        if not spool.is_open:
            await self._in_worker(_open_spool, spool, self.boot_id)
        return spool

    def _close_spool(self) -> None:
        spool, worker = self.spool, self.worker
        if spool is not None and worker is not None and spool.is_open:
            worker.submit(spool.close).result()

    async def _final(self) -> None:
        """Everything not safe yet goes to the spool; the drivers are acked for it."""
        if self.acks:
            self._flush_acks()  # those that waited to go together
        if self.spool is None:
            self._send_acks(self.fwd.stop(time.monotonic()))
            return
        while self.jobs:  # commits asked for after the spool task returned
            job = self.jobs.popleft()
            if isinstance(job, Commit):
                await self._commit_final(job)
        for a in self.fwd.stop(time.monotonic()):
            if isinstance(a, Commit):
                await self._commit_final(a)
            elif isinstance(a, Ack):
                self._send_acks([a])

    async def _commit_final(self, c: Commit) -> None:
        """A commit at the stop: written, and its points acked at once."""
        spool = await self._spool_open()
        ids, removed = await self._in_worker(spool.apply, c.rows, c.seqs, c.done)
        self._send_acks(self.fwd.committed(ids, removed, time.monotonic()))

    async def inbox(self) -> None:
        """The supervisor's snapshots, for the status subject; returns on Stop."""
        async for snapshot in statuses(self.ctx):
            self.snapshot = snapshot
            self.changed()

    # -- carrying out the forwarder's actions ------------------------------------------
    def feed(self, actions: list[Action], send_acks: bool = True, at_once: bool = False) -> None:
        """Carry out the forwarder's actions; acks are sent once per turn, the latest
        per sender (they are cumulative); `at_once`: every ack owed goes now (a core
        NATS marker came back: those are paced as acks are, see `edgert.bridge.uplink`).
        Fed outside the bus task's turn, the forwarder may have work sooner than that
        task waits for: its wait is brought forward (`wake_at`)."""
        for a in actions:
            if isinstance(a, Publish):
                self.uplink.publish(a)
            elif isinstance(a, Ack):
                self.acks[a.epoch] = a
            else:
                self.jobs.append(a)
                self.job_ready.set()
        if at_once and self.acks:
            self._flush_acks()
        elif send_acks and self.acks:
            self._acks_owed()
        if self.bus_timer is not None and (due := self.fwd.next_deadline()) is not None:
            self.wake_at(due)

    def wake_at(self, when: float) -> None:
        """The bus task's next turn must come by `when` (monotonic seconds): its wait,
        if it waits, ends then at the latest. (A turn would recompute its deadline
        from scratch; moving the timer costs no turn.)"""
        bring_forward(self.bus_timer, when)

    def _bus_deadline(self) -> float | None:
        """When the bus task's next turn must come with no frame: the forwarder's next
        deadline, the acks owed, the core NATS marker due."""
        deadline = self.fwd.next_deadline()
        for due in (self.ack_due, self.uplink.mark_due()):
            if due is not None and (deadline is None or due < deadline):
                deadline = due
        return deadline

    def _acks_owed(self) -> None:
        """Send the acks owed once the oldest is `ACK_DELAY` old, or `ACK_POINTS` points
        are owed; the bus task wakes for the deadline (`ack_due`). A quiet sender's
        (acked no sooner than `ACK_QUIET` ago) goes at once: waiting brings it no
        company, and would cost the bridge a wake-up of its own for it."""
        now = time.monotonic()
        last = self.last_acked
        quiet = [e for e in self.acks if now - last.get(e, -ACK_QUIET) >= ACK_QUIET]
        for e in quiet:
            self._ack(self.acks.pop(e), now)
        if not self.acks:
            self.ack_due = None
            return
        if self.ack_due is None:
            self.ack_due = now + ACK_DELAY
            self.wake_at(self.ack_due)  # the bus task waits until then at most
        if now >= self.ack_due or self._points_in() - self.acked_points >= ACK_POINTS:
            self._flush_acks()

    def _points_in(self) -> int:
        return self.fwd.stats["points_in"]

    def _flush_acks(self) -> None:
        acks, self.acks = self.acks, {}
        self.ack_due = None
        self.acked_points = self._points_in()
        for a in acks.values():
            self._ack(a)

    def _send_acks(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Ack):
                self._ack(a)

    def _ack(self, a: Ack, now: float | None = None) -> None:
        """Send an ack on the sender's ack socket, or on the bus when it has none
        connected (yet), or that socket's queue is full."""
        last = self.last_acked
        if len(last) > KEEP_ACKED:  # forget the senders that are quiet anyway
            t = time.monotonic()
            self.last_acked = last = {e: x for e, x in last.items() if t - x < ACK_QUIET}
        last[a.epoch] = time.monotonic() if now is None else now
        frame = encode_frame("A", a.epoch, a.seq)
        if self.ack_router is not None:
            try:  # two plain sends: pyzmq's send_multipart builds flag enums (5 us of 6)
                _send(self.ack_router, a.ident, _NOBLOCK_MORE)
                _send(self.ack_router, frame, _NOBLOCK)
                return
            except zmq.ZMQError:
                pass
        try:
            self._send_router([a.ident, frame])
        except zmq.ZMQError:
            pass  # the sender is gone; it resends to the next bridge

    def clock_check(self, a: Publish) -> tuple[bytes, str]:
        """The payload to publish for `a` and its Edgert-Clock header ("" for none):
        "corrected" when points read before the sync had their times moved by the
        step, "unsynced" while the clock is not synchronized."""
        watch = self.clock_watch
        if not watch.synced:
            self.clock_unsynced_out += a.points
            return a.data, "unsynced"
        if a.presync and watch.steps:
            maps = msgpack.unpackb(a.data, raw=False)
            if watch.fix(maps, a.steps):
                return msgpack.packb(maps, use_bin_type=True), "corrected"
        return a.data, ""

    def _send_router(self, parts: list[bytes]) -> None:
        assert self.router is not None
        router = self.router
        try:
            router.send_multipart(parts, zmq.NOBLOCK)
        finally:
            # a send may eat the FD's edge of frames that came meanwhile: if there are
            # any, the bus task looks again (asking EVENTS re-arms the FD otherwise)
            if router.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                self.poke.set()

    # -- the spool worker ------------------------------------------------------------
    async def spooler(self) -> None:
        """Run the spool jobs in the worker thread, one at a time, in order."""
        spool = self.spool
        assert spool is not None
        while True:
            if not self.jobs:
                self.job_ready.clear()
                await self.job_ready.wait()
                continue
            job = self.jobs.popleft()
            if job is None:
                return
            if isinstance(job, Commit):
                try:
                    await self._spool_open()
                    ids, removed = await self._in_worker(spool.apply, job.rows, job.seqs, job.done)
                except Exception as e:  # a full disk, an I/O error: hold, retry, no crash
                    if not _disk_error(e):
                        raise
                    self._disk_fault(
                        str(e) if isinstance(e, SpoolError) else f"spool {spool.path}: {e}"
                    )
                    self.jobs.appendleft(job)  # its points stay unacked: the drivers hold
                    await asyncio.sleep(DISK_RETRY)
                    continue
                if self.disk_error:
                    self.log.warning("spool writable again after: %s", self.disk_error)
                    self.disk_error = ""
                    self.changed()
                self.seqs.update(job.seqs)
                self.feed(self.fwd.committed(ids, removed, time.monotonic()))
                if spool.dropped_batches:
                    self.changed()
                if removed and not spool.batches:  # the end of an outage: the spool is empty
                    await self._in_worker(trim)  # its freed pages go back to the system
            else:
                await self._spool_open()  # (rows to read were written by an open spool)
                rows = await self._in_worker(spool.read, job.after, job.limit)
                self.feed(self.fwd.rows(job.session, rows, job.limit, time.monotonic()))

    # -- the bus -------------------------------------------------------------------
    async def bus(self) -> None:
        """The bus task: one turn per wake-up, which reads every frame waiting
        (`_take`), carries them through, publishes, and sends the acks owed."""
        router = self.router
        assert router is not None
        poke = self.poke
        empty = False  # the last look found no frame waiting, which re-armed the FD
        with _reader(router, poke):  # for the task's whole life: no futures per wait
            while True:
                # The FD only signals a change, and any operation on the socket may take
                # that signal: the last look (the drain's, or a send's, `_send_router`)
                # must have seen nothing waiting before the task sleeps on it. `poke`
                # says "maybe", not "yes": the loop reports the FD readable once more in
                # the iteration that runs this task's turn, after the turn read it, so
                # it is checked rather than taken for a turn.
                if poke.is_set() or not empty:
                    poke.clear()
                    empty = not _sock_get(router, _EVENTS) & _POLLIN
                if empty:
                    await self._bus_wait(self._bus_deadline())
                    poke.clear()
                frames: list[list[bytes]] = []
                empty = _take(router, frames)
                self.uplink.batching = True  # this task sends what the turn publishes
                try:
                    self.receive(frames)
                    self.feed(self.fwd.tick(time.monotonic()), False)
                finally:
                    self.uplink.batching = False
                await self.uplink.send()  # this turn's batches leave in this turn...
                # ...first: the client's flusher writes them at this yield (a busy bus
                # must not starve the other tasks either), then the credit goes back
                await asyncio.sleep(0)
                if self.acks:
                    self._acks_owed()
                if frames:
                    self._periodic_early()

    async def _bus_wait(self, deadline: float | None) -> None:
        """Until `poke` (the ROUTER's FD, a send on it), or `deadline`, which `wake_at`
        may bring forward meanwhile."""
        if deadline is not None and deadline <= time.monotonic():
            return
        try:
            async with asyncio.timeout_at(deadline) as self.bus_timer:
                await self.poke.wait()
        except TimeoutError:
            pass
        finally:
            self.bus_timer = None

    def _periodic_early(self) -> None:
        """Awake for batches: the heartbeat and the timed clock reading, when due soon,
        go now rather than in wake-ups of their own (both fall HB_PHASE after the
        host's grid, just after the batches of the drivers polling on it)."""
        self.ctx.beat()
        now = time.monotonic()
        if self.clock_watch.synced and now >= self.clock_due - self._clock_interval() * HB_EARLY:
            self._read_clock()  # (while not synchronized, every turn with batches reads it)

    async def disconnects(self, monitor: zmq.Socket) -> None:
        """Count the bus connections that end: a sender that ended, or one whose frame
        was over `BUS_MAX_BYTES` (ZeroMQ drops it unread; the sender reconnects and
        its unacknowledged batch waits, then its outbox drops, counted)."""
        wake = asyncio.Event()
        with _reader(monitor, wake):
            while True:
                await _readable(monitor, wake)
                while monitor.poll(0):
                    monitor.recv_multipart()
                    self.bus_disconnects += 1

    def receive(self, frames: list[list[bytes]]) -> None:
        """Check each frame and feed the forwarder (a malformed one is counted, skipped)."""
        if frames and not self.clock_watch.synced:
            # a step must be seen before the parts taken after it are (each says how
            # many steps came before it): until the sync, read the clock every turn
            self._read_clock()
        now = time.monotonic()
        tail = self.tail if frames and self._tailed() else None
        for parts in frames:
            if len(parts) != 2:
                self._bad(f"a message of {len(parts)} parts (expected one frame)")
                continue
            ident, data = parts
            head = p_head(data)  # read once: decode_points_after starts from it
            if head is not None and not self.fwd.inbox.expects(head[0], head[1], head[2]):
                epoch, seq, first, resent, _ = head  # a resend already taken: ack, skip points
                self.feed(self.fwd.batch(ident, epoch, seq, first, resent, [], now), False)
                continue
            try:
                frame = decode_points_after(data, head)
            except BadFrame as e:
                self._bad(str(e))
                continue
            kind = frame[0]
            if kind == "P":
                _, epoch, seq, first, resent, nodes = frame
                for node, _n, packed, latest in nodes:
                    if tail is not None:
                        with contextlib.suppress(zmq.ZMQError):
                            tail.send_multipart([node.encode() + b"\0", packed], zmq.NOBLOCK)
                    self.latest.add(latest)
                self.feed(self.fwd.batch(ident, epoch, seq, first, resent, nodes, now), False)
            elif kind == "R":
                _, cmd_id, ok, error = frame
                self.commands.answer(cmd_id, ok, error)
            else:
                self._bad(f"frame kind {kind!r} is not sent by actors")

    def _tailed(self) -> bool:
        """Does anyone tail the points? The tail socket (XPUB) hands up the topics its
        subscribers ask for and drop: one look per turn with batches, instead of a
        send per part that no one receives."""
        tail, topics = self.tail, self.tail_topics
        if tail is None:
            return False
        try:
            while _sock_get(tail, _EVENTS) & _POLLIN:
                msg = tail.recv(zmq.NOBLOCK)
                if msg[:1] == b"\x01":
                    topics.add(msg[1:])
                elif msg[:1] == b"\x00":
                    topics.discard(msg[1:])
        except zmq.ZMQError:
            pass
        return bool(topics)

    async def values(self) -> None:
        """Answer `edgert values` and `tail --last` from the latest-values table."""
        sock = self.values_sock
        assert sock is not None
        wake = asyncio.Event()
        with _reader(sock, wake):
            while True:
                await _readable(sock, wake)
                requests: list[list[bytes]] = []
                _take(sock, requests)
                for parts in requests:
                    if len(parts) < 2:
                        continue
                    with contextlib.suppress(zmq.ZMQError):  # the asker went away
                        reply = self.latest.reply(parts[-1])
                        sock.send_multipart([*parts[:-1], reply], zmq.NOBLOCK)

    async def watch_clock(self) -> None:
        """Read the clock on the grid of `clock_interval` (once synchronized, of
        `SYNCED_EVERY` of them), besides every turn of the bus while it is not
        synchronized (`receive`), so the timed reading matters only to a bridge that
        takes no batches; say when its state changes or the hold runs out."""
        watch = self.clock_watch
        if not watch.synced:
            hold = self.cfg.clock_hold if self.fwd.holding else 0.0
            self.log.warning(
                "the wall clock is not synchronized (no NTP yet?): %s",
                f"points wait in the spool for it, at most {hold:g}s after NATS is reached"
                if hold
                else "points are published with the header Edgert-Clock: unsynced until it is",
            )
        self.holding = self.fwd.holding
        self._clock_next(time.monotonic(), first=True)
        while True:
            try:  # until the reading is due: each reading moves it (`_clock_next`)
                async with asyncio.timeout_at(self.clock_due) as self.clock_timer:
                    await asyncio.Event().wait()
            except TimeoutError:
                pass
            finally:
                self.clock_timer = None
            self._read_clock()

    def _clock_interval(self) -> float:
        # once synchronized, a change is rare and nothing waits on it: look less often
        return self.cfg.clock_interval * (1 if not self.clock_watch.synced else SYNCED_EVERY)

    def _clock_next(self, now: float, first: bool = False) -> None:
        """When the timed reading is due: on the host's grid, HB_PHASE after it (as
        the heartbeats: the reading shares their wake-up), at least half an interval
        after the last reading (`first`: the next instant). A bus turn that reads the
        clock (every one while it is not synchronized) moves it on, so a bridge that
        takes batches does not wake for it."""
        iv = self._clock_interval()
        phase = HB_PHASE if iv >= 4 * HB_PHASE else 0.0
        self.clock_due = due = grid_after(now - phase + (0.0 if first else iv / 2), iv) + phase
        t = self.clock_timer
        if t is not None and not t.expired():  # (an expired one: the reading comes now)
            # moved only when it would come sooner than half an interval from this
            # reading (or after the new time): a busy bus reads the clock a hundred
            # times a second, and each move is a timer cancelled and one made
            when = t.when()
            if when is None or when < now + iv / 2 or due < when:
                t.reschedule(due)

    def _read_clock(self) -> None:
        """One reading of the clock (one adjtimex): a step is told to the forwarder
        before any part is taken after it; a change of state ends a hold."""
        watch, fwd = self.clock_watch, self.fwd
        was = watch.synced
        step = watch.update(self.clock.read(), time.monotonic_ns())
        if step is not None:
            fwd.stepped()
            self.log.warning(
                "the wall clock stepped by %+.3fs while not synchronized: points read "
                "before it and not yet published leave with their times corrected",
                step.delta_ns / 1e9,
            )
        if watch.synced != was:
            self.log.warning("the wall clock is now %s", watch.state)
            if watch.synced:
                self.feed(fwd.synced(time.monotonic()))
            self.changed()
        elif self.holding and not fwd.holding:  # the hold ran out since the last reading
            self.log.warning(
                "the wall clock did not synchronize within clock_hold (%gs): the points "
                "held for it are published with the header Edgert-Clock: unsynced",
                self.cfg.clock_hold,
            )
            self.changed()
        self.holding = fwd.holding
        self._clock_next(time.monotonic())

    def _disk_fault(self, error: str) -> None:
        """A commit failed: say so once (status, status subject, log) and retry later."""
        if error != self.disk_error:
            self.log.error("%s; holding new points until it can be written", error)
            self.disk_error = error
            self.disk_faults += 1
            self.changed()

    def _bad(self, why: str) -> None:
        self.bad_frames += 1
        n = self.bad_frames
        if n <= LOG_FIRST_BAD or n % 1000 == 0:
            self.log.warning("bus: dropped a malformed frame (%d so far): %s", n, why)

    # -- figures and status ------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        s: dict[str, Any] = dict(self.fwd.stats)
        s["bad_frames"] = self.bad_frames
        s["bus_disconnects"] = self.bus_disconnects
        s["commands"] = self.commands.count
        s["command_errors"] = self.commands.errors
        s["refused_unlogged"] = self.commands.log_throttle.left_out_total
        s["memory_parts"] = len(self.fwd.mem)  # accepted, waiting to be published
        s["in_flight"] = len(self.fwd.flight)  # published, NATS has not confirmed yet
        s["backlog_rows"] = self.fwd.backlog_rows  # spool rows this session has yet to send
        s["spool_jobs"] = len(self.jobs)
        s["disk_error"] = self.disk_error  # "" unless the spool cannot be written now
        s["disk_faults"] = self.disk_faults
        return s

    def _figures(self) -> dict[str, Any]:
        """The figures each heartbeat carries (`edgert status` shows them): made when one
        goes, not at every turn of the loop."""
        s = self.stats()
        if self.spool is not None:
            s.update(self.spool.stats())
            s["buffered"] = self.spool.points
            s["dropped"] = self.spool.dropped_points
        up = self.uplink
        s["nats"] = up.state()  # the same line as the status subject's nats.state
        s["nats_connect_attempts"] = up.attempts
        s["nats_commands_attempts"] = up.commands_attempts
        s["duplicate_id"] = self.twins.note()  # "" unless another gateway has this id
        s["clock"] = self.clock_watch.state
        s["clock_holding"] = self.fwd.holding  # points wait in the spool for the sync
        s["clock_unsynced_out"] = self.clock_unsynced_out
        s["clock_corrected"] = self.clock_watch.corrected
        return s

    def changed(self) -> None:
        """Something status shows may have changed: publish it if it did."""
        key = change_key(
            self.snapshot,
            self.spool.dropped_points if self.spool is not None else 0,
            self.uplink.state(),
        ) + (self.twins.note(), self.clock_watch.synced, self.fwd.holding)
        if key != self.status_key:
            self.status_key = key
            self.status_changed.set()
            self.ctx._prompt()  # and to `edgert status` now, not at the next heartbeat

    async def statuses(self, nc: Any) -> None:
        """The status subject: now, every `status_interval`, and on change."""
        while True:
            self.status_changed.clear()
            await self._publish_status(nc, self.uplink.connected, "")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.cfg.status_interval):
                    await self.status_changed.wait()

    async def status_once(self, nc: Any, error: str) -> None:
        """One status message while the uplink cannot publish points (it says why)."""
        with contextlib.suppress(Exception):
            await self._publish_status(nc, False, error)
            await round_trip(nc, self.cfg.nats.ack_timeout)

    async def _publish_status(self, nc: Any, connected: bool, error: str) -> None:
        msg = status_message(
            self.cfg.gateway_id,
            self.snapshot,
            connected,
            self.uplink.server,
            self.spool.stats() if self.spool is not None else {},
            self.stats() | {"duplicates": self.fwd.stats["duplicates"]},
            error=error,
            commands_connected=self.uplink.commands_connected,
            commands_error=self.uplink.commands_error,
            duplicate_id=self.twins.note(),
            clock={
                "state": self.clock_watch.state,
                "holding": self.fwd.holding,
                "held": self.fwd.stats["clock_held"],
                "unsynced_out": self.clock_unsynced_out,
                "corrected": self.clock_watch.corrected,
            },
        )
        headers = {"Content-Type": CONTENT_TYPES[self.enc]}
        await nc.publish(f"{self.base}.status", encode(msg, self.enc), headers=headers)


# --- helpers ------------------------------------------------------------------------


def _disk_error(e: Exception) -> bool:
    """`e` is the spool's file or disk failing (sqlite3 is loaded once it is open)."""
    sqlite3 = sys.modules.get("sqlite3")
    return isinstance(e, SpoolError) or (sqlite3 is not None and isinstance(e, sqlite3.Error))


def _open_spool(spool: Spool, boot_id: str) -> tuple[dict[str, int], int, int]:
    """Open it: its rows per node, its newest row's id, and the first row of this boot."""
    spool.open()
    try:
        first = spool.boot(boot_id)
    except BaseException:
        spool.close()
        raise
    return spool.rows_per_node(), spool._next_id - 1, first


@contextlib.contextmanager
def _socket(zctx: zmq.Context, kind: int) -> Iterator[zmq.Socket]:
    sock = zctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        yield sock
    finally:
        sock.close(0)


@contextlib.contextmanager
def _reader(sock: zmq.Socket, wake: asyncio.Event) -> Iterator[None]:
    """While inside: the loop sets `wake` whenever `sock`'s FD signals (see `_readable`)."""
    loop = asyncio.get_running_loop()
    fd = sock.getsockopt(zmq.FD)
    loop.add_reader(fd, wake.set)
    try:
        yield
    finally:
        loop.remove_reader(fd)


def bring_forward(t: asyncio.Timeout | None, when: float) -> None:
    """Move `t` to end at `when` if that is sooner. An expired one (its end came in
    this turn of the loop, its task not yet resumed) is left alone: its wait ends
    anyway, and asyncio refuses to move it."""
    if t is not None and not t.expired():
        current = t.when()
        if current is None or when < current:
            t.reschedule(when)


async def _readable(sock: zmq.Socket, wake: asyncio.Event) -> None:
    """Wait until `sock` has a message or `wake` is set.

    The zmq FD (whose reader sets `wake`) only signals that the socket's state
    may have changed, and any send on the socket may consume that signal: so
    the socket's EVENTS are checked before the wait (which also re-arms the FD),
    and whoever sends on the socket sets `wake` when frames are waiting.
    """
    if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN and not wake.is_set():
        await wake.wait()
    wake.clear()


_sock_get = zmq.backend.Socket.get  # the plain option read, an int (no flag enum built)
_send = zmq.backend.Socket.send  # the plain send, with int flags
_EVENTS, _POLLIN, _RCVMORE = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.RCVMORE)
_NOBLOCK, _NOBLOCK_MORE = int(zmq.NOBLOCK), int(zmq.NOBLOCK | zmq.SNDMORE)


def _take(sock: zmq.Socket, into: list[list[bytes]]) -> bool:
    """Read the messages waiting, up to a burst; True when it stopped because none
    was waiting (that look also re-armed the socket's FD). After the first message
    EVENTS is asked, which is cheaper than a receive raising `zmq.Again` and ends
    the commonest turn (one frame) at once; a burst is read until a receive raises,
    which is cheaper than asking EVENTS after each frame (a system call or two)."""
    size = 0
    recv = sock.recv
    try:
        while len(into) < MAX_BURST and size < MAX_BURST_BYTES:
            parts = [recv(zmq.NOBLOCK)]
            while _sock_get(sock, _RCVMORE):
                parts.append(recv(zmq.NOBLOCK))
            into.append(parts)
            size += len(parts[-1])
            if len(into) == 1 and not _sock_get(sock, _EVENTS) & _POLLIN:
                return True
    except zmq.Again:
        return True
    return False
