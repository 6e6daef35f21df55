"""The local point bus: ZeroMQ frames between actor processes and the bridge.

Every actor holds one DEALER socket (routing id = its name) connected to the
bridge's ROUTER at `ipc://<runtime_dir>/bus.sock`. Frames are msgpack arrays:

    actor -> bridge   ["P", epoch, seq, first, [maps]]  a batch of points
                      ["R", cmd_id, ok, error]          the answer to a command
    bridge -> actor   ["A", epoch, seq]                 every batch <= seq is safe (spooled)
                      ["C", cmd_id, [point maps]]       a command for the actor

`epoch` is new each time an actor process starts; `seq` counts its batches from 1;
`first` is the oldest seq the sender still holds. Acks are cumulative. The
receiver accepts a batch only when `seq == last + 1`, or when `seq == first >
last + 1` (the sender dropped the batches between, and counted them); it acks
again anything <= last, so a lost ack costs a resend, never a duplicate, and
points stay in order per sender. `accepts(last, seq, first)` is that rule. The sender keeps every unacknowledged
batch in its `Outbox` (bounded: when full, the oldest points are dropped and
counted) and resends from the oldest one when no ack came for `resend_after`
seconds (go-back-N). No pickle anywhere; every frame is size-limited msgpack and a
malformed one is counted, logged and skipped.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq

from .point import MAX_BATCH_POINTS, BadBatch, Point, points_from_maps, unpack_limited, valid_name

__all__ = [
    "Command",
    "Outbox",
    "bus_endpoint",
    "new_epoch",
    "encode_frame",
    "decode_frame",
    "BadFrame",
    "accepts",
]

log = logging.getLogger("edgert.bus")


_PACK = functools.partial(msgpack.packb, use_bin_type=True)
_P_HEADER = b"\x95"  # msgpack fixarray of 5: a P frame is built from pre-packed parts


def accepts(last: int, seq: int, first: int) -> bool:
    """The receiver's rule: is batch `seq` (sender holds from `first`) next after `last`?"""
    return seq == last + 1 or (seq == first and first > last + 1)


class BadFrame(ValueError):
    """A frame on the bus that is not one of the known, well-formed kinds."""


def bus_endpoint(runtime_dir: os.PathLike[str] | str) -> str:
    return f"ipc://{os.fspath(runtime_dir)}/bus.sock"


def new_epoch(name: str) -> str:
    return f"{name}.{os.getpid()}.{os.urandom(4).hex()}"


def encode_frame(*parts: Any) -> bytes:
    return msgpack.packb(list(parts), use_bin_type=True)


def decode_frame(data: bytes) -> tuple[Any, ...]:
    """Decode and check one bus frame; raises BadFrame naming what is wrong.

    Returns ("P", epoch, seq, first, [Point]), ("R", cmd_id, ok, error),
    ("A", epoch, seq) or ("C", cmd_id, [Point]).
    """
    try:
        obj = unpack_limited(data)
    except BadBatch as e:
        raise BadFrame(str(e)) from None
    if not isinstance(obj, list) or not obj or not isinstance(obj[0], str):
        raise BadFrame("a frame must be an array starting with its kind")
    kind = obj[0]
    try:
        if kind == "P" and len(obj) == 5:
            _, epoch, seq, first, maps = obj
            _check_str_int(epoch, seq)
            _check_str_int(epoch, first)
            return ("P", epoch, seq, first, _points(maps))
        if kind == "A" and len(obj) == 3:
            _, epoch, seq = obj
            _check_str_int(epoch, seq)
            return ("A", epoch, seq)
        if kind == "C" and len(obj) == 3:
            _, cmd_id, maps = obj
            if not isinstance(cmd_id, int) or isinstance(cmd_id, bool):
                raise BadFrame("command id must be an integer")
            return ("C", cmd_id, _points(maps))
        if kind == "R" and len(obj) == 4:
            _, cmd_id, ok, error = obj
            if (
                not isinstance(cmd_id, int)
                or not isinstance(ok, bool)
                or not isinstance(error, str)
            ):
                raise BadFrame("a reply is [R, int id, bool ok, str error]")
            return ("R", cmd_id, ok, error)
    except BadBatch as e:
        raise BadFrame(f"frame {kind!r}: {e}") from None
    raise BadFrame(f"unknown frame kind {kind!r} with {len(obj)} parts")


_SCALAR_TYPES = frozenset({float, int, str, bool, type(None)})
_new_point = Point.__new__


def _points(maps: Any) -> list[Point]:
    """`points_from_maps`, faster for the common case of well-formed maps of exact types.

    Anything this loop does not accept at once goes to `points_from_maps`, which
    decides (and names the problem): the checks are exactly as strict.
    """
    if type(maps) is not list or len(maps) > MAX_BATCH_POINTS:
        return points_from_maps(maps)
    out: list[Point] = []
    append = out.append
    for m in maps:
        if type(m) is not dict or len(m) != 6:
            return points_from_maps(maps)
        try:
            node, typ, key = m["node"], m["type"], m["key"]
            value, t, origin = m["value"], m["time"], m["origin"]
        except KeyError:
            return points_from_maps(maps)
        if not (
            valid_name(node)
            and valid_name(typ)
            and valid_name(key)
            and type(value) in _SCALAR_TYPES
            and type(t) is int
            and t >= 0
            and type(origin) is str
        ):
            return points_from_maps(maps)
        p = _new_point(Point)
        p.node, p.type, p.key, p.value, p.time, p.origin = node, typ, key, value, t, origin
        append(p)
    return out


def _check_str_int(epoch: Any, seq: Any) -> None:
    if not isinstance(epoch, str) or len(epoch) > 200:
        raise BadFrame("epoch must be a short string")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise BadFrame("seq must be a non-negative integer")


@dataclass(slots=True)
class Command:
    """A batch of points to write, sent to the actor that owns their node."""

    id: int
    points: list[Point]


class Outbox:
    """The sending side of the bus inside an actor process: buffer, send, resend.

    Not thread-safe: it belongs to the one loop of the actor that owns it. The
    socket is created and closed by the Context that owns this outbox.
    """

    def __init__(
        self,
        sock: zmq.Socket,
        epoch: str,
        max_points: int = 100_000,
        resend_after: float = 2.0,
        max_batch: int = 1000,
        window: int = 20_000,
    ) -> None:
        self.sock = sock
        self.epoch = epoch
        self.max_points = max_points
        self.resend_after = resend_after
        self.max_batch = max_batch
        self.window = window  # points sent and not yet acknowledged, at most (flow control)
        self._pending: list[dict[str, Any]] = []
        self._unacked: deque[tuple[int, bytes, int]] = deque()
        self._flight: deque[tuple[int, int]] = deque()  # (seq, points) sent, not yet acked
        self._flight_points = 0  # including batches trimmed since they were sent
        self._seq = 0
        self._sent_upto = 0
        self._acked = 0
        self._last_progress = time.monotonic()
        self.points_out = 0  # points published by the actor
        self.points_acked = 0
        self.buffered = 0  # points held, not yet acknowledged
        self.dropped = 0  # points dropped because the outbox was full
        self.bad_frames = 0

    # -- sending -----------------------------------------------------------------
    def publish(self, points: list[Point]) -> None:
        for p in points:
            self._pending.append(p.to_map())
        self.points_out += len(points)
        self.buffered += len(points)
        if len(self._pending) >= self.max_batch:
            self.flush()

    def flush(self) -> None:
        """Seal pending points into batches and send what the socket takes now."""
        while self._pending:
            chunk = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            self._seq += 1
            self._unacked.append((self._seq, _PACK(chunk), len(chunk)))
        self._trim()
        self._pump()

    def _trim(self) -> None:
        while self.buffered > self.max_points and self._unacked:
            seq, _, n = self._unacked.popleft()
            self.buffered -= n
            self.dropped += n
            self._acked = max(self._acked, seq)
            self._sent_upto = max(self._sent_upto, seq)

    def _frame(self, seq: int, packed: bytes) -> bytes:
        first = self._unacked[0][0]
        return _P_HEADER + _PACK("P") + _PACK(self.epoch) + _PACK(seq) + _PACK(first) + packed

    def _pump(self) -> None:
        for seq, packed, n in self._unacked:
            if seq <= self._sent_upto:
                continue
            if self._flight_points >= self.window:
                return  # more would only queue in the pipe and time out into resends
            try:
                self.sock.send(self._frame(seq, packed), zmq.NOBLOCK)
            except zmq.Again:
                return
            self._sent_upto = seq
            self._flight.append((seq, n))
            self._flight_points += n

    def tick(self, now: float | None = None) -> None:
        """Resend from the oldest unacknowledged batch when acks stopped coming."""
        now = time.monotonic() if now is None else now
        if self._unacked and now - self._last_progress >= self.resend_after:
            self._sent_upto = self._acked
            self._last_progress = now
            self._flight.clear()  # what was in flight is taken as lost
            self._flight_points = 0
        self._pump()

    def next_deadline(self) -> float | None:
        if not self._unacked:
            return None
        return self._last_progress + self.resend_after

    # -- receiving -----------------------------------------------------------------
    def on_readable(self) -> list[Command]:
        """Read every waiting frame: apply acks, return the commands that came."""
        cmds: list[Command] = []
        while True:
            try:
                data = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                frame = decode_frame(data)
            except BadFrame as e:
                self.bad_frames += 1
                log.warning("bus: dropped a malformed frame: %s", e)
                continue
            if frame[0] == "A":
                self._ack(frame[1], frame[2])
            elif frame[0] == "C":
                cmds.append(Command(frame[1], frame[2]))
            else:
                self.bad_frames += 1
                log.warning("bus: unexpected frame kind %r from the bridge", frame[0])
        self._pump()
        return cmds

    def _ack(self, epoch: str, seq: int) -> None:
        if epoch != self.epoch:
            return
        progressed = False
        while self._flight and self._flight[0][0] <= seq:
            self._flight_points -= self._flight.popleft()[1]
            progressed = True  # the bridge is taking batches, even ones trimmed here since
        while self._unacked and self._unacked[0][0] <= seq:
            _, _, n = self._unacked.popleft()
            self.buffered -= n
            self.points_acked += n
            progressed = True
        if seq > self._acked:
            self._acked = seq
            self._sent_upto = max(self._sent_upto, seq)
        if progressed:
            self._last_progress = time.monotonic()

    def reply(self, cmd_id: int, error: str | None) -> None:
        frame = encode_frame("R", cmd_id, error is None, error or "")
        try:
            self.sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            log.warning("bus: reply to command %d could not be sent (bridge away)", cmd_id)

    def stats(self) -> dict[str, int]:
        return {
            "points_out": self.points_out,
            "buffered": self.buffered + len(self._pending),
            "dropped": self.dropped,
            "bad_frames": self.bad_frames,
        }

    def drain(self, timeout: float) -> bool:
        """Flush and wait up to `timeout` for every batch to be acknowledged (used at stop)."""
        self.flush()
        deadline = time.monotonic() + timeout
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while self._unacked:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if poller.poll(min(left, self.resend_after) * 1000):
                self.on_readable()
            self.tick()
        return True
