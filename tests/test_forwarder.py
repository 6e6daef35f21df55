"""The forwarder's rules under random interleavings (a Hypothesis state machine).

Drivers send batches through the real framing code; a model NATS takes
messages with JetStream's duplicate detection (by Nats-Msg-Id); a real spool on
disk, with a small cap, runs the forwarder's commits and reads in order. The
machine interleaves batches, resends, drops at the source, NATS acks, lost
sessions (some messages reached NATS unacknowledged), spool work, time, and
bridge restarts (the forwarder rebuilt from the spool), and reboots with a
wall clock not yet synchronized (the forwarder holds points for the sync) and
that sync. After every step:
nothing acknowledged to a driver is lost (it is in NATS, in the spool, or
counted as dropped by the cap), each node's values reach NATS in order and
once, and the forwarder's per-node counters match the spool; nothing is
published while the forwarder holds for the clock, and a message is marked
presync exactly when its points (those its forwarder took first-hand) were read
before the clock's sync. At the end,
everything is drained and every point produced is in NATS unless counted as
dropped.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter, deque
from pathlib import Path

import msgpack
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edgert.bridge.forwarder import Ack, Commit, Forwarder, Publish, Read, join_arrays
from edgert.bus import decode_points, p_frame
from edgert.spool import Spool

CAP = 6000  # bytes: small enough that the cap drops rows in most runs


class Driver:
    def __init__(self, name: str, nodes: list[str]) -> None:
        self.name = name
        self.epoch = f"{name}.1.x"
        self.nodes = nodes
        self.seq = 0
        self.sent_max = 0
        self.unacked: deque[tuple[int, bytes, list[tuple[str, int]]]] = deque()
        self.acked_values: set[tuple[str, int]] = set()
        self.dropped: set[tuple[str, int]] = set()

    def frame(self, seq: int, packed: bytes) -> bytes:
        resent = seq <= self.sent_max
        self.sent_max = max(self.sent_max, seq)
        return p_frame(self.epoch, seq, self.unacked[0][0], packed, resent)

    def ack(self, seq: int) -> None:
        while self.unacked and self.unacked[0][0] <= seq:
            self.acked_values.update(self.unacked.popleft()[2])


# Preconditions are named functions, not lambdas: some Hypothesis versions describe
# every precondition on every step, and a lambda's description re-parses this file
# (seconds per example), which made the machine outlast the test timeout. A timeout
# landing inside an example makes Hypothesis replay it differently (Flaky).
def _down(m: ForwarderMachine) -> bool:
    return not m.fwd.up


def _up(m: ForwarderMachine) -> bool:
    return m.fwd.up


def _first_connect_on(m: ForwarderMachine) -> bool:
    return not m.fwd.up and m.fwd.hold_until > 0


def _wire_busy(m: ForwarderMachine) -> bool:
    return m.fwd.up and bool(m.wire)


def _jobs_waiting(m: ForwarderMachine) -> bool:
    return bool(m.jobs)


def _clock_unsynced(m: ForwarderMachine) -> bool:
    return not m.clock_synced


class ForwarderMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        shm = Path("/dev/shm")
        self.dir = Path(tempfile.mkdtemp(prefix="edgert-fwd-", dir=shm if shm.is_dir() else None))
        self.spool = Spool(self.dir / "spool.db", CAP).open()
        self.drivers = [Driver("d0", ["a", "b"]), Driver("d1", ["c"])]
        self.next_value: Counter[str] = Counter()
        self.now = 100.0
        self.instance = 0  # which forwarder (bridge process) runs
        self.clock_synced = True
        self.hold = 0.0
        # (node, value) -> (the forwarder that took it, whether the clock was synced then)
        self.tags: dict[tuple[str, int], tuple[int, bool]] = {}
        self.fwd = self._new_forwarder()
        self.wire: list[Publish] = []  # published in the session, not acked by NATS yet
        self.jobs: deque[Commit | Read] = deque()
        self.stream: dict[str, list[int]] = {}
        self.ids: set[str] = set()

    def teardown(self) -> None:
        try:
            self._drain()
        finally:
            self.spool.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _new_forwarder(self) -> Forwarder:
        f = Forwarder(
            spooling=True,
            last_seq=dict(self.spool._seqs).get,
            rows=Counter(self.spool.rows_per_node()),
            max_in_flight=4,
            commit_interval=0.05,
            outage_interval=1.0,
            outage_after=3.0,
            row_points=5,
            row_bytes=4000,
            last_row=self.spool._next_id - 1,
        )
        f.inbox.last_seq = lambda e, seqs=dict(self.spool._seqs): seqs.get(e, 0)
        f.down_since = self.now
        if not self.clock_synced:
            f.unsynced(self.now, self.hold)
        self.instance += 1
        return f

    # -- carrying out actions -------------------------------------------------------
    def _do(self, actions: list) -> None:
        for a in actions:
            if isinstance(a, Publish):
                assert a.session == self.fwd.session
                assert not self.fwd.holding, "published while holding for the clock"
                for m in msgpack.unpackb(a.data):
                    instance, synced = self.tags[(m["node"], m["value"])]
                    if instance == self.instance:
                        assert a.presync == (not synced), (a, m)
                self.wire.append(a)
            elif isinstance(a, Ack):
                d = next(d for d in self.drivers if d.epoch == a.epoch)
                assert a.ident == d.name.encode()
                d.ack(a.seq)
            else:
                self.jobs.append(a)

    def _reach_nats(self, msg: Publish) -> None:
        if msg.msg_id in self.ids:
            return  # JetStream's duplicate window
        self.ids.add(msg.msg_id)
        for m in msgpack.unpackb(msg.data):
            assert m["node"] == msg.node
            self.stream.setdefault(msg.node, []).append(m["value"])

    def _send(self, d: Driver, seq: int, packed: bytes) -> None:
        frame = decode_points(d.frame(seq, packed))
        _, epoch, s, first, resent, parts = frame
        taken = self.fwd.stats["batches_in"]
        actions = self.fwd.batch(d.name.encode(), epoch, s, first, resent, parts, self.now)
        if self.fwd.stats["batches_in"] > taken:  # taken first-hand by this forwarder
            for m in msgpack.unpackb(packed):
                self.tags[(m["node"], m["value"])] = (self.instance, self.clock_synced)
        self._do(actions)

    # -- rules ----------------------------------------------------------------------
    @rule(d=st.integers(0, 1), nodes=st.lists(st.integers(0, 1), min_size=1, max_size=4))
    def produce(self, d: int, nodes: list[int]) -> None:
        drv = self.drivers[d]
        maps, values = [], []
        for i in nodes:
            node = drv.nodes[i % len(drv.nodes)]
            v = self.next_value[node]
            self.next_value[node] += 1
            maps.append(
                {"node": node, "type": "n", "key": "0", "value": v, "time": 1, "origin": ""}
            )
            values.append((node, v))
        drv.seq += 1
        packed = msgpack.packb(maps)
        drv.unacked.append((drv.seq, packed, values))
        self._send(drv, drv.seq, packed)

    @rule(d=st.integers(0, 1))
    def resend(self, d: int) -> None:
        drv = self.drivers[d]
        for seq, packed, _ in list(drv.unacked):
            if drv.unacked and drv.unacked[0][0] <= seq:  # not acked meanwhile
                self._send(drv, seq, packed)

    @rule(d=st.integers(0, 1))
    def drop_at_source(self, d: int) -> None:
        drv = self.drivers[d]
        if len(drv.unacked) > 1:
            drv.dropped.update(drv.unacked.popleft()[2])

    @precondition(_down)
    @rule()
    def connect(self) -> None:
        self.wire = []
        self._do(self.fwd.connected(self.now))

    @precondition(_down)
    @rule(grace=st.sampled_from([0.3, 5.0]))
    def start_connecting(self, grace: float) -> None:
        self.fwd.starting(self.now, grace)

    @precondition(_first_connect_on)
    @rule()
    def connect_fails(self) -> None:
        self._do(self.fwd.unreachable(self.now))

    @precondition(_wire_busy)
    @rule(k=st.sampled_from([1, 99]))
    def nats_acks(self, k: int) -> None:
        k = min(k, len(self.wire))
        for m in self.wire[:k]:
            self._reach_nats(m)
        del self.wire[:k]
        self._do(self.fwd.published(self.fwd.session, self.now, k))

    @precondition(_up)
    @rule(k=st.integers(0, 4))
    def lose_session(self, k: int) -> None:
        for m in self.wire[:k]:
            self._reach_nats(m)  # got there, the ack did not come back
        self.wire = []
        self._do(self.fwd.lost(self.now))

    @precondition(_jobs_waiting)
    @rule(n=st.sampled_from([1, 99]))
    def spool_work(self, n: int = 99) -> None:
        for _ in range(n):
            if self.jobs:
                self._job(self.jobs.popleft(), feed=True)

    def _job(self, job: Commit | Read, feed: bool) -> None:
        if isinstance(job, Commit):
            ids, removed = self.spool.apply(job.rows, job.seqs, job.done)
            if feed:
                self._do(self.fwd.committed(ids, removed, self.now))
        else:
            rows = self.spool.read(job.after, job.limit)
            if feed:
                self._do(self.fwd.rows(job.session, rows, job.limit, self.now))

    @rule(dt=st.sampled_from([0.5, 4.0]))
    def tick(self, dt: float) -> None:
        self.now += dt
        self._do(self.fwd.tick(self.now))

    @rule(reached=st.integers(0, 4), done=st.integers(0, 2))
    def bridge_restart(self, reached: int, done: int) -> None:
        """The bridge process dies: some publishes reached NATS, some spool jobs ran."""
        for m in self.wire[:reached]:
            self._reach_nats(m)
        for _ in range(min(done, len(self.jobs))):
            self._job(self.jobs.popleft(), feed=False)
        self.wire, self.jobs = [], deque()
        self.spool.close()
        self.spool = Spool(self.dir / "spool.db", CAP).open()
        self.fwd = self._new_forwarder()

    @rule(hold=st.sampled_from([0.0, 2.0, 60.0]), reached=st.integers(0, 2))
    def reboot_unsynced(self, hold: float, reached: int) -> None:
        """A reboot: the bridge starts again on a clock not synchronized yet."""
        self.clock_synced, self.hold = False, hold
        self.bridge_restart(reached, 0)

    @precondition(_clock_unsynced)
    @rule()
    def clock_syncs(self) -> None:
        self.clock_synced = True
        self._do(self.fwd.synced(self.now))

    # -- invariants -----------------------------------------------------------------
    def _spooled(self) -> tuple[set[tuple[str, int]], list]:
        rows = self.spool.read(0, 1_000_000)
        vals = {(m["node"], m["value"]) for r in rows for m in msgpack.unpackb(r.data)}
        return vals, rows

    @invariant()
    def nothing_acknowledged_is_lost(self) -> None:
        spooled, _ = self._spooled()
        delivered = {(n, v) for n, vs in self.stream.items() for v in vs}
        acked = set().union(*(d.acked_values for d in self.drivers))
        missing = acked - delivered - spooled
        assert len(missing) <= self.spool.dropped_points, missing

    @invariant()
    def each_node_in_order_and_once(self) -> None:
        for node, vs in self.stream.items():
            assert all(a < b for a, b in zip(vs, vs[1:], strict=False)), (node, vs)

    @invariant()
    def counters_match_the_spool(self) -> None:
        _, rows = self._spooled()
        f = self.fwd
        assert len(f.flight) <= f.max_in_flight
        live = Counter(r.node for r in rows if r.id not in f.retired)
        assert +f.spool_rows == live
        if f.up and not self.jobs and not f.reading:
            after = Counter(r.node for r in rows if r.id > f.cursor and r.id not in f.retired)
            assert +f.backlog == after
            assert f.backlog_rows == sum(after.values())

    # -- the end: drain everything ------------------------------------------------------
    def _drain(self) -> None:
        if not self.clock_synced:
            self.clock_syncs()
        for _ in range(300):
            if not self.fwd.up:
                self.connect()
            while self.jobs:
                self.spool_work()
            if self.wire:
                self.nats_acks(len(self.wire))
                continue
            for d in range(len(self.drivers)):
                if self.drivers[d].unacked:
                    self.resend(d)
            self.tick(2.0)
            busy = any(d.unacked for d in self.drivers) or self.jobs or self.wire
            if not busy and not self.fwd.mem and self.spool.batches == 0:
                break
        else:
            raise AssertionError("the forwarder did not drain")
        delivered = {(n, v) for n, vs in self.stream.items() for v in vs}
        produced = {(n, v) for n, k in self.next_value.items() for v in range(k)}
        dropped = set().union(*(d.dropped for d in self.drivers))
        missing = produced - delivered - dropped
        assert len(missing) <= self.spool.dropped_points, missing
        if self.spool.dropped_points == 0:
            assert not missing


# Examples as many as the profile gives (conftest: 50 in the default run, 100 in CI's)
ForwarderMachine.TestCase.settings = settings(stateful_step_count=30)
test_forwarder_rules = ForwarderMachine.TestCase


def test_join_arrays_concatenates_packed_arrays() -> None:
    for sizes in ([1], [15, 1], [3, 70_000], [0, 2], [16, 16]):
        arrays = [msgpack.packb(list(range(n))) for n in sizes]
        want = [x for n in sizes for x in range(n)]
        assert msgpack.unpackb(join_arrays(arrays)) == want


# --- the hazards the machine checks, each as one fixed story --------------------------


def machine() -> ForwarderMachine:
    return ForwarderMachine()


def checked(m: ForwarderMachine) -> None:
    m.nothing_acknowledged_is_lost()
    m.each_node_in_order_and_once()
    m.counters_match_the_spool()


def test_after_an_outage_a_node_waits_for_its_spooled_rows() -> None:
    m = machine()
    m.produce(0, [0])
    m.tick(0.5)
    m.spool_work()  # the outage's part is in the spool
    m.connect()  # the read of the spool is asked for...
    m.produce(0, [0])  # ...and a newer part of the same node comes first
    assert m.wire == []  # it waits behind the row
    m.spool_work()
    m.nats_acks(99)
    checked(m)
    m.teardown()
    assert m.stream["a"] == [0, 1]


def test_a_part_published_in_a_lost_session_keeps_its_own_message_id() -> None:
    m = machine()
    m.connect()
    m.produce(0, [0])
    first_id = m.wire[0].msg_id
    m.lose_session(1)  # NATS got it; the ack was lost with the connection
    m.produce(0, [0])  # never published: may join others in a row
    m.produce(0, [0])
    m.tick(0.5)
    m.spool_work()
    ids = [r.msg_id for r in m.spool.read(0, 99)]
    assert ids[0] == first_id and len(ids) == 2  # its own row; the two others share one
    m.teardown()
    assert m.stream["a"] == [0, 1, 2]


def test_a_batch_resent_after_a_bridge_crash_keeps_its_own_message_id() -> None:
    m = machine()
    m.connect()
    m.produce(0, [0])
    m.bridge_restart(reached=1, done=0)  # NATS has the part; its driver was never acked
    m.produce(0, [0])
    m.resend(0)  # seq 1 again, marked resent
    m.tick(0.5)
    m.spool_work()
    rows = m.spool.read(0, 99)
    assert [r.points for r in rows] == [1, 1]  # the resent part is not coalesced
    m.teardown()
    assert m.stream["a"] == [0, 1]


def test_rows_coalesce_and_a_crash_between_publish_and_delete_resends_the_same_ids() -> None:
    m = machine()
    for _ in range(4):
        m.produce(1, [0])
    m.tick(0.5)
    m.spool_work()
    (row,) = m.spool.read(0, 99)
    assert row.points == 4 and row.msg_id == "d1.1.x:1-4:c"
    m.connect()
    m.spool_work()  # read and published
    m.bridge_restart(reached=1, done=0)  # NATS has it; the deletion never ran
    m.connect()
    m.spool_work()
    assert [p.msg_id for p in m.wire] == ["d1.1.x:1-4:c"]
    m.teardown()
    assert m.stream["c"] == [0, 1, 2, 3]


def test_rows_read_while_parts_took_the_room_wait_for_the_next_read() -> None:
    m = machine()
    m.connect()
    for _ in range(4):
        m.produce(0, [0])  # four parts in flight...
    m.lose_session(0)  # ...come back, each keeps its id: four rows
    m.tick(0.5)
    m.spool_work()
    assert m.spool.batches == 4
    m.connect()  # a read for four rows is asked for
    m.produce(1, [0])  # another node's part takes one place in flight meanwhile
    m.spool_work()
    assert len(m.fwd.flight) <= m.fwd.max_in_flight
    checked(m)
    m.teardown()
    assert m.stream["a"] == [0, 1, 2, 3]


def test_parts_wait_for_the_first_connect_then_go_to_nats_not_the_spool() -> None:
    m = machine()
    try:
        m.fwd.starting(m.now, 1.5)
        m.produce(0, [0, 1])
        m.tick(0.5)
        assert not m.jobs and m.fwd.mem  # held, not spooled, not acked
        assert not m.drivers[0].acked_values
        m.connect()
        assert not m.jobs and m.wire
        m.nats_acks(99)
        assert m.drivers[0].acked_values and m.spool.written_batches == 0
        checked(m)
    finally:
        m.teardown()


def test_a_failed_first_connect_ends_the_hold() -> None:
    m = machine()
    try:
        m.fwd.starting(m.now, 5.0)
        m.produce(1, [0])
        m.tick(0.5)
        assert not m.jobs
        m._do(m.fwd.unreachable(m.now))
        m.tick(0.5)
        assert any(isinstance(j, Commit) and j.rows for j in m.jobs)
        checked(m)
    finally:
        m.teardown()


def test_drop_at_source_and_restarts_around_the_first_connect_lose_nothing() -> None:
    m = machine()
    try:
        steps = [
            ("start_connecting", 5.0),
            ("connect_fails",),
            ("tick", 4.0),
            ("resend", 0),
            ("start_connecting", 5.0),
            ("tick", 4.0),
            ("produce", 0, [1, 1, 0, 1]),
            ("connect_fails",),
            ("drop_at_source", 0),
            ("resend", 1),
            ("tick", 4.0),
            ("spool_work", 99),
            ("connect",),
            ("lose_session", 2),
            ("connect",),
            ("bridge_restart", 0, 2),
            ("tick", 0.5),
            ("tick", 4.0),
            ("produce", 0, [0, 0]),
            ("drop_at_source", 1),
            ("start_connecting", 0.3),
            ("connect",),
            ("drop_at_source", 0),
            ("spool_work", 99),
            ("resend", 0),
            ("produce", 0, [1, 0, 1, 1]),
            ("nats_acks", 1),
            ("bridge_restart", 0, 2),
            ("produce", 1, [0, 0]),
            ("start_connecting", 0.3),
        ]
        for name, *args in steps:
            getattr(m, name)(*args)
            checked(m)
    finally:
        m.teardown()


def test_held_for_the_clock_parts_wait_in_the_spool_then_go_first_at_the_sync() -> None:
    m = machine()
    try:
        m.reboot_unsynced(hold=60.0, reached=0)
        m.connect()  # NATS is up, the clock is not synchronized
        m.produce(0, [0, 1])
        m.tick(0.5)
        m.spool_work()
        assert not m.wire and m.spool.batches == 2  # spooled, not published...
        assert m.drivers[0].acked_values  # ...and safe, so acked
        assert m.fwd.stats["clock_held"] == 2
        m.clock_syncs()
        m.produce(0, [0])  # read after the sync: waits behind the held row of its node
        m.spool_work()
        assert [p.presync for p in m.wire] == [True, True, False]
        m.nats_acks(99)
        checked(m)
    finally:
        m.teardown()
    assert m.stream["a"] == [0, 1] and m.stream["b"] == [0]


def test_the_hold_ends_after_its_time_from_the_first_connect() -> None:
    m = machine()
    try:
        m.reboot_unsynced(hold=2.0, reached=0)
        m.produce(1, [0])
        m.tick(4.0)  # NATS unreachable: the hold has not started counting
        m.spool_work()
        m.connect()
        assert m.fwd.holding and not m.jobs and not m.wire
        assert m.fwd.next_deadline() == m.now + 2.0
        m.tick(4.0)  # expired, the clock still not synchronized
        assert not m.fwd.holding
        m.spool_work()
        assert [p.presync for p in m.wire] == [True]
        checked(m)
    finally:
        m.teardown()


def test_a_part_taken_after_the_sync_never_shares_a_spool_row_with_one_taken_before() -> None:
    m = machine()
    try:
        m.reboot_unsynced(hold=0.0, reached=0)
        m.produce(1, [0])  # NATS down: both wait in memory for one commit
        m.clock_syncs()
        m.produce(1, [0])
        m.tick(0.5)
        m.spool_work()
        assert m.spool.batches == 2  # not coalesced: one row each
        m.connect()
        m.spool_work()
        assert [p.presync for p in m.wire] == [True, False]
        checked(m)
    finally:
        m.teardown()


def test_parts_taken_after_a_clock_step_say_so_in_memory_and_in_the_spool() -> None:
    m = machine()
    try:
        m.reboot_unsynced(hold=0.0, reached=0)
        m.produce(1, [0])  # before the step
        m.fwd.stepped()  # the clock stepped, still not synchronized
        m.produce(1, [0])  # after it: its own row, with the step count
        m.tick(0.5)
        m.spool_work()
        assert m.spool.batches == 2
        m.connect()
        m.spool_work()
        assert [(p.presync, p.steps) for p in m.wire] == [(True, 0), (True, 1)]
        m.produce(1, [0])  # from memory too
        m.spool_work()
        assert [(p.presync, p.steps) for p in m.wire][2:] == [(True, 1)]
        checked(m)
    finally:
        m.teardown()
