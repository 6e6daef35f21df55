"""The bus poller: everything the driver's loop does between two `receive` calls.

A `Poller` owns one bus: its connections (`Line`s), its devices' states and
the read plans. On a serial line every device shares the one port; on a
network each distinct device address (`host`, `tcp_port`) is a line of its
own with its own connection, and the lines are polled side by side: each has
at most one request in flight, so requests on one line (one serial port, one
TCP connection) never overlap, while a slow device delays only its own line.
There is no thread: every line's socket or port is registered in one epoll
set whose descriptor (`fd`) the driver watches beside its inbox.

`next_wake()` says when there is work again (the lines' wake times are kept
in a heap, so a loop turn costs the same with 5 connections or 500);
`step()` does what is due
(opens a line, sends a request, gives up on an answer past its deadline);
`readable()` takes the answers that came; `write(points)` checks a whole
command, then writes it, waiting (only) for the lines it writes to; `close()`
releases every port.

A device that does not answer (timeout or CRC error after `retries`) goes
offline: an `online = false` point says so, its values are not resent as if
fresh, and from then on it costs its line one probe (no retries) every
`probe_interval` until it answers. When a port itself fails (a USB adapter
unplugged, a TCP connection reset) every device on that line goes offline and
the line is re-opened with exponential backoff from `reopen_min` to
`reopen_max` seconds, inside this process: no restart storm, no busy-looping;
the exchange the failure broke is counted against its device (`errors_timeout`,
or `errors_crc` for a stream out of step).

Exceptions 10 and 11 ("gateway path unavailable", "target failed to respond")
mean the device behind a gateway is not answering: offline, as for a timeout.
Exception 6 (busy) is asked again after `busy_retry_wait`, up to
`busy_retries` times. A read the device refuses is logged when it starts and
when its exception changes, and counted every time. When a line cannot keep
up, of the reads due the one done longest ago goes first, so every device
loses poll slots alike.

On a network the connections' polls are spread over the first interval (at
most `SPREAD` seconds) in `PHASES` steps: 500 devices polled every second are
asked 10 at a time every 20 ms, not all 500 at once (the last of such a burst
would start late by its length), nor each alone (the answers that come
together are taken in one loop turn and their points leave in one batch). A poll is counted `late` when its request goes out more than
`LATE` of its interval after its slot (100 ms at 1 s); slots passed over are
counted in `skipped`; `polls` counts the polls of the grid (not probes of
offline devices, retries or read-backs), so `late / polls` is the share late.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
import select
import time
from typing import Any

from edgert import Context, Point

from . import pdu
from .config import ModbusConfig, RegisterConfig
from .errors import (
    BUSY,
    GATEWAY_NO_ANSWER,
    BadFrame,
    DeviceException,
    ModbusError,
    PortError,
    Timeout,
)
from .plan import Block, plan_device
from .registers import Refused, encode, encode_mask
from .report import DeviceState
from .transport import NOT_YET, Transport, open_transport

__all__ = ["Poller", "Line", "Request"]

REPORT_EVERY = 0.5  # seconds between updates of the driver's figures in `edgert status`
NEVER = math.inf
SPREAD = 1.0  # seconds over which the first polls of a network's connections are spread
PHASES = 50  # ... in this many steps: polls due together share a loop turn and a batch
LATE = 0.1  # a poll sent more than this share of its interval after its slot is late


class Request:
    """One request to a device, through its tries, until it has an outcome."""

    __slots__ = (
        "dev", "pdu", "attempts", "attempt", "busy", "block", "started",
        "sent", "send_at", "deadline", "done", "result", "error",
    )  # fmt: skip

    def __init__(
        self, dev: DeviceState, request: bytes, attempts: int, now: float, block: Block | None
    ) -> None:
        self.dev = dev
        self.pdu = request
        self.attempts = attempts
        self.attempt = 1
        self.busy = dev.cfg.busy_retries
        self.block = block  # a poll; None: a write
        self.started = now
        self.sent = False
        self.send_at = max(now, dev.ready_at)
        self.deadline = NEVER
        self.done = False
        self.result: Any = None
        self.error: ModbusError | None = None


class Line:
    """One connection (the serial port, or one host:port) and the devices behind it."""

    def __init__(
        self, poller: Poller, address: tuple[str, int] | None, devices: list[DeviceState]
    ) -> None:
        self.poller = poller
        self.cfg = poller.cfg
        self.log = poller.log
        self.address = address
        self.devices = devices
        self.blocks: list[Block] = []
        self.transport: Transport | None = None
        self.req: Request | None = None
        now = time.monotonic()
        self.reopen_at = now
        self.connect_by = now  # a connection being made fails at this time
        self.wake = now
        self.queued = NEVER  # the wake time last put on the poller's heap
        self._backoff = self.cfg.reopen_min
        self._healthy = False  # an exchange succeeded since the port was opened
        self.port_error = ""
        self._hung_up = False  # the port was closed on purpose: re-open it quietly

    @property
    def where(self) -> str:
        return f"{self.address[0]}:{self.address[1]}" if self.address else str(self.cfg.port)

    # -- the loop's questions -----------------------------------------------------------
    def rewake(self) -> float:
        """Work out (and keep in `wake`) when this line has work next."""
        if self.transport is None:
            self.wake = self.reopen_at
        elif self.transport.connecting:
            self.wake = self.connect_by
        elif self.req is not None:
            self.wake = self.req.deadline if self.req.sent else self.req.send_at
        else:
            block, when = self._next_block()
            self.wake = when if block is not None else NEVER
        if self.wake != self.queued:
            self.queued = self.wake
            if self.wake != NEVER:
                self.poller._queue(self)
        return self.wake

    def step(self, now: float) -> None:
        """Open the port if it is time; send, or give up on, the request in flight;
        or start the most overdue block read."""
        if self.transport is None:
            if now >= self.reopen_at:
                self._open(now)
            return
        if self.transport.connecting:
            if now >= self.connect_by:
                self._open_failed(PortError(f"cannot connect to {self.where}: timed out"), now)
            return
        req = self.req
        if req is not None:
            if not req.sent:
                if now >= req.send_at:
                    self._send(req)
            elif now >= req.deadline:
                self._collect(req, expire=True)  # what came meanwhile counts
            return
        block, when = self._next_block()
        if block is not None and when <= now:
            block.read_at = now
            dev = self.poller.devices[block.device]
            if dev.online is not False and block.extra is None:  # a poll of the grid
                self.poller.count_poll(block, now)
            attempts = 1 if dev.online is False else 1 + self.cfg.retries  # a probe: once
            self.req = req = Request(dev, block.request, attempts, now, block)
            if req.send_at <= now:
                self._send(req)

    def readable(self) -> None:
        """The port has bytes: the answer to the request in flight, or stray ones."""
        if self.transport is None:
            return
        if self.transport.connecting:  # writable: the connection is made, or failed
            try:
                self.transport.connected()
            except PortError as e:
                self._open_failed(e, time.monotonic())
                return
            self.poller._listen(self.transport.fd, select.EPOLLIN)
            self._opened()
            return
        req = self.req
        if req is not None and req.sent:
            self._collect(req, expire=False)
            return
        try:
            self.transport.stream.discard()  # a late answer: nobody waits for it
        except PortError as e:
            self._lost(e)

    def close(self) -> None:
        if self.transport is not None:
            self.poller._unregister(self.transport.fd)
            self.transport.close()
            self.transport = None

    # -- one request, through its tries ---------------------------------------------------
    def _send(self, req: Request) -> None:
        assert self.transport is not None
        cfg = req.dev.cfg
        self.poller.stats["requests"] += 1
        try:
            req.deadline = self.transport.begin(
                cfg.unit, req.pdu, self.cfg.timeout, cfg.tolerant_transaction_ids
            )
            req.sent = True
        except ModbusError as e:
            self._tried(req, e, None)

    def _collect(self, req: Request, expire: bool) -> None:
        assert self.transport is not None
        try:
            got = self.transport.answer()
            if got is NOT_YET:
                if not expire:
                    return
                self.transport.expired()
        except ModbusError as e:
            self._tried(req, e, None)
        else:
            self._tried(req, None, got)

    def _tried(self, req: Request, e: ModbusError | None, result: Any) -> None:
        """Count one try's outcome: try again, or the request is done."""
        dev = req.dev
        if e is None:
            if not self._healthy:
                self._healthy = True
                self._backoff = self.cfg.reopen_min
            return self._done(req, result, None)
        again = False
        if isinstance(e, Timeout):
            dev.errors["timeout"] += 1
            again = req.attempt < req.attempts
        elif isinstance(e, BadFrame):
            dev.errors["crc"] += 1
            again = req.attempt < req.attempts
        elif isinstance(e, PortError):
            dev.errors[e.count] += 1
        elif isinstance(e, DeviceException):
            if e.code == BUSY and req.busy > 0:  # expected of it: not an error
                req.busy -= 1
                return self._again(req, dev.cfg.busy_retry_wait)
            dev.errors["exception"] += 1
            again = e.code in GATEWAY_NO_ANSWER and req.attempt < req.attempts
        if again:
            req.attempt += 1
            return self._again(req, 0.0)
        self._done(req, None, e)

    def _again(self, req: Request, wait: float) -> None:
        req.sent = False
        req.deadline = NEVER
        req.send_at = time.monotonic() + wait
        if wait <= 0:
            self._send(req)

    def _done(self, req: Request, result: Any, e: ModbusError | None) -> None:
        self.req = None
        req.done, req.result, req.error = True, result, e
        dev = req.dev
        if dev.cfg.pause_between_requests:
            dev.ready_at = time.monotonic() + dev.cfg.pause_between_requests
        if req.block is not None:
            self._polled(req.block, dev, result, e, req.started)

    def run(self, req: Request) -> Request:
        """Carry `req` through to its outcome, waiting for it (a write)."""
        self.req = req
        while not req.done:
            if self.transport is None:  # lost while retrying
                break
            if not req.sent:
                wait = req.send_at - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self._send(req)
                continue
            left = req.deadline - time.monotonic()
            if left > 0:
                self.transport.stream.wait(left)
            self._collect(req, expire=time.monotonic() >= req.deadline)
        return req

    def finish(self) -> None:
        """Let the request in flight (a poll) come to its end before another is sent."""
        if self.req is not None:
            self.run(self.req)

    # -- polling ----------------------------------------------------------------------
    def _next_block(self) -> tuple[Block | None, float]:
        """The block to read next and when. Of the blocks already due, the one read
        longest ago goes first, so an overloaded line skips every block's slots alike."""
        best: Block | None = None
        best_key = (True, 0.0)
        best_t = 0.0
        devices = self.poller.devices
        now = time.monotonic()
        for b in self.blocks:
            dev = devices[b.device]
            t = b.next_at
            if dev.ready_at > t:
                t = dev.ready_at
            if dev.online is False and dev.next_probe > t:
                t = dev.next_probe
            key = (False, b.read_at) if t <= now else (True, t)
            if best is None or key < best_key:
                best, best_key, best_t = b, key, t
        return best, best_t

    def _polled(
        self, block: Block, dev: DeviceState, items: Any, e: ModbusError | None, now: float
    ) -> None:
        block.advance(now)
        out: list[Point] = []
        if isinstance(e, PortError):
            return self._lost(e)
        if isinstance(e, DeviceException):
            if e.code in GATEWAY_NO_ANSWER:
                self._not_answering(dev, e)
            else:
                dev.set_online(True)
                self._refused_read(block, dev, e)
        elif e is not None:
            self._not_answering(dev, e)
        t_ns = time.time_ns()
        if e is None:
            if block.refused is not None:
                self.log.info("device %r: %s read again", dev.name, _names(block))
                block.refused = None
            if dev.online is False:
                self.log.info("device %r (unit %d) answers again", dev.name, dev.cfg.unit)
            dev.set_online(True)
            t_mono = time.monotonic()
            filters = dev.filters
            name = dev.name
            for reg, value in block.values(items):
                f = filters[reg.name]
                if f.always:
                    out.append(_point(name, reg.name, value, t_ns))
                elif f.wants(value, t_mono):
                    f.sent(value, t_mono)
                    out.append(_point(name, reg.name, value, t_ns))
        out += dev.status_points(t_ns)
        if out:
            self.poller.ctx.publish(out)
        if dev.cfg.close_connection_after_poll and self.transport is not None:
            now = time.monotonic()
            if not any(b.device == dev.index and b.next_at <= now for b in self.blocks):
                # open again when the next read is due, not at once: in between, the
                # device's one connection is free for another client
                self._hang_up(max(now, min(b.next_at for b in self.blocks)))

    def _hang_up(self, reopen_at: float) -> None:
        """Close the connection on purpose (a device that serves one client at a time):
        it is opened again at `reopen_at` (when next needed), with no backoff."""
        self.close()
        self.reopen_at = reopen_at
        self._hung_up = True

    def _not_answering(self, dev: DeviceState, e: ModbusError) -> None:
        if dev.online is not False:
            self.log.warning("device %r (unit %d) not answering: %s", dev.name, dev.cfg.unit, e)
        dev.set_online(False)
        dev.next_probe = time.monotonic() + dev.cfg.probe_interval

    def _refused_read(self, block: Block, dev: DeviceState, e: DeviceException) -> None:
        names = _names(block)
        if e.code == 2 and len(parts := block.split(time.monotonic())) > 1:
            self.log.warning(
                "device %r refused a merged read of %s %d..%d (%s): reading it in %d parts",
                dev.name, block.table, block.start, block.start + block.count - 1, e, len(parts),
            )  # fmt: skip
            i = self.blocks.index(block)
            self.blocks[i : i + 1] = parts
            return
        # the first refusal and each change are logged; the rest are only counted
        level = logging.WARNING if block.refused != e.code else logging.DEBUG
        block.refused = e.code
        self.log.log(
            level, "device %r: reading %s (%s) failed: %s", dev.name, names, block.table, e
        )

    # -- the port ---------------------------------------------------------------------
    def _open(self, now: float) -> None:
        """Open the port; a TCP connection is made without waiting for it (a host that
        does not answer must not hold up the other lines): see `readable`."""
        try:
            if self.address is None:
                self.transport = open_transport(self.cfg)
            else:
                self.transport = open_transport(self.cfg, *self.address, wait=False)
        except PortError as e:
            return self._open_failed(e, now)
        connecting = self.transport.connecting
        self.poller._register(self.transport.fd, self, select.EPOLLOUT if connecting else 0)
        if connecting:
            self.connect_by = now + self.cfg.timeout
        else:
            self._opened()

    def _open_failed(self, e: PortError, now: float) -> None:
        self.close()
        msg = str(e)
        level = logging.WARNING if msg != self.port_error else logging.DEBUG
        self.log.log(level, "cannot open the bus: %s (next try in %.1f s)", msg, self._backoff)
        self.port_error = msg
        self.poller.stats["open_failures"] += 1
        self._schedule_reopen(now)

    def _opened(self) -> None:
        assert self.transport is not None
        self.log.log(
            logging.DEBUG if self._hung_up else logging.INFO, "bus open: %s", self.transport.where
        )
        self._hung_up = False
        self.port_error = ""
        self._healthy = False
        self.poller.stats["opens"] += 1
        for dev in self.devices:  # devices that need a moment after a connection opens
            if dev.cfg.pause_after_connect:
                dev.ready_at = max(dev.ready_at, time.monotonic() + dev.cfg.pause_after_connect)

    def ensure_open(self) -> str | None:
        """Re-open a line closed on purpose; why it is not open, or None."""
        if self.transport is None and self._hung_up:
            self._open(time.monotonic())
        if self.transport is not None and self.transport.connecting:  # wait for it here
            p = select.poll()
            p.register(self.transport.fd, select.POLLOUT)
            p.poll(max(0.0, self.connect_by - time.monotonic()) * 1000.0)
            if p.poll(0):
                self.readable()
            else:
                self._open_failed(
                    PortError(f"cannot connect to {self.where}: timed out"), time.monotonic()
                )
        if self.transport is None:
            return f"the bus is not open ({self.port_error or 'opening'})"
        return None

    def _schedule_reopen(self, now: float) -> None:
        self.reopen_at = now + self._backoff * random.uniform(0.8, 1.2)
        self._backoff = min(self._backoff * 2, self.cfg.reopen_max)

    def _lost(self, e: ModbusError) -> None:
        self.log.warning("bus lost: %s; re-opening with backoff", e)
        self.port_error = str(e)
        self.poller.stats["port_errors"] += 1
        self.close()
        if self.req is not None:  # its device is offline with the rest
            self.req.done, self.req.error = True, e
            self.req = None
        t_ns = time.time_ns()
        out: list[Point] = []
        for dev in self.devices:
            dev.set_online(False)
            out += dev.status_points(t_ns)  # what changed: `online`, a counter
        if out:
            self.poller.ctx.publish(out)
        self._schedule_reopen(time.monotonic())


class Poller:
    def __init__(self, cfg: ModbusConfig, ctx: Context[Any]) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.log = ctx.log
        now = time.monotonic()
        self.devices = [DeviceState(i, d) for i, d in enumerate(cfg.device)]
        self.by_name = {d.name: d for d in self.devices}
        self.stats = {
            "requests": 0, "polls": 0, "late": 0, "opens": 0, "open_failures": 0, "port_errors": 0,
        }  # fmt: skip
        self._heap: list[tuple[float, int, Line]] = []
        self._seq = itertools.count()
        self._epoll = select.epoll()
        self.fd = self._epoll.fileno()
        self._by_fd: dict[int, Line] = {}
        groups: dict[tuple[str, int] | None, list[DeviceState]] = {}
        for dev in self.devices:
            groups.setdefault(cfg.address(dev.cfg), []).append(dev)
        if not groups:  # a bus without devices still opens its port
            groups[None if cfg.serial else (cfg.host or "", cfg.tcp_port)] = []
        self.lines = [Line(self, address, devs) for address, devs in groups.items()]
        self.line_of: dict[int, Line] = {}
        n = len(self.lines)
        for i, line in enumerate(self.lines):
            phase = (i * PHASES // n) / PHASES
            for dev in line.devices:
                self.line_of[dev.index] = line
                line.blocks += plan_device(
                    dev.index, dev.cfg, cfg.poll_interval, now, phase=phase, spread=SPREAD
                )
            line.rewake()
        self._report_at = 0.0

    # -- the loop's questions ---------------------------------------------------------
    def next_wake(self) -> float:
        """Monotonic time when `step` has work next."""
        heap = self._heap
        while heap and heap[0][2].queued != heap[0][0]:
            heapq.heappop(heap)  # that line's wake moved since
        wake = heap[0][0] if heap else NEVER
        return min(wake, self._report_at)  # figures stay fresh when nothing is due

    def step(self) -> None:
        """Whatever is due on each line; the figures when it is time."""
        now = time.monotonic()
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now:
            t, _n, line = heapq.heappop(heap)
            if line.queued == t:  # else stale: the line is on the heap at its newer time
                line.queued = NEVER
                due.append(line)
        for line in due:  # each once, as its step may make it due again at once
            line.step(now)
            line.rewake()
        if now >= self._report_at:
            self._report(now)

    def count_poll(self, block: Block, now: float) -> None:
        """A poll of `block`'s grid starts at `now`: counted, and counted late when its
        request goes out more than `LATE` of its interval after its slot."""
        stats = self.stats
        stats["polls"] += 1
        period = block.period
        behind = now - block.due
        if behind > LATE * period:
            if behind >= period:  # slots were missed (counted as skipped): from the newest
                behind %= period
            if behind > LATE * period:
                stats["late"] += 1

    def _queue(self, line: Line) -> None:
        heapq.heappush(self._heap, (line.queued, next(self._seq), line))

    def readable(self) -> None:
        """Take the answers (and stray bytes) that came on any line."""
        for fd, _ev in self._epoll.poll(0):
            line = self._by_fd.get(fd)
            if line is not None:
                line.readable()
                line.rewake()

    def close(self) -> None:
        for line in self.lines:
            line.close()
        self._epoll.close()

    def _register(self, fd: int, line: Line, events: int = 0) -> None:
        self._epoll.register(fd, events or select.EPOLLIN)
        self._by_fd[fd] = line

    def _listen(self, fd: int, events: int) -> None:
        self._epoll.modify(fd, events)

    def _unregister(self, fd: int) -> None:
        if self._by_fd.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def _report(self, now: float) -> None:
        self._report_at = now + REPORT_EVERY
        lines = self.lines
        n_open = sum(1 for line in lines if line.transport and not line.transport.connecting)
        online = sum(1 for d in self.devices if d.online)
        error = next((line.port_error for line in lines if line.port_error), "")
        if len(lines) == 1:
            port = "open" if n_open else "closed"
        else:
            port = "open" if n_open == len(lines) else f"{n_open}/{len(lines)} open"
        if n_open:
            note = f"polling: {online}/{len(self.devices)} devices online"
            if len(lines) > 1:
                note += f", {n_open}/{len(lines)} connections"
        else:
            note = f"waiting for {lines[0].where}" if len(lines) == 1 else "no connection open"
        self.ctx.report(
            now=note,
            port=port,
            port_error=error,
            connections=len(lines),
            devices_online=online,
            skipped=sum(b.skipped for line in lines for b in line.blocks),
            errors=sum(sum(d.errors.values()) for d in self.devices),
            **self.stats,
        )

    # -- writes -----------------------------------------------------------------------
    def write(self, points: list[Point]) -> str | None:
        """Check every point of a command, then write them; None when all were written."""
        todo: list[tuple[DeviceState, RegisterConfig, Any]] = []
        for p in points:
            dev = self.by_name.get(p.node)
            if dev is None:
                return f"no device {p.node!r} on this bus"
            reg = dev.registers.get(p.type)
            if reg is None or p.key != "0":
                return f"device {p.node!r} has no register {p.type!r} (key {p.key!r})"
            if not reg.writable:
                return f"register {p.type!r} of device {p.node!r} is not writable"
            try:
                data = encode_mask(reg, p.value) if reg.masked else encode(reg, p.value)
                todo.append((dev, reg, data))
            except Refused as e:
                return f"device {p.node!r}: {e}"
        for line in {self.line_of[dev.index]: None for dev, _r, _d in todo}:
            why = line.ensure_open()
            line.rewake()
            if why is not None:
                return f"{why}; nothing written"
        try:
            return self._write(todo)
        finally:
            for line in self.lines:
                line.rewake()

    def _write(self, todo: list[tuple[DeviceState, RegisterConfig, Any]]) -> str | None:
        for dev, regs, request in _write_requests(todo):
            names = ", ".join(repr(r.name) for r in regs)
            line = self.line_of[dev.index]
            line.finish()  # the poll in flight on this line first
            if line.transport is None:
                return f"device {dev.name!r}: writing {names} failed: {line.port_error}"
            req = line.run(Request(dev, request, 1 + self.cfg.retries, time.monotonic(), None))
            if isinstance(req.error, PortError):
                if line.transport is not None:
                    line._lost(req.error)
                return f"device {dev.name!r}: writing {names} failed: {req.error}"
            if req.error is not None:
                return f"device {dev.name!r}: writing {names} failed: {req.error}"
            now = time.monotonic()
            if dev.cfg.close_connection_after_poll:
                line._hang_up(now)
            for b in line.blocks:  # read back at once
                if b.device == dev.index and any(r in b.registers for r in regs):
                    b.extra = now
        return None


def _point(node: str, type: str, value: Any, time_ns: int) -> Point:
    """A point whose names were checked when the config was loaded (device and register
    names are checked as point names there): made without checking them again, as
    the batch decoder makes the points it has checked."""
    p = Point.__new__(Point)
    p.node, p.type, p.key, p.value, p.time, p.origin = node, type, "0", value, time_ns, ""
    return p


def _names(block: Block) -> str:
    return ", ".join(r.name for r in block.registers)


def _write_requests(
    todo: list[tuple[DeviceState, RegisterConfig, Any]],
) -> list[tuple[DeviceState, list[RegisterConfig], bytes]]:
    """The requests for a checked command: consecutive coils or registers of one
    device written together (FC 15, 16), a lone coil or register alone (FC 5, 6),
    a bit or a byte of a register each on its own (FC 22)."""
    runs: list[tuple[DeviceState, list[RegisterConfig], list[Any]]] = []
    masked = []
    for dev, reg, data in todo:
        if reg.masked:
            address = reg.address - dev.cfg.base(reg.table)
            masked.append((dev, [reg], pdu.mask_write(address, *data)))
            continue
        items = [data] if isinstance(data, bool) else list(data)
        if runs:
            d, regs, acc = runs[-1]
            last = regs[-1]
            limit = pdu.MAX_WRITE[15 if reg.table == "coil" else 16]
            if (
                d is dev
                and last.table == reg.table
                and last.address + last.size == reg.address
                and len(acc) + len(items) <= limit
            ):
                regs.append(reg)
                acc += items
                continue
        runs.append((dev, [reg], items))
    out = []
    for dev, regs, acc in runs:
        start = regs[0].address - dev.cfg.base(regs[0].table)
        if regs[0].table == "coil":
            req = pdu.write_coil(start, acc[0]) if len(acc) == 1 else pdu.write_coils(start, acc)
        else:
            req = (
                pdu.write_register(start, acc[0])
                if len(acc) == 1
                else pdu.write_registers(start, acc)
            )
        out.append((dev, regs, req))
    return out + masked
