"""The forwarder: every decision of the point path, as a plain state machine.

No I/O, no clock, no asyncio: the bridge's loop feeds it events and carries out
the actions it returns, in order. That keeps the no-loss rules in one place,
checkable by reading and by a stateful property test.

Events (methods):              Actions (returned):
  batch(...)    a P frame        Publish  a message to NATS (from memory or a spool row)
  starting(..)  first connect    (no action: parts are held until it resolves)
  unreachable() it failed
  connected()   NATS is up       Commit   one spool transaction (rows, sender seqs, deletions)
  lost()        NATS is gone     Read     spool rows after an id, oldest first
  published(s)  NATS took the    Ack      a cumulative ack to a driver
                oldest message
  committed(..) the spool wrote
  rows(..)      rows were read
  tick(now)     time passed
  unsynced(..)  the wall clock is not
                synchronized (at start)
  synced(now)   now it is

Rules:

- A part (one node of one accepted bus batch) is *safe* once NATS took it or
  once it is in the spool; a driver is acked up to its last batch whose parts,
  and every earlier batch's, are safe (`edgert.bus.inbox`). A driver keeps
  every batch until acked, so anything not safe is resent by it after a
  bridge crash: nothing acknowledged is ever lost.
- While NATS is up, parts are published from memory and acked when NATS takes
  them, not before: the drivers' windows are the credit, so producers go at the
  pace NATS takes points and overload drops at the source, counted there. The
  spool is for outages: parts go there when NATS is down (after
  `commit_interval`, or `outage_interval` once the outage lasted
  `outage_after`: fewer, larger rows). Not while the bridge starts: until
  the first connection attempt resolves (`starting(now, grace)`, ended by
  `connected` or `unreachable`, at most `grace` seconds), parts wait in memory
  unacked, so a slow first connect costs the drivers a pause, not a spool
  write per batch. Memory is bounded by the drivers'
  windows; a NATS that stops acking ends the session (the bridge's ack
  timeout), and what it held goes to the spool.
- Order per node: a node's part waits while older data of that node is in the
  spool and not yet published in this session (`backlog`, counters per node,
  kept as rows come and go, never rescanned), or on its way into the spool.
  NATS keeps publish order on a connection; the spool is read in id order.
- Message ids are stable: a part is published as `<epoch>:<seq>:<node>`.
  Parts that were never published are coalesced per node and sender into one
  spool row of up to `row_points` points, `<epoch>:<first>-<last>:<node>`; a
  part that may already be in NATS (published in a session that was lost, or
  resent by its driver after a bridge died) keeps its own id in a row of its
  own. A row is published as stored, under its id, however often, so
  JetStream's duplicate window drops any repeat (a crash between publish and
  delete resends the same rows with the same ids).
- Drops are counted: the spool cap drops the oldest rows and counts their
  points persistently; a driver's outbox counts what it drops.
- The wall clock (`edgert.clock`): when it is not synchronized at start
  (`unsynced`), every part taken until `synced`, and every row the spool held
  at start that was written in this boot, is *presync*: its points were
  stamped on a clock that may still step. A presync part never shares a spool
  row with a later one, nor with one taken after another clock step
  (`stepped`), and each `Publish` says whether it is presync and how many
  steps had been seen when it was taken, so the bridge can correct its times
  after the step (or mark it unsynced before). With a `hold`, presync parts
  wait in the spool, unpublished, until `synced` or until `hold` seconds after
  the first connection to NATS (while NATS is unreachable they wait anyway):
  the hold only keeps parts from NATS, so every rule above still holds, and on
  release the spool goes first, in order, as after an outage.

A restart is a new `Forwarder` seeded from the spool: the senders' last seqs
(`last_seq`) and the rows per node (`rows`).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..bus.inbox import Inbox, Slot
from ..spool import Batch, Stored

__all__ = [
    "Forwarder",
    "Publish",
    "Commit",
    "Read",
    "Ack",
    "Action",
    "join_arrays",
]


HOLD_ROWS = 64  # while the first connect is on, memory holds up to this many rows' bytes


@dataclass(slots=True, eq=False)
class Part:
    """One node of one accepted bus batch, in memory until it is safe."""

    node: str
    epoch: str
    seq: int
    points: int
    data: bytes  # packed array of the node's point maps
    slot: Slot
    came: float
    tainted: bool  # may be in NATS already (published before): keeps its own id
    presync: bool = False  # taken before the wall clock synchronized
    steps: int = 0  # clock steps seen when it was taken

    @property
    def msg_id(self) -> str:
        return f"{self.epoch}:{self.seq}:{self.node}"


@dataclass(slots=True)
class Publish:
    session: int
    node: str
    msg_id: str
    data: bytes
    points: int
    row: int  # its spool id (0: from memory)
    presync: bool = False  # its points were read before the wall clock synchronized
    steps: int = 0  # clock steps seen when it was taken (see `Forwarder.stepped`)


@dataclass(slots=True)
class Commit:
    rows: list[Batch]
    seqs: dict[str, int]
    done: list[int]


@dataclass(slots=True)
class Read:
    session: int
    after: int
    limit: int


@dataclass(slots=True)
class Ack:
    ident: bytes
    epoch: str
    seq: int


Action = Publish | Commit | Read | Ack


@dataclass(slots=True)
class _Committing:
    parts: list[Part]
    rows: list[Batch]
    seqs: dict[str, int]
    done: list[int]
    presync: list[bool]  # per row
    steps: list[int]  # per row
    nodes: Counter[str] = field(default_factory=Counter)


class Forwarder:
    """The point path's state and rules (see the module doc)."""

    def __init__(
        self,
        spooling: bool = True,
        last_seq: Callable[[str], int] = lambda epoch: 0,
        rows: Counter[str] | None = None,
        max_in_flight: int = 64,
        commit_interval: float = 0.05,
        outage_interval: float = 1.0,
        outage_after: float = 3.0,
        row_points: int = 10_000,
        row_bytes: int = 256 * 1024,
        last_row: int = 0,
    ) -> None:
        self.spooling = spooling  # False: no NATS configured, parts are safe as they come
        self.inbox = Inbox(last_seq)
        self.max_in_flight = max_in_flight
        self.commit_interval = commit_interval
        self.outage_interval = outage_interval
        self.outage_after = outage_after
        self.row_points = row_points
        self.row_bytes = row_bytes
        self.mem: deque[Part] = deque()  # accepted, not safe, not published: arrival order
        self.mem_bytes = 0
        self.flight: deque[Part | Stored] = deque()  # published this session, oldest first
        self.flight_rows: set[int] = set()
        self.spool_rows: Counter[str] = Counter(rows or {})  # rows per node, not yet retired
        self.retired: set[int] = set()  # rows NATS took, deletion not committed yet
        self.gone: set[int] = set()  # rows in flight that the cap dropped meanwhile
        self.done: list[int] = []  # retired rows to delete in the next commit
        self.committing: _Committing | None = None
        self.last_commit = 0.0
        self.up = False  # a NATS session is on
        self.down_since = 0.0
        self.hold_until = 0.0  # the first connection attempt is on: no spooling before this
        self.session = 0
        self.cursor = 0  # spool rows up to this id are published in this session
        self.backlog: Counter[str] = Counter()  # rows per node after the cursor (session)
        self.backlog_rows = 0
        self.reading = False
        self.last_row = last_row  # the newest spool row id known
        self.clock_synced = True  # False from `unsynced` until `synced`
        self.clock_hold = 0.0  # seconds presync parts may wait for the sync (0: no hold)
        # holding presync parts until then (inf: until `hold` after the first connect);
        # 0: not holding
        self.clock_hold_until = 0.0
        self.presync_first = 1  # spool rows from this id (written in this boot)...
        self.presync_mark = 0  # ...up to this id are presync...
        self.presync_rows: set[int] = set()  # ...and these, written after the sync
        self.clock_steps = 0  # steps of the wall clock seen (`stepped`)
        self.row_steps: dict[int, int] = {}  # spool rows taken after a step: steps seen
        self.stats = {
            "points_in": 0,
            "batches_in": 0,  # bus batches accepted (not duplicates)
            "points_out": 0,
            "batches_out": 0,
            "fast_batches": 0,
            "duplicates": 0,
            "out_of_order": 0,
            "clock_held": 0,  # points taken while holding for the clock's sync
        }

    # -- events ----------------------------------------------------------------
    def batch(
        self,
        ident: bytes,
        epoch: str,
        seq: int,
        first: int,
        resent: bool,
        parts: list[tuple[str, int, bytes, bytes]],
        now: float,
    ) -> list[Action]:
        """A P frame from a driver (already checked and split by node: `bus.Part`s)."""
        inbox = self.inbox
        slot = inbox.take(ident, epoch, seq, first, len(parts))
        self.stats["duplicates"] = inbox.duplicates
        self.stats["out_of_order"] = inbox.out_of_order
        if slot is not None:
            self.stats["batches_in"] += 1
            for node, n, data, _ in parts:
                self.stats["points_in"] += n
                if not self.spooling:
                    inbox.safe(epoch, slot)
                    continue
                presync = not self.clock_synced
                steps = self.clock_steps
                self.mem.append(Part(node, epoch, seq, n, data, slot, now, resent, presync, steps))
                self.mem_bytes += len(data)
                if self.clock_hold_until:
                    self.stats["clock_held"] += n
        return self._step(now)

    def starting(self, now: float, grace: float) -> None:
        """The first connection attempt began: hold parts for it up to `grace` seconds."""
        self.hold_until = now + grace
        self.down_since = now

    def unsynced(self, now: float, hold: float, first_row: int = 1) -> None:
        """At start: the wall clock is not synchronized. Parts from now on, and the rows
        in the spool from `first_row` on (those written in this boot), are presync until
        `synced`; with `hold` > 0 they wait in the spool until then, or `hold` seconds
        after the first connection at most."""
        self.clock_synced = False
        self.presync_first = first_row
        self.presync_mark = self.last_row
        if hold > 0 and self.spooling:
            self.clock_hold = hold
            self.clock_hold_until = now + hold if self.up else math.inf

    def synced(self, now: float) -> list[Action]:
        """The wall clock is synchronized: later parts are not presync; the hold ends."""
        if self.clock_synced:
            return []
        self.clock_synced = True
        self.clock_hold_until = 0.0
        return self._step(now)

    def stepped(self) -> None:
        """The wall clock stepped: parts taken from now on say so (`Publish.steps`), as
        their points may carry times of the new clock."""
        self.clock_steps += 1

    @property
    def holding(self) -> bool:
        """Parts wait in the spool for the clock's sync."""
        return self.clock_hold_until > 0

    def unreachable(self, now: float) -> list[Action]:
        """A connection attempt failed: NATS is down, the spool takes what waits."""
        self.hold_until = 0.0
        return self._step(now)

    def connected(self, now: float) -> list[Action]:
        """A new NATS session: the spool goes first, oldest row first."""
        self.hold_until = 0.0
        if self.clock_hold_until == math.inf:
            self.clock_hold_until = now + self.clock_hold  # the hold counts from here
        self.up = True
        self.session += 1
        self.cursor = 0
        self.reading = False
        self.backlog = +self.spool_rows
        self.backlog_rows = sum(self.backlog.values())
        return self._step(now)

    def lost(self, now: float) -> list[Action]:
        """The NATS session ended: what it had in flight is not known to be safe."""
        if self.up:
            self.down_since = now
        self.up = False
        self.session += 1
        self.reading = False
        back = [m for m in self.flight if isinstance(m, Part)]
        for p in reversed(back):
            self.mem.appendleft(p)
            self.mem_bytes += len(p.data)
        self.flight.clear()
        self.flight_rows.clear()
        self.gone.clear()
        self.backlog.clear()
        self.backlog_rows = 0
        return self._step(now)

    def published(self, session: int, now: float, n: int = 1) -> list[Action]:
        """NATS took the `n` oldest messages in flight of `session`."""
        if session != self.session:
            return []
        st = self.stats
        for _ in range(n):
            m = self.flight.popleft()
            st["points_out"] += m.points
            st["batches_out"] += 1
            if isinstance(m, Part):
                st["fast_batches"] += 1
                self.inbox.safe(m.epoch, m.slot)
                continue
            self.flight_rows.discard(m.id)
            self.presync_rows.discard(m.id)
            if m.id in self.gone:
                self.gone.discard(m.id)  # the cap dropped it meanwhile: already uncounted
                continue
            self.spool_rows[m.node] -= 1
            self.retired.add(m.id)
            self.done.append(m.id)
        return self._step(now)

    def rows(self, session: int, rows: list[Stored], limit: int, now: float) -> list[Action]:
        """The spool rows a `Read` asked for."""
        if session != self.session:
            return []
        self.reading = False
        out: list[Action] = []
        room = self.max_in_flight - len(self.flight)  # parts may have taken some meanwhile
        if len(rows) > room:
            rows, limit = rows[: max(0, room)], 0  # the rest is read again later
        for r in rows:
            self.cursor = max(self.cursor, r.id)
            if r.id in self.retired:
                continue  # NATS has it; its deletion is on its way
            self._backlog_down(r.node)
            self.flight.append(r)
            self.flight_rows.add(r.id)
            pre = self._presync_row(r.id)
            steps = self.row_steps.get(r.id, 0)
            out.append(Publish(session, r.node, r.msg_id, r.data, r.points, r.id, pre, steps))
        if len(rows) < limit:
            self.backlog.clear()  # the spool has nothing more after the cursor
            self.backlog_rows = 0
        return out + self._step(now)

    def committed(
        self, ids: list[int | None], removed: list[tuple[int, str]], now: float
    ) -> list[Action]:
        """The spool wrote the last `Commit`: new row ids (None: the cap dropped it at
        once) and every row it removed (deleted as done, or dropped by the cap)."""
        c = self.committing
        assert c is not None
        self.committing = None
        self.last_commit = now
        self.inbox.recorded(c.seqs)
        for b, rid, pre, steps in zip(c.rows, ids, c.presync, c.steps, strict=True):
            if rid is not None:
                if pre and steps:
                    self.row_steps[rid] = steps
                self.last_row = max(self.last_row, rid)
                if pre and self.clock_synced:
                    self.presync_rows.add(rid)  # a part taken before the sync, spooled after
                elif pre:
                    self.presync_mark = max(self.presync_mark, rid)
                self.spool_rows[b.node] += 1
                if self.up:
                    self.backlog[b.node] += 1
                    self.backlog_rows += 1
        for rid, node in removed:
            self.presync_rows.discard(rid)
            self.row_steps.pop(rid, None)
            if rid in self.retired:
                self.retired.discard(rid)
                continue
            self.spool_rows[node] -= 1  # dropped by the cap
            if rid in self.flight_rows:
                self.gone.add(rid)
            elif self.up and rid > self.cursor:
                self._backlog_down(node)
        for rid in c.done:
            self.retired.discard(rid)
        for p in c.parts:
            self.inbox.safe(p.epoch, p.slot)
        self.spool_rows = +self.spool_rows
        return self._step(now)

    def tick(self, now: float) -> list[Action]:
        return self._step(now)

    def stop(self, now: float) -> list[Action]:
        """The bridge stops: everything not safe goes to the spool in one last commit
        (after a `lost`, and once any commit in progress finished)."""
        if self.up:
            self.lost(now)
        out: list[Action] = []
        if self.committing is None and (self.mem or self.done):
            out.append(self._commit(list(self.mem)))
            self.mem.clear()
            self.mem_bytes = 0
        return out + self._acks()

    # -- rules -------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When `tick` may have work (a commit coming due, the hold's end), or None."""
        if not self.spooling:
            return None
        hold = self.clock_hold_until if self.up and self.holding else math.inf
        due = math.inf
        if self.committing is None:
            if self.mem and not self._sending:
                due = max(self.hold_until, self.mem[0].came + self._interval(self.mem[0].came))
            elif self.done:
                due = self.last_commit + self.commit_interval
        t = min(hold, due)
        return None if t == math.inf else t

    @property
    def _sending(self) -> bool:
        """Parts and spool rows go to NATS (a session is on, no hold for the clock)."""
        return self.up and not self.clock_hold_until

    def _presync_row(self, rid: int) -> bool:
        return (
            not self.clock_synced
            or self.presync_first <= rid <= self.presync_mark
            or rid in self.presync_rows
        )

    def _interval(self, now: float) -> float:
        if now - self.down_since > self.outage_after:
            return self.outage_interval  # a real outage: fewer, larger writes
        return self.commit_interval

    def _step(self, now: float) -> list[Action]:
        out: list[Action] = []
        if self.clock_hold_until and now >= self.clock_hold_until:
            self.clock_hold_until = 0.0  # no sync in time: presync parts go out as they are
        if self._sending:
            self._publish_memory(out)
            self._read(out)
        self._maybe_commit(now, out)
        out.extend(self._acks())
        return out

    def _acks(self) -> list[Action]:
        return [Ack(i, e, s) for i, e, s in self.inbox.acks()]

    def _backlog_down(self, node: str) -> None:
        n = self.backlog[node]
        if n <= 1:
            del self.backlog[node]
        else:
            self.backlog[node] = n - 1
        if n > 0:
            self.backlog_rows -= 1

    def _publish_memory(self, out: list[Action]) -> None:
        room = self.max_in_flight - len(self.flight)
        if room <= 0 or not self.mem:
            return
        backlog = self.backlog
        waiting = self.committing.nodes if self.committing is not None else None
        blocked: set[str] = set()
        keep: deque[Part] = deque()
        mem = self.mem
        while mem:
            p = mem.popleft()
            node = p.node
            if node in blocked or node in backlog or (waiting and node in waiting):
                blocked.add(node)  # nothing newer of this node may pass it
                keep.append(p)
                continue
            out.append(
                Publish(self.session, node, p.msg_id, p.data, p.points, 0, p.presync, p.steps)
            )
            self.flight.append(p)
            self.mem_bytes -= len(p.data)
            p.tainted = True
            room -= 1
            if room <= 0:
                break
        keep.extend(mem)
        self.mem = keep

    def _read(self, out: list[Action]) -> None:
        room = self.max_in_flight - len(self.flight)
        if self.reading or self.backlog_rows <= 0 or room <= 0:
            return
        self.reading = True
        out.append(Read(self.session, self.cursor, room))

    def _maybe_commit(self, now: float, out: list[Action]) -> None:
        if not self.spooling or self.committing is not None:
            return
        parts: list[Part] = []
        if self.mem and not self._sending:
            oldest = self.mem[0].came
            held = now < self.hold_until
            if (not held and now - oldest >= self._interval(oldest)) or self.mem_bytes >= (
                self.row_bytes * (HOLD_ROWS if held else 4)
            ):
                parts = list(self.mem)
                self.mem.clear()
                self.mem_bytes = 0
        if parts or (self.done and now - self.last_commit >= self.commit_interval):
            out.append(self._commit(parts))

    def _commit(self, parts: list[Part]) -> Commit:
        rows, presync, steps = self._coalesce(parts)
        seqs = self.inbox.dirty_seqs(Counter(p.slot for p in parts))
        c = _Committing(parts, rows, seqs, self.done, presync, steps)
        c.nodes.update(p.node for p in parts)
        self.committing = c
        self.done = []
        return Commit(rows, c.seqs, c.done)

    def _coalesce(self, parts: list[Part]) -> tuple[list[Batch], list[bool], list[int]]:
        """Rows for `parts`, whether each is presync and the clock steps seen: per node
        and sender, consecutive parts never published, all presync or none, taken
        between the same clock steps, join one row (up to
        `row_points`/`row_bytes`); order per node is kept."""
        groups: dict[str, list[list[Part]]] = {}
        sizes: dict[str, list[int]] = {}  # points and bytes of each node's last group
        for p in parts:
            gs = groups.setdefault(p.node, [])
            g = gs[-1] if gs else None
            size = sizes.get(p.node)
            if (
                g is None
                or size is None
                or p.tainted
                or g[0].tainted
                or g[-1].epoch != p.epoch
                or g[0].presync != p.presync
                or g[0].steps != p.steps
                or size[0] + p.points > self.row_points
                or size[1] + len(p.data) > self.row_bytes
            ):
                gs.append([p])
                sizes[p.node] = [p.points, len(p.data)]
            else:
                g.append(p)
                size[0] += p.points
                size[1] += len(p.data)
        rows = []
        presync = []
        steps = []
        for node, gs in groups.items():
            for g in gs:
                presync.append(g[0].presync)
                steps.append(g[0].steps)
                if len(g) == 1:
                    p = g[0]
                    rows.append(Batch(node, p.msg_id, p.points, p.data))
                    continue
                msg_id = f"{g[0].epoch}:{g[0].seq}-{g[-1].seq}:{node}"
                rows.append(
                    Batch(node, msg_id, sum(p.points for p in g), join_arrays([p.data for p in g]))
                )
        return rows, presync, steps


def _array_body(data: bytes) -> tuple[int, bytes]:
    """(length, elements) of a packed msgpack array."""
    b = data[0]
    if 0x90 <= b <= 0x9F:
        return b & 0x0F, data[1:]
    if b == 0xDC:
        return int.from_bytes(data[1:3], "big"), data[3:]
    if b == 0xDD:
        return int.from_bytes(data[1:5], "big"), data[5:]
    raise ValueError("not a msgpack array")


def join_arrays(arrays: list[bytes]) -> bytes:
    """One packed msgpack array holding the elements of `arrays`, in order (no repacking)."""
    n = 0
    bodies = []
    for a in arrays:
        k, body = _array_body(a)
        n += k
        bodies.append(body)
    if n < 16:
        head = bytes([0x90 | n])
    elif n < 1 << 16:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(bodies)
