"""The Context: what an actor's `run` sees of the runtime, and its one inbox.

A `Context[C]` gives a driver exactly what it uses: its `name`, its typed
`config` (`C`), a `log`, the inbox (`receive`, or `areceive` in an asyncio
loop), `publish(points)` (buffered in an outbox, acknowledged, resent; never
blocks; `publish_series` for many values of one point key at once),
`reply(command, error)`, `report(...)` for the figures `edgert status` shows (`now="..."` fills its NOW column), timers (`now`, `until`, and
`edgert.every` for periodic ones) and `watch`/`unwatch` of a device's fd.

Everything else is the runtime's plumbing and private: the link to the
supervisor (heartbeats are sent for the actor while it waits in `receive`, so
an actor that stops coming back to `receive` for `heartbeat_timeout` is judged
hung and restarted), the outbox, the wake pipe, the stats the heartbeats carry.
The runtime creates one Context per run of an actor and closes it after.
`statuses(ctx)` is the inbox of the asyncio runtime actors (bridge, fleet):
the supervisor's snapshots, until Stop.
"""

from __future__ import annotations

import logging
import math
import os
import select
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Container, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic

import zmq

from .actor import Actor, C, Message, Readable, Status, Stop
from .bus import Command, Outbox
from .point import Point, Value

if TYPE_CHECKING:
    import asyncio

__all__ = ["Context", "statuses", "settle_future", "ACK_LAG", "HB_EARLY", "HB_PHASE"]

HB_EARLY = 0.25  # a heartbeat due within this share of its interval goes with a wake-up
# seconds after the instants of the host's grid that heartbeats fall on: after the
# batches that polls on the same grid send, so that an actor woken by those (the
# bridge) sends its heartbeat with them (`beat`) instead of in a wake-up of its own
HB_PHASE = 0.1
# a change of state (`report(now=...)`, the bridge's connection) goes to the supervisor
# at once, in a heartbeat of its own, unless one went less than this long ago
HB_PROMPT_GAP = 0.2
ACK_LAG = 0.02  # seconds: an actor due back within this long is not woken for bus frames alone
_NONE: frozenset[int] = frozenset()


class Context(Generic[C]):
    """What an actor's `run` sees of the world. One per run, owned by its loop.

    Made by the runtime: `link` is the duplex connection to the supervisor
    (None when the actor runs in-process, in a thread or a test); `outbox`
    carries points to the bridge (None for actors that publish nothing).
    """

    def __init__(
        self,
        actor: Actor[C],
        *,
        name: str,
        config: C = None,  # type: ignore[assignment]
        outbox: Outbox | None = None,
        link: Any = None,
        heartbeat_interval: float = 1.0,
        log: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.config: C = config
        self.log = log or logging.getLogger(f"edgert.actor.{name}")
        self._actor = actor
        self._outbox = outbox
        self._link = link
        self._heartbeat_interval = heartbeat_interval
        self._queue: deque[Message] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        self._next_hb = 0.0
        self._last_hb = -HB_PROMPT_GAP
        self._atimeout: Any = None  # the timeout of an `areceive` waiting (see `beat`)
        self._adeadline: float | None = None  # ... and that areceive's own deadline
        self._extra: dict[str, Any] = {}
        # a runtime actor's figures, made when a heartbeat goes rather than at every
        # turn of its loop (the bridge's: three dozen, read from its parts)
        self._figures: Callable[[], dict[str, Any]] | None = None
        self._parent_gone = False
        self._watched: set[int] = set()
        self._decode_link: Any = None
        self._encode_link: Any = None
        # The waits are the kernel's poll on plain fds, one system call each: the zmq
        # sockets by their FD, which signals a new frame only while the socket is
        # `quiet` (`Outbox.quiet`), so a socket is asked (EVENTS) before a wait on its
        # FD only when a send or a receive since may have taken in such a signal.
        # _poll_lazy: the wake pipe, the link, watched fds (acks and the bus wait for
        # the wake-up); _poll: and the bus; _poll_acks: and the ack socket; _peek:
        # after a wait that left out the bus or the ack socket, one look at both.
        self._fd_bus = self._fd_acks = -1
        self._poll_lazy = select.poll()
        self._poll = select.poll()
        self._poll_acks = select.poll()
        self._peek = select.poll()
        self._polls: tuple[Any, ...] = (self._poll, self._poll_acks, self._poll_lazy)
        for poll in self._polls:
            poll.register(self._wake_r, select.POLLIN)
            if link is not None:
                poll.register(link.fileno(), select.POLLIN)
        if outbox is not None:
            self._fd_bus = outbox.sock.getsockopt(zmq.FD)
            for poll in (self._poll, self._poll_acks, self._peek):
                poll.register(self._fd_bus, select.POLLIN)
            if outbox.acks is not None:
                self._fd_acks = outbox.acks.getsockopt(zmq.FD)
                for poll in (self._poll_acks, self._peek):
                    poll.register(self._fd_acks, select.POLLIN)
        actor._ctx = self

    # -- lifecycle (the runtime's) ---------------------------------------------------
    def _close(self) -> None:
        self._actor._ctx = None
        self._watched.clear()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _wake(self) -> None:
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
            for poll in self._polls:
                poll.register(fd, select.POLLIN)
            self._watched.add(fd)

    def unwatch(self, fd: int) -> None:
        """Stop watching `fd` (harmless when it is not watched)."""
        if fd in self._watched:
            self._watched.discard(fd)
            for poll in self._polls:
                poll.unregister(fd)
            self._queue = deque(m for m in self._queue if m != Readable(fd))

    def receive(self, timeout: float | None = None) -> Message:
        """Wait up to `timeout` seconds (None: forever) for the next message.

        Returns Stop, a Command, a Status, Readable(fd) for a watched fd with
        data, or None when the timeout passed. Publishing is flushed, acks read
        and heartbeats sent while waiting.

        Acks are looked for at every wake-up, but wake the actor only when the
        outbox wants one before the actor's deadline (`Outbox.wants_acks`:
        points lingering for it, credit running low, a resend due): a driver
        polling once a second wakes for its poll, and reads there the ack of
        its last batch. An actor that asked to be back within `ACK_LAG` is not
        woken for the bridge's frames at all (commands too): they are read when
        it wakes anyway, so a driver that polls every few milliseconds wakes
        once per tick. Unless published points linger in the outbox for an
        ack: that ack wakes it.

        Each wait is one poll of plain fds. A ZeroMQ socket is asked (EVENTS:
        in libzmq a getpid and a poll each) only when a send or a receive on it
        since it was last found empty may have hidden a frame from its FD
        (`Outbox.quiet`): at a tick the bus after the batch went, the ack
        socket when its FD fired. A socket left out of the wait is looked at
        by its FD after it, both in one poll.
        """
        now = time.monotonic()  # the one clock reading of each turn of the loop
        deadline = None if timeout is None else now + timeout
        polled = False  # look at the inputs at least once, even with timeout=0
        outbox = self._outbox
        while True:
            msg = self._next_message()
            if msg is not None:
                return msg
            wait = self._service(now)
            left = None if deadline is None else deadline - now
            if left is not None and left <= 0:
                if polled:
                    return None
                poll = self._poll_acks  # timeout=0: one look at everything
            elif outbox is None:
                poll = self._poll_lazy
            elif left is not None and left <= ACK_LAG and not outbox.lingering():
                poll = self._poll_lazy  # no wake-up for the bus: it is read on waking
            elif outbox.wants_acks(deadline):
                poll = self._poll_acks
            else:
                poll = self._poll
            if outbox is not None:
                # a socket waited on by its FD must be quiet: ask it first if it may not
                # be. The bus is asked even for a wait without it, while the send that
                # left it so has just run (warm): after the wait, its FD tells
                got = False
                if not outbox.quiet:
                    cmds = outbox.read_bus()
                    self._queue.extend(cmds)
                    got = bool(cmds) or not outbox.quiet  # an ack there sent a batch
                if poll is self._poll_acks and not outbox.acks_quiet and outbox.read_acks():
                    got = True
                if got:  # what came may change what to do (a command, a batch to send)
                    now = time.monotonic()
                    continue
            for t in (left, wait):
                if t is not None:
                    left = t if left is None else min(left, t)
            ms = -1 if left is None else max(0, int(left * 1000 + 0.999))
            ready = poll.poll(ms)
            polled = True
            now = time.monotonic()
            fds = {fd for fd, _ in ready} if ready else _NONE
            if fds:
                self._drain_inputs(fds)
                if self._watched:
                    self._queue_readable(fd for fd, _ in ready if fd in self._watched)
            if outbox is not None:
                self._read_bus(poll, fds)

    async def areceive(self, timeout: float | None = None) -> Message:
        """`receive` for actors whose loop is asyncio: waits without blocking the loop."""
        import asyncio

        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else time.monotonic() + timeout
        fds = [self._wake_r]
        if self._link is not None:
            fds.append(self._link.fileno())
        if self._outbox is not None:
            fds.append(self._outbox.sock.getsockopt(zmq.FD))
            if self._outbox.acks is not None:
                fds.append(self._outbox.acks.getsockopt(zmq.FD))
        while True:
            msg = self._next_message()
            if msg is not None:
                return msg
            now = time.monotonic()
            wait = self._service(now)
            left = None if deadline is None else deadline - now
            if left is not None and left <= 0:
                return None
            for t in (left, wait):
                if t is not None:
                    left = t if left is None else min(left, t)
            if self._outbox is not None and (
                self._outbox.readable() or self._outbox.acks_waiting()
            ):
                left = 0.0
            ready = loop.create_future()
            for fd in fds:
                loop.add_reader(fd, settle_future, ready)
            for fd in self._watched:
                loop.add_reader(fd, settle_future, ready)
            try:  # not wait_for: on 3.11 it can swallow a cancellation racing the wait's end
                async with asyncio.timeout(left) as self._atimeout:
                    self._adeadline = deadline
                    await ready
            except TimeoutError:
                pass
            finally:
                self._atimeout = None
                for fd in fds:
                    loop.remove_reader(fd)
                for fd in self._watched:
                    loop.remove_reader(fd)
            self._drain_inputs()
            if self._outbox is not None:
                self._queue.extend(self._outbox.read_bus())
                self._outbox.read_acks()
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
        if self._actor._stopping is not None:
            return self._actor._stopping
        return None

    def _service(self, now: float) -> float | None:
        """Flush, resend and heartbeat; returns seconds until this needs doing again."""
        wait = None
        if self._outbox is not None:
            self._outbox.tick(now)  # seals a batch whose linger is over, resends
            d = self._outbox.next_deadline()
            if d is not None:
                wait = max(0.0, d - now)
        if self._link is not None:
            self._beat(now)
            hb = max(0.0, self._next_hb - now)
            wait = hb if wait is None or hb < wait else wait
        return wait

    def _beat(self, now: float) -> bool:
        """Send the heartbeat if it is due soon; True if it went."""
        # awake anyway and the heartbeat due soon: send it now rather than wake
        # for it alone (a driver polling once a second wakes once, not twice)
        iv = self._heartbeat_interval
        if now < self._next_hb - iv * HB_EARLY:
            return False
        self._send_hb(now)
        # the next on the host's grid of the interval (as `every`'s slots), HB_PHASE
        # after it: the actors' heartbeats reach the supervisor together, in one wake-up
        self._next_hb = (math.floor((now - HB_PHASE + iv * HB_EARLY) / iv) + 1) * iv + HB_PHASE
        return True

    def _prompt(self) -> None:
        """A change `edgert status` should show without waiting for the next heartbeat:
        send one now, unless one went less than HB_PROMPT_GAP ago (then the next on the
        grid carries it). The grid's schedule is left as it is."""
        now = time.monotonic()
        if self._link is not None and now - self._last_hb >= HB_PROMPT_GAP:
            self._send_hb(now)

    def _send_hb(self, now: float) -> None:
        self._send_link("hb", self._stats())
        self._last_hb = now

    def beat(self) -> None:
        """For a runtime actor awake in another task of its asyncio loop (the bridge's
        bus): send the heartbeat now if it is due soon, and move the timeout of the
        `areceive` waiting meanwhile to the next one, so that the loop does not wake
        for the heartbeat alone."""
        if self._link is None or not self._beat(time.monotonic()):
            return
        t = self._atimeout
        # an expired one (its end came in this turn of the loop, its task not yet
        # resumed) is left alone: that wait ends anyway, and asyncio refuses to move it
        if t is not None and not t.expired():
            when = [self._next_hb]
            if self._adeadline is not None:
                when.append(self._adeadline)
            if self._outbox is not None and (d := self._outbox.next_deadline()) is not None:
                when.append(d)
            t.reschedule(min(when))

    def _drain_inputs(self, ready: Container[int] | None = None) -> None:
        """Read what came in on the wake pipe and the link when `ready` (the fds a poll
        reported; None: look at each) names them."""
        if ready is None or self._wake_r in ready:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        link = self._link
        if link is not None and not self._parent_gone and (ready is None or link.fileno() in ready):
            if self._decode_link is None:
                from .proc.link import decode_link

                self._decode_link = decode_link
            try:
                while link.poll():
                    msg = self._decode_link(link.recv_bytes())
                    if msg[0] == "stop":
                        self._actor.stop()
                    elif msg[0] == "status" and self._actor.wants_status:
                        self._queue.append(Status(msg[1]))
            except (EOFError, OSError):
                self._parent_gone = True
                self.log.warning("supervisor gone: stopping")
                self._actor.stop()
                for poll in self._polls:
                    poll.unregister(link.fileno())

    def _read_bus(self, waited: Any, ready: Container[int]) -> None:
        """After the wait on `waited`, which reported `ready`: apply the acks and queue
        the commands that came. A socket whose FD was waited on (it was quiet then) is
        read only when the FD fired; one left out of the wait is asked when it is not
        quiet, else looked at by its FD with the other (one poll for both)."""
        outbox = self._outbox
        assert outbox is not None
        bus_in = waited is not self._poll_lazy
        acks_in = waited is self._poll_acks
        look_bus = look_acks = False
        if bus_in and self._fd_bus in ready or not (bus_in or outbox.quiet):
            self._queue.extend(outbox.read_bus())
        elif not bus_in:
            look_bus = True
        if outbox.acks is not None:
            if acks_in and self._fd_acks in ready or not (acks_in or outbox.acks_quiet):
                outbox.read_acks()
            elif not acks_in:
                look_acks = True
        if look_bus or look_acks:
            fds = {fd for fd, _ in self._peek.poll(0)}
            if look_bus and self._fd_bus in fds:
                self._queue.extend(outbox.read_bus())
            if look_acks and self._fd_acks in fds:
                outbox.read_acks()

    # -- output ------------------------------------------------------------------
    def publish(self, points: list[Point] | Point) -> None:
        """Queue points for the bridge. Never blocks; they are acknowledged and resent."""
        outbox = self._outbox
        if outbox is None:
            raise RuntimeError(f"actor {self.name!r} has no bus to publish on")
        if isinstance(points, Point):
            outbox.publish_one(points)
        else:
            outbox.publish(points)
        self._nudge()

    def publish_series(
        self,
        type: str,  # noqa: A002 - a point's field
        values: Sequence[Value],
        times: Sequence[int] | None = None,
        *,
        key: str = "0",
        node: str | None = None,
        origin: str = "",
    ) -> None:
        """Queue many values of one point key at once (a block of samples).

        The same as `publish([Point(node, type, key, v, t, origin) for v, t in
        zip(values, times)])`, for a fraction of the cost: no `Point` is made per
        value and the names are checked once. `node` is the actor's name unless
        given; `times` are each value's nanoseconds since the epoch (None: now,
        for all). Raises ValueError for a name that is not one, or when `values`
        and `times` differ in length.
        """
        outbox = self._outbox
        if outbox is None:
            raise RuntimeError(f"actor {self.name!r} has no bus to publish on")
        if times is None:
            times = [time.time_ns()] * len(values)
        outbox.publish_series(self.name if node is None else node, type, key, values, times, origin)
        self._nudge()

    def room(self) -> int:
        """Points `publish` takes now without waiting for the bridge's credit.

        A producer that may choose its pace (a simulator at full speed) makes
        at most this many points, and otherwise waits in `receive`, instead of
        making points the outbox would drop. 0 when the actor has no bus.
        """
        return self._outbox.room() if self._outbox is not None else 0

    def reply(self, cmd: Command, error: str | None = None) -> None:
        """Answer a command: `error=None` means it was applied."""
        if self._outbox is not None:
            self._outbox.reply(cmd.id, error)
            self._nudge()

    def _nudge(self) -> None:
        """Another task of an asyncio actor's loop published or replied while `areceive`
        waits: wake it. A send may have taken in the notice of a frame without the
        bus's FD showing it, and new points may be due before that wait ends."""
        if self._atimeout is not None:
            self._wake()

    def report(self, *, now: str | None = None, **figures: Any) -> None:
        """Add figures of the actor's own to its heartbeats (`edgert status` shows them).

        `now` is a short note on the actor's present state ("polling 3 devices",
        "waiting for /dev/ttyUSB0"), shown in the NOW column; `now=""` clears it.
        A new `now` reaches the supervisor at once, not with the next heartbeat.
        The figures (counters, values) are in `edgert status --json` under "stats".
        A figure keeps its value until reported again.
        """
        changed = now is not None and self._extra.get("now") != now
        if now is not None:
            self._extra["now"] = now
        self._extra.update(figures)
        if changed:
            self._prompt()

    def _stats(self) -> dict[str, Any]:
        s: dict[str, Any] = dict(self._extra)
        if self._figures is not None:
            s.update(self._figures())
        if self._outbox is not None:
            s.update(self._outbox.stats())
        return s

    def _send_link(self, kind: str, data: Any = None) -> None:
        if self._link is None or self._parent_gone:
            return
        if self._encode_link is None:
            from .proc.link import encode_link

            self._encode_link = encode_link
        try:
            self._link.send_bytes(self._encode_link(kind, data))
        except OSError:
            self._parent_gone = True
            self._actor.stop()


def _readable_now(fds: Iterable[int]) -> list[int]:
    p = select.poll()
    for fd in fds:
        p.register(fd, select.POLLIN)
    return [fd for fd, _ in p.poll(0)]


async def statuses(ctx: Context) -> AsyncIterator[dict[str, Any]]:
    """The supervisor's snapshots (`Status`) an asyncio runtime actor receives, until
    `Stop`, which ends the iteration; anything else in its inbox is not for it."""
    while True:
        msg = await ctx.areceive()
        match msg:
            case Stop():
                return
            case Status():
                yield msg.snapshot


def settle_future(fut: asyncio.Future[None]) -> None:
    """Resolve `fut` with None unless it is done already (a reader callback for waits)."""
    if not fut.done():
        fut.set_result(None)
