"""Actors and their Context: the Run/Stop pattern for everything long-running.

An `Actor` has two operations. `run(ctx)` blocks, does all the work including
tear-down, and returns when stopped (or raises on a critical error). `stop(err)`
returns at once and only signals `run`; it is harmless before `run`, twice, or
after `run` returned. Inside `run` one loop owns all state and waits on one
inbox, `ctx.receive(timeout)`, which returns `Stop`, a `Command`, a `Status`
(for actors that asked for one), `Readable(fd)` for a file descriptor the actor
asked to be woken by with `ctx.watch(fd)` (a device's event fd, say), or `None`
when the timeout passed.

The `Context` is the actor's only link to the runtime: its config, a logger,
`publish(points)` (buffered in an outbox, acknowledged, resent; never blocks),
`reply(command, error)`, and timers (`until`). Heartbeats to the supervisor are
sent for the actor while it waits in `receive`, so an actor that stops coming
back to `receive` for `heartbeat_timeout` is judged hung and restarted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import zmq

from .bus import Command, Outbox
from .point import Point

__all__ = ["Actor", "Context", "Stop", "Command", "Status", "Readable", "Message"]


@dataclass(slots=True)
class Stop:
    """The actor is asked to stop; `err` says why when it was not a plain stop."""

    err: BaseException | None = None


@dataclass(slots=True)
class Status:
    """A snapshot of the gateway's actors, for actors with `wants_status = True`."""

    snapshot: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Readable:
    """A file descriptor the actor watches (`Context.watch`) has data to read.

    Level-triggered: it comes again from the next `receive` until the actor has
    read what waits on `fd`.
    """

    fd: int


Message = Stop | Command | Status | Readable | None


class Actor:
    """Base class of drivers and the runtime's own actors.

    Subclasses set `Config` to a dataclass describing their config keys (filled by
    `edgert.config.decode`) and implement `run(ctx)`. Optionally `nodes(name,
    config)` (a classmethod) lists the point nodes the actor owns, so commands for
    them are routed to it; by default that is the actor's own name.
    """

    Config: ClassVar[type | None] = None
    wants_status: ClassVar[bool] = False
    uses_bus: ClassVar[bool] = True

    def __init__(self, config: Any = None, name: str = "") -> None:
        self.config = config
        self.name = name
        self._stopping: Stop | None = None
        self._ctx: Context | None = None

    def run(self, ctx: Context) -> None:
        raise NotImplementedError

    def stop(self, err: BaseException | None = None) -> None:
        """Ask `run` to return; returns at once. Safe before, during and after `run`."""
        if self._stopping is None:
            self._stopping = Stop(err)
        ctx = self._ctx
        if ctx is not None:
            ctx.wake()


class Context:
    """What an actor's `run` sees of the world. One per run, owned by its loop.

    `link` is the duplex connection to the supervisor (None when the actor runs
    in-process, e.g. in a thread or a test); `outbox` carries points to the
    bridge (None for actors that publish nothing).
    """

    def __init__(
        self,
        actor: Actor,
        *,
        name: str,
        config: Any = None,
        outbox: Outbox | None = None,
        link: Any = None,
        heartbeat_interval: float = 1.0,
        log: logging.Logger | None = None,
    ) -> None:
        self.actor = actor
        self.name = name
        self.config = config
        self.log = log or logging.getLogger(f"edgert.actor.{name}")
        self.outbox = outbox
        self.link = link
        self.heartbeat_interval = heartbeat_interval
        self._queue: deque[Message] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        self._next_hb = 0.0
        self._extra: dict[str, Any] = {}
        self._parent_gone = False
        self._watched: set[int] = set()
        self._poll = zmq.Poller()  # handles the edge-triggered FD of zmq sockets correctly
        self._poll.register(self._wake_r, zmq.POLLIN)
        if link is not None:
            self._poll.register(link.fileno(), zmq.POLLIN)
        if outbox is not None:
            self._poll.register(outbox.sock, zmq.POLLIN)
        actor._ctx = self

    # -- lifecycle ---------------------------------------------------------------
    def close(self) -> None:
        self.actor._ctx = None
        self._watched.clear()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass

    # -- time --------------------------------------------------------------------
    @staticmethod
    def now() -> float:
        """The monotonic clock that timers use (seconds)."""
        return time.monotonic()

    def until(self, deadline: float | None) -> float | None:
        """Seconds from now to the monotonic `deadline` (never negative); None stays None."""
        if deadline is None:
            return None
        return max(0.0, deadline - time.monotonic())

    # -- the inbox ---------------------------------------------------------------
    def watch(self, fd: int) -> None:
        """Make `receive` also return `Readable(fd)` while `fd` has data to read.

        For an actor whose device signals through a file descriptor (an event fd,
        a socket), so its one loop waits on the device and the inbox together.
        The actor owns `fd`: call `unwatch(fd)` before closing it.
        """
        if fd not in self._watched:
            self._poll.register(fd, zmq.POLLIN)
            self._watched.add(fd)

    def unwatch(self, fd: int) -> None:
        """Stop watching `fd` (harmless when it is not watched)."""
        if fd in self._watched:
            self._watched.discard(fd)
            self._poll.unregister(fd)
            self._queue = deque(m for m in self._queue if m != Readable(fd))

    def receive(self, timeout: float | None = None) -> Message:
        """Wait up to `timeout` seconds (None: forever) for the next message.

        Returns Stop, a Command, a Status, Readable(fd) for a watched fd with
        data, or None when the timeout passed. Publishing is flushed, acks read
        and heartbeats sent while waiting.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        polled = False  # look at the inputs at least once, even with timeout=0
        while True:
            msg = self._next_message()
            if msg is not None:
                return msg
            wait = self._service()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0 and polled:
                return None
            for t in (left, wait):
                if t is not None:
                    left = t if left is None else min(left, t)
            ms = -1 if left is None else max(0, int(left * 1000 + 0.999))
            ready = self._poll.poll(ms)
            self._drain_inputs()
            if self._watched:
                self._queue_readable(fd for fd, _ in ready if fd in self._watched)
            polled = True

    async def areceive(self, timeout: float | None = None) -> Message:
        """`receive` for actors whose loop is asyncio: waits without blocking the loop."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else time.monotonic() + timeout
        fds = [self._wake_r]
        if self.link is not None:
            fds.append(self.link.fileno())
        if self.outbox is not None:
            fds.append(self.outbox.sock.getsockopt(zmq.FD))
        while True:
            msg = self._next_message()
            if msg is not None:
                return msg
            wait = self._service()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            for t in (left, wait):
                if t is not None:
                    left = t if left is None else min(left, t)
            if self.outbox is not None and self.outbox.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                left = 0.0
            ready = loop.create_future()
            for fd in fds:
                loop.add_reader(fd, settle_future, ready)
            for fd in self._watched:
                loop.add_reader(fd, settle_future, ready)
            try:  # not wait_for: on 3.11 it can swallow a cancellation racing the wait's end
                async with asyncio.timeout(left):
                    await ready
            except TimeoutError:
                pass
            finally:
                for fd in fds:
                    loop.remove_reader(fd)
                for fd in self._watched:
                    loop.remove_reader(fd)
            self._drain_inputs()
            if self._watched:
                self._queue_readable(_readable_now(self._watched))

    def _queue_readable(self, fds: Iterable[int]) -> None:
        for fd in fds:
            msg = Readable(fd)
            if msg not in self._queue:
                self._queue.append(msg)

    def _next_message(self) -> Message:
        if self._queue:
            return self._queue.popleft()
        if self.actor._stopping is not None:
            return self.actor._stopping
        return None

    def _service(self) -> float | None:
        """Flush, resend and heartbeat; returns seconds until this needs doing again."""
        now = time.monotonic()
        waits: list[float] = []
        if self.outbox is not None:
            # acks open the window even for a loop that never waits (receive(timeout=0))
            self._queue.extend(self.outbox.on_readable())
            self.outbox.tick(now)  # seals a batch whose linger is over, resends
            d = self.outbox.next_deadline()
            if d is not None:
                waits.append(max(0.0, d - now))
        if self.link is not None:
            if now >= self._next_hb:
                self._send_link("hb", self.stats())
                self._next_hb = now + self.heartbeat_interval
            waits.append(max(0.0, self._next_hb - now))
        return min(waits) if waits else None

    def _drain_inputs(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass
        if self.link is not None and not self._parent_gone:
            from .process import decode_link

            try:
                while self.link.poll():
                    msg = decode_link(self.link.recv_bytes())
                    if msg[0] == "stop":
                        self.actor.stop()
                    elif msg[0] == "status" and self.actor.wants_status:
                        self._queue.append(Status(msg[1]))
            except (EOFError, OSError):
                self._parent_gone = True
                self.log.warning("supervisor gone: stopping")
                self.actor.stop()
                self._poll.unregister(self.link.fileno())
        if self.outbox is not None:
            for cmd in self.outbox.on_readable():
                self._queue.append(cmd)

    # -- output ------------------------------------------------------------------
    def publish(self, points: list[Point] | Point) -> None:
        """Queue points for the bridge. Never blocks; they are acknowledged and resent."""
        if isinstance(points, Point):
            points = [points]
        if self.outbox is None:
            raise RuntimeError(f"actor {self.name!r} has no bus to publish on")
        self.outbox.publish(points)

    def reply(self, cmd: Command, error: str | None = None) -> None:
        """Answer a command: `error=None` means it was applied."""
        if self.outbox is not None:
            self.outbox.reply(cmd.id, error)

    def report(self, **stats: Any) -> None:
        """Add figures of the actor's own to its heartbeats (shown by `edgert status`)."""
        self._extra.update(stats)

    def stats(self) -> dict[str, Any]:
        s: dict[str, Any] = dict(self._extra)
        if self.outbox is not None:
            s.update(self.outbox.stats())
        return s

    def _send_link(self, kind: str, data: Any = None) -> None:
        if self.link is None or self._parent_gone:
            return
        from .process import encode_link

        try:
            self.link.send_bytes(encode_link(kind, data))
        except OSError:
            self._parent_gone = True
            self.actor.stop()


def _readable_now(fds: Iterable[int]) -> list[int]:
    p = select.poll()
    for fd in fds:
        p.register(fd, select.POLLIN)
    return [fd for fd, _ in p.poll(0)]


def settle_future(fut: asyncio.Future) -> None:
    """Resolve `fut` with None unless it is done already (a reader callback for waits)."""
    if not fut.done():
        fut.set_result(None)
