"""The spool: a crash-safe, size-capped FIFO of batches with each sender's last seq."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import msgpack

from edgert.spool import Batch, Spool, write_cost
from edgert.testing import wait_for


def batch(i: int, size: int = 100, node: str = "n1") -> Batch:
    """A batch whose bytes do not deflate: its stored size is its size."""
    return Batch(node, f"e:{i}:{node}", 1, random.Random(i).randbytes(size))


def test_rows_are_stored_deflated_and_read_back_as_given(tmp_path: Path) -> None:
    points = [{"node": "n1", "type": "t", "key": "0", "value": v, "time": v} for v in range(500)]
    data = msgpack.packb(points)
    with Spool(tmp_path / "s.db", 1 << 20) as sp:
        sp.commit([Batch("n1", "e:1:n1", 500, data), batch(2)], {"e": 2})
        assert [r.data for r in sp.read()] == [data, batch(2).data]
        assert sp.written_bytes < len(data) / 3 + 100  # deflated: the keys repeat
        stored = sp._need_db().execute("SELECT zlib FROM batch ORDER BY id").fetchall()
        assert stored == [(1,), (0,)]  # random bytes stay as they are


def test_a_spool_from_before_deflating_opens_and_reads(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "s.db")
    db.executescript(
        "CREATE TABLE batch (id INTEGER PRIMARY KEY, node TEXT NOT NULL, msg_id TEXT NOT NULL,"
        " points INTEGER NOT NULL, data BLOB NOT NULL);"
        "INSERT INTO batch VALUES (1, 'n1', 'e:1:n1', 1, x'91c0');"
    )
    db.commit()
    db.close()
    with Spool(tmp_path / "s.db", 1 << 20) as sp:
        sp.commit([batch(2)], {"e": 2})
        assert [r.data for r in sp.read()] == [b"\x91\xc0", batch(2).data]


def test_batches_come_back_in_order_and_leave_once_done(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", 1 << 20) as sp:
        ids = sp.commit([batch(i) for i in range(5)], {"e": 5})
        assert [r.msg_id for r in sp.read()] == [f"e:{i}:n1" for i in range(5)]
        assert [r.id for r in sp.read(after=ids[1], limit=2)] == ids[2:4]
        sp.commit(done=ids[:3])
        assert [r.id for r in sp.read()] == ids[3:]
        assert (sp.points, sp.batches) == (2, 2)
        more = sp.commit([batch(9)], {"e": 6}, done=ids[3:])
        assert more[0] > ids[-1]  # ids only grow
        assert [r.msg_id for r in sp.read()] == ["e:9:n1"]


def test_batches_and_sender_seqs_survive_a_reopen(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", 1 << 20) as sp:
        sp.commit([batch(1), batch(2)], {"drv.1.a": 2, "other.2.b": 7})
    with Spool(tmp_path / "s.db", 1 << 20) as sp:
        assert sp.last_seq("drv.1.a") == 2  # a resent batch 2 is known as a duplicate
        assert sp.last_seq("other.2.b") == 7
        assert sp.last_seq("never.seen") == 0
        assert [r.msg_id for r in sp.read()] == ["e:1:n1", "e:2:n1"]
        assert (sp.points, sp.batches) == (2, 2)


def test_cap_drops_the_oldest_and_counts_them_persistently(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", 8192) as sp:
        for i in range(100):
            sp.commit([batch(i, 200)], {"e": i + 1})
        kept = [int(r.msg_id.split(":")[1]) for r in sp.read(limit=1000)]
        assert kept == list(range(100 - len(kept), 100))  # the newest, in order
        assert sp.bytes <= 8192
        assert sp.dropped_points == sp.dropped_batches == 100 - len(kept) > 50
        dropped = sp.dropped_points
    with Spool(tmp_path / "s.db", 8192) as sp:
        assert sp.dropped_points == dropped
        assert sp.last_seq("e") == 100


def test_a_batch_bigger_than_the_cap_is_dropped_and_counted(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", 4096) as sp:
        assert sp.commit([batch(1, 10_000)], {"e": 1}) == []
        assert (sp.dropped_points, sp.batches, sp.last_seq("e")) == (1, 0, 1)


WRITER = """
import sys
import msgpack

from edgert.spool import Batch, Spool
with Spool(sys.argv[1], 1 << 30) as sp:
    start = seq = sp.last_seq("e")  # goes on where the killed writer stopped
    while True:
        seq += 1
        sp.commit([Batch("n", f"e:{seq}:n", 1, b"x" * 300)], {"e": seq})
        if seq == start + 50:
            print("ready", flush=True)
"""


def test_a_writer_killed_mid_commit_leaves_batches_and_seq_in_agreement(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            wait_for(lambda p=proc: p.stdout.readline().strip() == "ready", 20, "writer running")
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
        with Spool(path, 1 << 30) as sp:
            seqs = [int(r.msg_id.split(":")[1]) for r in sp.read(limit=10**6)]
            # every batch up to the recorded seq is there, once, and nothing after it
            assert seqs == list(range(1, sp.last_seq("e") + 1))
            assert sp.batches == len(seqs)


def test_write_cost_is_bounded_with_batched_commits(tmp_path: Path) -> None:
    cost = write_cost(points=20_000, points_per_commit=50, directory=str(tmp_path))
    assert cost["payload_bytes_per_1000"] > 0
    assert cost["written_bytes_per_1000"] < 3 * cost["payload_bytes_per_1000"]
    big = write_cost(points=20_000, points_per_commit=1000, directory=str(tmp_path))
    assert big["amplification"] < 1.6


def test_spool_sync_full_makes_every_commit_synchronous(tmp_path) -> None:
    from edgert.config import loads
    from edgert.spool import Spool

    for sync, level in (("normal", 1), ("full", 2)):
        with Spool(tmp_path / f"{sync}.db", 1 << 20, sync) as s:
            assert s._need_db().execute("PRAGMA synchronous").fetchone()[0] == level
    cfg = loads('[gateway]\nid = "gw"\n[nats]\nspool_sync = "full"\n')
    assert cfg.nats.spool_sync == "full"
    import pytest

    from edgert.config import ConfigError

    with pytest.raises(ConfigError, match="spool_sync"):
        loads('[gateway]\nid = "gw"\n[nats]\nspool_sync = "sometimes"\n')


def test_a_wall_clock_step_back_does_not_prune_a_live_sender(tmp_path: Path, monkeypatch) -> None:
    """The sender records kept are the most recently updated, whatever the clock says."""
    import edgert.spool as spool_mod

    clock = [2_000_000_000.0]
    monkeypatch.setattr(spool_mod.time, "time", lambda: clock[0])
    keep = spool_mod.KEEP_EPOCHS
    with Spool(tmp_path / "s.db", 1 << 20) as s:
        s.apply(seqs={f"old{i}": 1 for i in range(keep - 1)})
        clock[0] = 1_000_000_000.0  # NTP steps the clock back years
        s.apply(seqs={"live": 7})
        s.apply(seqs={"new1": 1, "new2": 1})  # over the limit: the two oldest go
        assert s.last_seq("live") == 7
    with Spool(tmp_path / "s.db", 1 << 20) as s:
        assert s.last_seq("live") == 7
        assert s.last_seq("new1") == 1 and s.last_seq("new2") == 1
        assert sum(s.last_seq(f"old{i}") for i in range(keep - 1)) == keep - 3
