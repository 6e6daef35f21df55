"""The sending side of the bus, inside an actor process: coalesce, send, resend.

Points published one at a time are coalesced in time, Nagle-style: a point
published while nothing is in flight goes at the end of the owner's turn (the
next `tick`, which the Context runs before its loop waits), together with every
point published in that same turn: no added latency when the path is idle, and
a polling driver's points of one poll make one batch. While a batch is in
flight, new points wait for its ack, for at most `linger` (5 ms by default)
after the last batch was sent, or until `max_batch` points wait, whichever
comes first: a driver sends at most one batch per `linger` while the bridge or
NATS is busy, so every per-batch cost (frame, ack, publish) is shared by many
points, and a driver that polls less often than that (every 10 ms, say) never
waits for an ack at all: its points leave at the end of its turn, however late
the ack of its previous batch is. When acks are slow (NATS down: the bridge
acks once a spool commit is in, about once a second; or the window half full)
the linger grows with the age of the oldest batch in flight, up to
`max_linger` (0.25 s): a slow path gets a few large batches, not hundreds of
small ones a second; a healthy path keeps `linger`, even when one ack is some
tens of milliseconds late (under `slow_ack`, 0.1 s), and a linger grown while
the bridge stalled shrinks with the first ack after it.
The owner's loop calls `tick()` when `next_deadline()` comes.

Every sealed batch gets the next `seq` and stays here until the bridge acks it
(acks are cumulative). At most `window` points are in flight (sent, not yet
acked): the bridge acks a batch once NATS has it (or, in an outage, once it is
spooled), so the window is the credit that makes a producer go at the pace
NATS takes points. When more than `max_points` are held, the oldest batches are
dropped and counted (`dropped`): overload drops at the source. `room()` says how
many points can be published now without waiting for credit, so a producer that
can choose its pace (a simulator at full speed) waits instead of making points
only to drop them. When no ack came
for `resend_after` seconds (from the last ack, or from the sending of the
oldest batch in flight when that is later), everything unacked is sent again
from the oldest (go-back-N), marked `resent` so the bridge keeps each its own
message id.

With a `ring` (`edgert.bus.ring`, a memory-mapped file under the runtime
directory), every point is also written there when `publish` takes it, and
every batch's seq before it is sent; acknowledgements and drops free the space.
A process that dies (SIGKILL, a segfault, an exception) leaves the file, and
the next process of the same actor opens it: the outbox then goes on with its
predecessor's epoch, sends its unacknowledged batches first, under their seqs
and marked `resent` (so the bridge and JetStream drop what they already have),
then the points it had not sealed, then its own. A full ring drops the oldest
batches, counted in `dropped` like the `max_points` bound. A ring that fails
(no space left for its file) is deleted with an error logged, and the outbox
goes on in memory only.

Acks come on a socket of their own (`acks`, see `edgert.bus.frames`) when the
process has one: the owner's loop reads them at each wake-up (`read_acks`) and
waits on them only while `wants_acks` says one would change something before
its next wake-up, so a driver polling once a second wakes once a second, not
also for the ack of each batch, and reads that ack before it publishes its
next one (an ack read then is not "slow": the batch it acknowledges left the
flight before the linger looks at its age).

Not thread-safe: it belongs to the one loop of the actor that owns it. The
sockets and the ring are created and closed by the process that runs the actor.
"""

from __future__ import annotations

import logging
import sys
import time
from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import msgpack
import zmq

from ..point import Point, Value
from .frames import BadFrame, decode_frame, encode_frame, p_frame
from .ring import Ring, array_header

__all__ = ["Outbox", "Command", "WINDOW"]

log = logging.getLogger("edgert.bus")

_PACK = msgpack.Packer(use_bin_type=True).pack
UNSENT_RETRY = 0.02  # seconds between tries, at stop, of batches the socket would not take
HEADS_MAX = 4096  # packed (node, type, key) prefixes kept per outbox; then it starts over
_U64_LO, _U64_END = 1 << 32, 1 << 64  # msgpack packs these times as uint64; done by hand
_NO_ORIGIN = b"\xa6origin\xa0"
_sock_get = zmq.backend.Socket.get  # the plain option read, an int
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)


def pack_points(points: list[Point], heads: dict[tuple[str, str, str], bytes]) -> list[bytes]:
    """Each point as a packed map, the bytes msgpack makes of `p.to_map()`, made faster:
    the part up to the value is packed once per (node, type, key) and kept in `heads`,
    the time (nanoseconds: a uint64) is packed by hand."""
    out = []
    append, get, pack, lo, end = out.append, heads.get, _PACK, _U64_LO, _U64_END
    for p in points:
        head = get((p.node, p.type, p.key))
        if head is None:
            head = _head(p, heads)
        t = p.time
        o = p.origin
        append(
            head
            + pack(p.value)
            + (
                b"\xa4time\xcf" + t.to_bytes(8, "big")
                if type(t) is int and lo <= t < end
                else b"\xa4time" + pack(t)
            )
            + (_NO_ORIGIN if o == "" else b"\xa6origin" + pack(o))
        )
    return out


def _head(p: Point, heads: dict[tuple[str, str, str], bytes]) -> bytes:
    return _names_head(p.node, p.type, p.key, heads)


def _names_head(node: str, typ: str, key: str, heads: dict[tuple[str, str, str], bytes]) -> bytes:
    if len(heads) >= HEADS_MAX:
        heads.clear()
    head = heads[(node, typ, key)] = (
        (b"\x86\xa4node" + _PACK(node) + b"\xa4type" + _PACK(typ) + b"\xa3key")
        + _PACK(key)
        + b"\xa5value"
    )
    return head


def pack_series(
    head: bytes, values: Sequence[Value], times: Sequence[int], origin: str
) -> list[bytes] | None:
    """The packed maps of one (node, type, key)'s values at their times, `head` being
    that key's packed prefix: what `pack_points` makes of the same points, with no
    `Point` built. None when a time is not a uint64 of 2**32 or more (then `Point`s)."""
    if not times or not (_U64_LO <= min(times) and max(times) < _U64_END):
        return None
    tail = _NO_ORIGIN if origin == "" else b"\xa6origin" + _PACK(origin)
    pack = _PACK
    try:
        return [
            head + pack(v) + b"\xa4time\xcf" + t.to_bytes(8, "big") + tail
            for v, t in zip(values, times, strict=True)
        ]
    except AttributeError:  # a time that is no int (a float has no to_bytes)
        return None


def _int_form(lo: int, hi: int) -> tuple[bytes, int] | None:
    """(prefix, width) msgpack packs every int of lo..hi with, when that is the same
    for all of them (a fixint is its own byte: no prefix, width 1); else None."""
    if lo >= 0:
        for top, prefix, width in _UINT_FORMS:
            if hi <= top:
                return (prefix, width) if lo > _UINT_FLOOR[prefix] else None
        return None
    if hi >= 0:
        return None  # signed and unsigned forms mix
    for bottom, prefix, width in _INT_FORMS:
        if lo >= bottom:
            return (prefix, width) if hi < _INT_CEIL[prefix] else None
    return None


_UINT_FORMS = (
    (0x7F, b"", 1),
    (0xFF, b"\xcc", 1),
    (0xFFFF, b"\xcd", 2),
    (0xFFFFFFFF, b"\xce", 4),
    (0xFFFFFFFFFFFFFFFF, b"\xcf", 8),
)
_UINT_FLOOR = {b"": -1, b"\xcc": 0x7F, b"\xcd": 0xFF, b"\xce": 0xFFFF, b"\xcf": 0xFFFFFFFF}
_INT_FORMS = ((-32, b"", 1), (-128, b"\xd0", 1), (-(2**15), b"\xd1", 2), (-(2**31), b"\xd2", 4))
_INT_FORMS += ((-(2**63), b"\xd3", 8),)
_INT_CEIL = {b"": 0, b"\xd0": -32, b"\xd1": -128, b"\xd2": -(2**15), b"\xd3": -(2**31)}
_SWAP = sys.byteorder == "little"  # arrays hold native order; msgpack is big-endian


def pack_block(
    head: bytes, values: Sequence[Value], times: Sequence[int], origin: str
) -> tuple[bytes, int] | None:
    """`pack_series` for a series whose values msgpack packs alike (all floats, or ints
    of one width: a counter's): the same bytes, back to back, every map `size` long,
    as (bytes, size). Made as one template repeated, then the values' and the times'
    bytes laid in, a byte column at a time (slice assignments in C): no step per
    point in Python. None for other series (then `pack_series`)."""
    n = len(values)
    if n < _BLOCK_MIN or n != len(times):
        return None
    try:
        if type(values) is range:
            if values.step != 1:
                return None
            form = _int_form(values.start, values.stop - 1)
            code = "q" if values.start < 0 else "Q"
        else:
            kinds = set(map(type, values))
            if kinds == {float}:
                form, code = (b"\xcb", 8), "d"
            elif kinds == {int}:
                lo, hi = min(values), max(values)
                form = _int_form(lo, hi)
                code = "q" if lo < 0 else "Q"
            else:
                return None
        if form is None or not (_U64_LO <= _least(times) and _most(times) < _U64_END):
            return None
        # from a list: array() takes a range (or any other iterable) item by item, slowly
        vals = array(code, values if type(values) is list else list(values))
        ts = array("Q", times if type(times) is list else list(times))
    except (TypeError, OverflowError):  # a time that is no int, an int out of range
        return None
    if _SWAP:
        vals.byteswap()
        ts.byteswap()
    vb, tb = vals.tobytes(), ts.tobytes()
    prefix, width = form
    tail = _NO_ORIGIN if origin == "" else b"\xa6origin" + _PACK(origin)
    at_v = len(head) + len(prefix)
    at_t = at_v + width + 6
    size = at_t + 8 + len(tail)
    buf = bytearray((head + prefix + bytes(width) + b"\xa4time\xcf" + bytes(8) + tail) * n)
    for j in range(width):  # the value's low `width` bytes of its 8
        buf[at_v + j :: size] = vb[8 - width + j :: 8]
    for j in range(8):
        buf[at_t + j :: size] = tb[j::8]
    return bytes(buf), size


_BLOCK_MIN = 16  # points: fewer are packed one by one (the columns cost more)


def _least(xs: Sequence[int]) -> int:
    """min(xs), at once for a range (a series' times often are one)."""
    if type(xs) is range and xs:
        return xs[0] if xs.step > 0 else xs[-1]
    return min(xs)


def _most(xs: Sequence[int]) -> int:
    """max(xs), at once for a range."""
    if type(xs) is range and xs:
        return xs[-1] if xs.step > 0 else xs[0]
    return max(xs)


@dataclass(slots=True)
class Command:
    """A batch of points to write, sent to the actor that owns their node."""

    id: int
    points: list[Point]


WINDOW = 20_000  # points in flight at most (the credit): a full-speed driver's batches
# cover the round trip of their acks (driver -> bridge -> NATS -> marker -> ack, ~10 ms
# at 440k points/s: 5,000 capped a driver there; 20,000 let it reach 700k-970k)


class Outbox:
    """Buffer, coalesce, send and resend the points of one actor (see the module doc)."""

    def __init__(
        self,
        sock: zmq.Socket,
        epoch: str,
        max_points: int = 100_000,
        resend_after: float = 2.0,
        max_batch: int = 1000,
        window: int = WINDOW,
        linger: float = 0.005,
        max_linger: float = 0.25,
        slow_ack: float = 0.1,
        ring: Ring | None = None,
        acks: zmq.Socket | None = None,
    ) -> None:
        self.sock = sock
        self.acks = acks  # the bridge's acks, apart from the bus (None: they come on it)
        self.epoch = epoch
        self.max_points = max_points
        self.resend_after = resend_after
        self.max_batch = max_batch
        self.window = window  # points sent and not yet acknowledged, at most (the credit)
        self.linger = linger  # seconds a lone point waits for company before it is sent
        self.max_linger = max(linger, max_linger)  # ... at most, when acks are slow
        self.slow_ack = slow_ack  # an ack this late (or a half-full window) means "slow"
        self._pending: list[bytes] = []  # packed point maps, not sealed into a batch yet
        self._heads: dict[tuple[str, str, str], bytes] = {}  # for pack_points
        self._seal_at: float | None = None  # when the pending points are sealed into a batch
        self._unacked: deque[tuple[int, bytes, int]] = deque()
        self._flight: deque[tuple[int, int, float]] = deque()  # (seq, points, sent at), unacked
        self._flight_points = 0  # including batches trimmed since they were sent
        self._seq = 0
        self._sent_upto = 0
        self._refused = False  # the socket would not take the last batch tried (`drain`)
        self._sent_max = 0  # the highest seq ever sent: anything <= it goes out as resent
        self._acked = 0
        self._last_progress = time.monotonic()
        self._last_sent = 0.0  # when the last batch was sent (monotonic)
        self.points_out = 0  # points published by the actor
        self.points_acked = 0
        self.buffered = 0  # points held, not yet acknowledged
        self.dropped = 0  # points dropped because the outbox was full
        self.bad_frames = 0
        self.recovered = 0  # points a previous process of this actor left unacknowledged
        # True while the last word on the socket was an EVENTS without POLLIN: its FD then
        # signals whatever comes next, so a wait on the FD alone misses nothing. Any send
        # or receive may take in the notice of a new frame without the FD showing it:
        # until the socket is asked again, only asking tells
        self.quiet = False  # the bus
        self.acks_quiet = False  # the ack socket
        self._ring = ring
        if ring is not None:
            self._restore(ring)

    def _restore(self, ring: Ring) -> None:
        """Go on where the previous process stopped: its epoch, seqs and points."""
        rec = ring.recovered
        self.epoch = ring.epoch
        self._seq = rec.seq
        self._acked = self._sent_upto = rec.acked
        self._sent_max = rec.seq  # any of them may have reached the bridge: resent
        self._unacked.extend(rec.batches)
        self._pending.extend(rec.pending)
        self.recovered = self.buffered = rec.points
        if self._pending:
            self._seal_at = 0.0

    # -- sending -----------------------------------------------------------------
    def publish(self, points: list[Point]) -> None:
        """Take `points` (packed now, and stored in the ring when there is one)."""
        if len(points) == 1:
            self.publish_one(points[0])
            return
        self._take(pack_points(points, self._heads))

    def publish_series(
        self,
        node: str,
        typ: str,
        key: str,
        values: Sequence[Value],
        times: Sequence[int],
        origin: str = "",
    ) -> None:
        """Take the points (node, typ, key, values[i], times[i], origin): what
        `publish([Point(...) for ...])` takes, without a `Point` per value. The names
        are checked once (ValueError); `times` are nanoseconds since the epoch."""
        if len(values) != len(times):
            raise ValueError(f"{len(values)} values but {len(times)} times")
        head = self._heads.get((node, typ, key))
        if head is None:
            Point(node, typ, key, None, 1, origin)  # checks the names (ValueError)
            head = _names_head(node, typ, key, self._heads)
        if type(origin) is not str:
            raise ValueError(f"origin must be a string, got {origin!r}")
        block = pack_block(head, values, times, origin)
        if block is not None:
            self._take_block(*block, len(values))
            return
        packed = pack_series(head, values, times, origin)
        if packed is None:  # an odd time: each point as `Point` would make it
            packed = pack_points(
                [Point(node, typ, key, v, t, origin) for v, t in zip(values, times, strict=True)],
                self._heads,
            )
        self._take(packed)

    def _take_block(self, data: bytes, size: int, n: int) -> None:
        """`_take` for `n` packed maps of `size` bytes each, back to back (`pack_block`):
        whole batches are slices of it, only the rest is cut into maps."""
        full = self.max_batch
        at = 0
        if not self._pending and n >= full:
            step = full * size
            while n - at >= full:
                self._whole(data[at * size : at * size + step], full)
                at += full
            self._trim()
            self._pump()
        if at < n:
            self._take([data[i : i + size] for i in range(at * size, n * size, size)])

    def _take(self, packed: list[bytes]) -> None:
        """Hold newly published points (packed): straight into batches when they fill
        some, and in the ring when there is one."""
        full = self.max_batch
        if len(packed) >= full and not self._pending:
            # whole batches go straight to sealed: one join, one ring record each
            at = 0
            while len(packed) - at >= full:
                self._whole(b"".join(packed[at : at + full]), full)
                at += full
            self._trim()
            self._pump()
            packed = packed[at:]
            if not packed:
                return
        if self._ring is not None:
            self._store(packed)
        self._pending.extend(packed)
        self.points_out += len(packed)
        self.buffered += len(packed)
        self._taken()

    def _whole(self, data: bytes, n: int) -> None:
        """Hold `n` newly published points (their maps back to back) as one batch of
        their own: stored and sealed in the ring when there is one."""
        if self._ring is not None:
            self._store_data(data, n)
        self._seq += 1
        if self._ring is not None:
            self._seal(self._seq, n)
        self._unacked.append((self._seq, array_header(n) + data, n))
        self.points_out += n
        self.buffered += n

    def publish_one(self, p: Point) -> None:
        """`publish([p])`: the common case (a polling driver's), written out."""
        head = self._heads.get((p.node, p.type, p.key))
        if head is None:
            head = _head(p, self._heads)
        t = p.time
        o = p.origin
        b = (
            head
            + _PACK(p.value)
            + (
                b"\xa4time\xcf" + t.to_bytes(8, "big")
                if type(t) is int and _U64_LO <= t < _U64_END
                else b"\xa4time" + _PACK(t)
            )
            + (_NO_ORIGIN if o == "" else b"\xa6origin" + _PACK(o))
        )
        ring = self._ring
        if ring is not None:
            try:
                stored = ring.append(b, 1)
            except OSError as e:  # no space to grow the file
                self._lose_ring(e)
                stored = True
            if not stored:
                self._store([b])  # no room: drop the oldest first
        pending = self._pending
        pending.append(b)
        self.points_out += 1
        self.buffered += 1
        if self._flight or len(pending) >= self.max_batch or self.linger <= 0:
            self._taken()
        else:
            self._seal_at = 0.0  # `_taken`'s usual case, without the call

    def _taken(self) -> None:
        """Points were published: when do they go?"""
        if len(self._pending) >= self.max_batch or self.linger <= 0:
            self.flush()  # full: no reason to wait
        elif not self._flight:
            self._seal_at = 0.0  # nothing in flight: at the end of this turn (next tick)
        elif self._seal_at is None:  # at most one batch per linger while one is in flight
            now = time.monotonic()
            at = self._last_sent + self._linger(now)
            self._seal_at = at if at > now else 0.0  # 0.0: the end of this turn

    def _linger(self, now: float) -> float:
        """`linger`, or, once the path is slow, the age of the oldest batch in flight
        (wait as long for company), at most `max_linger`. Slow means that batch is
        `slow_ack` old or the window is half full: an ack a few tens of milliseconds
        late on a busy machine keeps `linger`, else every point published meanwhile
        waits as long as that ack (the p99 tail at ordinary rates)."""
        if not self._flight:
            return self.linger
        age = now - self._flight[0][2]
        if age < self.slow_ack and self._flight_points * 2 < self.window:
            return self.linger
        return min(self.max_linger, max(self.linger, age))

    @property
    def crash_safe(self) -> bool:
        """True while every point held is also in the ring file."""
        return self._ring is not None

    def room(self) -> int:
        """Points that can be published now without waiting for credit: what the
        window has free, plus one batch of look-ahead (never negative)."""
        return max(0, self.window + self.max_batch - self.buffered)

    def lingering(self) -> bool:
        """True while published points wait to be sealed into a batch (an ack may send them)."""
        return bool(self._pending)

    def flush(self, now: float | None = None) -> None:
        """Seal pending points into batches now and send what the socket and window take
        (`now`: the monotonic time, when the caller has read it)."""
        self._seal_at = None
        while self._pending:
            chunk = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            self._seq += 1
            if self._ring is not None:
                self._seal(self._seq, len(chunk))
            self._unacked.append(
                (self._seq, array_header(len(chunk)) + b"".join(chunk), len(chunk))
            )
        self._trim()
        self._pump(now)

    def _trim(self) -> None:
        while self.buffered > self.max_points and self._unacked:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        seq, _, n = self._unacked.popleft()
        self.buffered -= n
        self.dropped += n
        self._acked = max(self._acked, seq)
        self._sent_upto = max(self._sent_upto, seq)
        if self._ring is not None:
            self._ring.release(n, seq)

    # -- the ring --------------------------------------------------------------------
    def _store(self, packed: list[bytes]) -> None:
        """Write published points to the ring, dropping the oldest batches for room."""
        for i in range(0, len(packed), self.max_batch):
            chunk = packed[i : i + self.max_batch]
            if not self._store_data(b"".join(chunk), len(chunk)):
                return

    def _store_data(self, data: bytes, n: int) -> bool:
        """Write `n` published points (packed maps back to back) to the ring, dropping
        the oldest batches for room; False when the ring failed (it is gone)."""
        ring = self._ring
        assert ring is not None
        try:
            if not ring.fits(len(data), ring.capacity):
                raise ValueError(f"{len(data)} bytes of points are more than the ring holds")
            while not ring.append(data, n):
                if self._unacked:
                    self._drop_oldest()
                elif self._pending:
                    self.flush()  # seal what waits, so that it can be dropped
                    if self._ring is not ring:
                        return False  # the ring failed while sealing
                else:
                    raise ValueError("the ring is full of nothing this outbox holds")
        except (OSError, ValueError) as e:
            self._lose_ring(e)
            return False
        return True

    def _seal(self, seq: int, n: int) -> None:
        ring = self._ring
        assert ring is not None
        try:
            while not ring.seal(seq, n):
                if not self._unacked:
                    raise ValueError("no room left to seal a batch")
                self._drop_oldest()
        except (OSError, ValueError) as e:
            self._lose_ring(e)

    def _lose_ring(self, e: BaseException) -> None:
        ring = self._ring
        assert ring is not None
        log.error(
            "outbox file %s failed (%s): deleted; points are now kept in memory only, "
            "where a crash of this process loses them",
            ring.path,
            e,
        )
        ring.close(remove=True)
        self._ring = None

    def _pump(self, now: float | None = None) -> None:
        """Send what the window takes of the batches not sent yet; `now`: the time, when
        the caller has read it (else read at the first send)."""
        sent = False
        for seq, packed, n in self._unacked:
            if seq <= self._sent_upto:
                continue
            if self._flight_points >= self.window:
                break  # more would only queue in the pipe and time out into resends
            frame = p_frame(self.epoch, seq, self._unacked[0][0], packed, seq <= self._sent_max)
            self.quiet = False
            try:
                self.sock.send(frame, zmq.NOBLOCK)
            except zmq.Again:
                self._refused = True  # no bridge to take it (or its pipe is full)
                break
            self._refused = False
            self._sent_upto = seq
            self._sent_max = max(self._sent_max, seq)
            if now is None:
                now = time.monotonic()
            sent = True
            if not self._flight:
                # the resend clock runs from the oldest batch in flight, not from the
                # last ack: after a quiet spell (a driver polling every 5 s) a batch
                # is not taken as lost the moment it leaves
                self._last_progress = now
            self._flight.append((seq, n, now))
            self._flight_points += n
        if sent:
            self._last_sent = now  # type: ignore[assignment]

    def tick(self, now: float | None = None) -> None:
        """Seal a batch whose linger is over; resend from the oldest unacknowledged
        batch when acks stopped coming."""
        now = time.monotonic() if now is None else now
        pumped = False
        if self._seal_at is not None and now >= self._seal_at:
            self.flush(now)
            pumped = True
        if self._unacked and now - self._last_progress >= self.resend_after:
            self._sent_upto = self._acked
            self._last_progress = now
            self._flight.clear()  # what was in flight is taken as lost
            self._flight_points = 0
            pumped = False
        if not pumped:
            self._pump(now)

    def next_deadline(self) -> float | None:
        """When `tick` has work next (monotonic seconds), or None."""
        d = self._seal_at
        if self._unacked:
            r = self._last_progress + self.resend_after
            d = r if d is None else min(d, r)
        return d

    # -- receiving -----------------------------------------------------------------
    def readable(self) -> bool:
        """True when a frame from the bridge waits (the socket's EVENTS, asked without
        the flag enum pyzmq's `getsockopt` makes of it)."""
        waiting = bool(_sock_get(self.sock, _EVENTS) & _POLLIN)
        self.quiet = not waiting
        return waiting

    def acks_waiting(self) -> bool:
        """True when an ack waits on the ack socket (asked as `readable` asks the bus)."""
        if self.acks is None:
            return False
        waiting = bool(_sock_get(self.acks, _EVENTS) & _POLLIN)
        self.acks_quiet = not waiting
        return waiting

    def wants_acks(self, until: float | None) -> bool:
        """Would an ack change what this outbox does before `until` (monotonic; None:
        whenever)? Then the owner's wait should end when one comes: points wait in
        it for one (`lingering`), the window is half used, or the resend of what is
        in flight falls due before then. Otherwise acks can wait on their socket
        until the owner wakes anyway (`read_acks`)."""
        if self._pending or self._flight_points * 2 >= self.window:
            return True
        if not self._unacked:
            return False
        return until is None or self._last_progress + self.resend_after <= until

    def read_acks(self) -> bool:
        """Apply the acks waiting on the ack socket (none: one question to it); True
        when there were some."""
        if not self.acks_waiting():
            return False
        self._read(self.acks, [])
        self._pump()
        return True

    def read_bus(self) -> list[Command]:
        """The commands waiting on the bus, with any acks there applied (none: one
        question to it). The ack socket is left to `read_acks`."""
        if not self.readable():
            return []
        cmds: list[Command] = []
        self._read(self.sock, cmds)
        self._pump()
        return cmds

    def on_readable(self) -> list[Command]:
        """Read every waiting frame (the bus, then the ack socket): apply acks, return
        the commands that came."""
        cmds: list[Command] = []
        self._read(self.sock, cmds)
        if self.acks_waiting():
            self._read(self.acks, cmds)
        self._pump()
        return cmds

    def _read(self, sock: zmq.Socket, cmds: list[Command]) -> None:
        """Read every frame waiting on `sock`; the socket is quiet after (see `quiet`)."""
        bus = sock is self.sock
        more = True
        while more:
            try:
                data = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                data, more = None, False
            else:  # asking is cheaper than a receive raising zmq.Again
                more = bool(_sock_get(sock, _EVENTS) & _POLLIN)
            if not more:  # before the frame is applied: an ack may send (`_pump`)
                if bus:
                    self.quiet = True
                else:
                    self.acks_quiet = True
                if data is None:
                    break
            try:
                frame = decode_frame(data)
            except BadFrame as e:
                self.bad_frames += 1
                log.warning("bus: dropped a malformed frame: %s", e)
                continue
            if frame[0] == "A":
                self._ack(frame[1], frame[2])
            elif frame[0] == "C" and bus:
                cmds.append(Command(frame[1], frame[2]))
            else:
                self.bad_frames += 1
                log.warning("bus: unexpected frame kind %r from the bridge", frame[0])

    def _ack(self, epoch: str, seq: int) -> None:
        if epoch != self.epoch:
            return
        progressed = False
        while self._flight and self._flight[0][0] <= seq:
            self._flight_points -= self._flight.popleft()[1]
            progressed = True  # the bridge is taking batches, even ones trimmed here since
        freed = 0
        while self._unacked and self._unacked[0][0] <= seq:
            _, _, n = self._unacked.popleft()
            freed += n
            progressed = True
        if freed:
            self.buffered -= freed
            self.points_acked += freed
            if self._ring is not None:
                self._ring.release(freed, seq)
        if seq > self._acked:
            self._acked = seq
            self._sent_upto = max(self._sent_upto, seq)
        if progressed:
            now = self._last_progress = time.monotonic()
            if self._pending and not self._flight:
                self.flush(now)  # the ack freed the pipe: what waited goes now
            elif self._pending and self._seal_at:
                # the path may be quick again: a linger grown while acks were slow
                # shrinks with the age of what is still in flight
                at = self._last_sent + self._linger(now)
                if at <= now:
                    self.flush(now)
                elif at < self._seal_at:
                    self._seal_at = at

    def reply(self, cmd_id: int, error: str | None) -> None:
        frame = encode_frame("R", cmd_id, error is None, error or "")
        self.quiet = False
        try:
            self.sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            log.warning("bus: reply to command %d could not be sent (bridge away)", cmd_id)

    def stats(self) -> dict[str, int]:
        return {
            "points_out": self.points_out,
            "buffered": self.buffered,
            "dropped": self.dropped,
            "bad_frames": self.bad_frames,
            "recovered": self.recovered,
        }

    def drain(self, timeout: float) -> bool:
        """Flush and wait up to `timeout` for every batch to be acknowledged (used at stop)."""
        self.flush()
        deadline = time.monotonic() + timeout
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        if self.acks is not None:
            poller.register(self.acks, zmq.POLLIN)
        while self._unacked:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            wait = min(left, self.resend_after)
            if self._refused and self._unacked[-1][0] > self._sent_upto:
                # not all sent: the bridge was not there yet (a stop during its start):
                # try again soon, not after `resend_after`, once its socket is bound
                wait = min(wait, UNSENT_RETRY)
            if poller.poll(wait * 1000):
                self.on_readable()
            self.tick()
        return True
