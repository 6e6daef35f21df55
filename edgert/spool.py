"""The spool: the bridge's disk buffer of point batches (sqlite3 in WAL mode).

A batch is accepted from the bus only once it is in the spool, and leaves the
spool only once NATS has it. One `commit()` is one transaction holding, together,
the new batches, the last bus `seq` of each sender epoch up to which every batch
is in NATS or in the spool (so a batch resent after a bridge crash is recognised
as a duplicate and dropped, and one that was not safe is taken again), and the
removal of batches NATS has acknowledged since. The caller acks the bus only
after `commit()` returned, so nothing acknowledged is ever lost.

Writes are bounded for SD cards: one transaction per receive burst,
`synchronous=NORMAL` (WAL: no fsync per commit, only at checkpoints; a power cut
may lose the last commits, never corrupt the file), and points stored as the
msgpack bytes that go on the wire, deflated (zlib level 1, column `zlib`) when
that makes them smaller: point maps repeat their keys, so a row shrinks several
times and the WAL's second copy of each page costs less than the payload. The
spool is capped at `max_bytes` of stored rows: when a commit would exceed it, the oldest batches are dropped and the
points counted, persistently. `write_cost()` measures the bytes written to disk
per 1,000 points.

A `Spool` is opened and closed by the one loop that uses it (`with Spool(...)`).
sqlite3 is imported by `open()`, not with this module: a bridge whose spool has
nothing on disk (`create()`) waits for its first write to load it.
"""

from __future__ import annotations

import os
import tempfile
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

if TYPE_CHECKING:
    import sqlite3

__all__ = ["Spool", "SpoolError", "Batch", "Stored", "write_cost", "process_io"]

ROW_OVERHEAD = 48  # bytes counted per stored batch beside its payload (keys, ids, page slack)
KEEP_EPOCHS = 1000  # sender epochs remembered; the oldest beyond this are forgotten

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch (
    id      INTEGER PRIMARY KEY,
    node    TEXT    NOT NULL,
    msg_id  TEXT    NOT NULL,
    points  INTEGER NOT NULL,
    data    BLOB    NOT NULL,
    zlib    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sender (
    epoch   TEXT PRIMARY KEY,
    seq     INTEGER NOT NULL,
    updated REAL    NOT NULL
);
CREATE TABLE IF NOT EXISTS counter (
    name    TEXT PRIMARY KEY,
    value   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name    TEXT PRIMARY KEY,
    value   TEXT NOT NULL
);
"""


@dataclass(slots=True)
class Batch:
    """Points of one node, ready to publish: `data` is a msgpack array of point maps."""

    node: str
    msg_id: str
    points: int
    data: bytes


@dataclass(slots=True)
class Stored:
    """A batch as it sits in the spool; `id` orders batches (oldest first)."""

    id: int
    node: str
    msg_id: str
    points: int
    data: bytes


class Spool:
    """A size-capped, crash-safe FIFO of point batches in `<data_dir>/spool.db`."""

    def __init__(self, path: str | os.PathLike[str], max_bytes: int, sync: str = "normal") -> None:
        if max_bytes < 4096:
            raise ValueError(f"spool max_bytes must be >= 4096, got {max_bytes}")
        if sync not in ("normal", "full"):
            raise ValueError(f"spool sync must be 'normal' or 'full', got {sync!r}")
        self.sync = sync  # full: every commit is fsync'd before it returns (and is acked)
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._db: sqlite3.Connection | None = None
        self._seqs: dict[str, int] = {}
        self._stamp = 0.0  # the last sender update's number (orders the pruning)
        self._next_id = 1  # ids only grow while open (no AUTOINCREMENT: one page less per commit)
        self.bytes = 0  # payload + per-batch overhead held now
        self.batches = 0
        self.points = 0
        self.dropped_points = 0  # dropped by the cap, ever (persistent)
        self.dropped_batches = 0
        self.written_batches = 0  # batches written while open (the bridge avoids it when it can)
        self.written_bytes = 0  # ... and the bytes stored for them (deflated when smaller)

    # -- lifecycle -----------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._db is not None

    def create(self) -> bool:
        """Make the spool's folder (0700) and file (0600) if missing, without sqlite;
        True when the spool holds nothing yet (an empty file, no journal beside it):
        then nothing needs reading, and `open()` can wait until the first write."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # 0600 before sqlite opens it: its -wal and -shm files take the same mode
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                st = os.fstat(fd)
                if st.st_mode & 0o077:
                    os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
        except OSError as e:
            raise SpoolError(f"cannot open the spool {self.path}: {e.strerror or e}") from None
        for journal in ("-wal", "-journal"):
            try:
                if os.stat(f"{self.path}{journal}").st_size:
                    return False
            except FileNotFoundError:
                pass
            except OSError:
                return False  # sqlite will say what is wrong with it
        return st.st_size == 0

    def open(self) -> Spool:
        import sqlite3

        self.create()
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA page_size=1024")  # small pages: small commits write little
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.sync.upper()}")
            db.execute("PRAGMA wal_autocheckpoint=8192")  # pages: 8 MB of WAL between checkpoints
            db.execute("PRAGMA journal_size_limit=8388608")  # and the WAL is cut back to that
            # a page cache of 256 KB, not sqlite's 2 MB: rows are appended and read back in
            # order, and recent pages are in the OS's cache anyway (the same CPU spooling and
            # draining 1.5 M points); the bridge keeps 2 MB less after an outage
            db.execute("PRAGMA cache_size=-256")
            db.executescript(_SCHEMA)
            if "zlib" not in {r[1] for r in db.execute("PRAGMA table_info(batch)")}:
                db.execute("ALTER TABLE batch ADD COLUMN zlib INTEGER NOT NULL DEFAULT 0")
            self._reload(db)
            # `updated` orders the senders for pruning: it only grows (old spools held
            # wall-clock seconds; the sequence goes on from the largest)
            self._stamp = db.execute("SELECT coalesce(max(updated), 0) FROM sender").fetchone()[0]
            self._next_id = (db.execute("SELECT max(id) FROM batch").fetchone()[0] or 0) + 1
            counters = dict(db.execute("SELECT name, value FROM counter"))
            self.dropped_points = counters.get("dropped_points", 0)
            self.dropped_batches = counters.get("dropped_batches", 0)
        except sqlite3.Error as e:
            db.close()
            raise SpoolError(f"cannot open the spool {self.path}: {e}") from None
        except BaseException:
            db.close()
            raise
        self._db = db
        return self

    def boot(self, boot_id: str) -> int:
        """Record that this boot (the kernel's boot id; "": unknown, taken as the same
        one) writes from now on; the id of the first row it wrote (rows before it
        were written in an earlier boot, on another clock)."""
        import sqlite3

        db = self._need_db()
        meta = dict(db.execute("SELECT name, value FROM meta"))
        first = int(meta.get("boot_first_row", "1"))
        if boot_id and meta.get("boot_id") != boot_id:
            first = self._next_id
            try:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                    [("boot_id", boot_id), ("boot_first_row", str(first))],
                )
                db.execute("COMMIT")
            except sqlite3.Error as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise SpoolError(f"cannot write the spool {self.path}: {e}") from None
        return first

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Spool:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the bus side --------------------------------------------------------------
    def last_seq(self, epoch: str) -> int:
        """The last batch seq accepted from this sender epoch (0: none)."""
        return self._seqs.get(epoch, 0)

    def commit(
        self,
        batches: Iterable[Batch] = (),
        seqs: dict[str, int] | None = None,
        done: Iterable[int] = (),
    ) -> list[int]:
        """One transaction: add `batches`, record `seqs` (epoch -> last accepted seq),
        remove the `done` ids; then drop the oldest while over the cap.

        Returns the ids given to the new batches (in order). A batch too big for
        the whole cap is dropped and counted at once.
        """
        return [i for i in self.commit_rows(batches, seqs, done) if i is not None]

    def commit_rows(
        self,
        batches: Iterable[Batch] = (),
        seqs: dict[str, int] | None = None,
        done: Iterable[int] = (),
    ) -> list[int | None]:
        """`commit`, returning one entry per batch given: its id, or None when the
        cap dropped it (and counted it) in this same commit."""
        return self.apply(batches, seqs, done)[0]

    def apply(
        self,
        batches: Iterable[Batch] = (),
        seqs: dict[str, int] | None = None,
        done: Iterable[int] = (),
    ) -> tuple[list[int | None], list[tuple[int, str]]]:
        """`commit_rows`, also returning (id, node) of every row this commit removed:
        the `done` ones that were there, and those the cap dropped."""
        import sqlite3

        db = self._need_db()
        ids: list[int | None] = []
        removed: list[tuple[int, str]] = []
        first_new = self._next_id
        stamp = self._stamp + 1  # a sequence, never the wall clock (which can step back)
        db.execute("BEGIN IMMEDIATE")
        try:
            done = list(done)
            if done:
                self._remove(db, done, removed)
            for b in batches:
                data, packed = _deflate(b.data)
                size = len(data) + len(b.msg_id) + ROW_OVERHEAD
                if size > self.max_bytes:
                    self.dropped_points += b.points
                    self.dropped_batches += 1
                    ids.append(None)
                    continue
                db.execute(
                    "INSERT INTO batch (id, node, msg_id, points, data, zlib) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (self._next_id, b.node, b.msg_id, b.points, data, packed),
                )
                ids.append(self._next_id)
                self._next_id += 1
                self.bytes += size
                self.batches += 1
                self.points += b.points
                self.written_batches += 1
                self.written_bytes += len(data)
            if seqs:
                db.executemany(
                    "INSERT INTO sender (epoch, seq, updated) VALUES (?, ?, ?) "
                    "ON CONFLICT(epoch) DO UPDATE SET seq = excluded.seq, updated = excluded.updated",
                    [(e, s, stamp) for e, s in seqs.items()],
                )
            trimmed = self._trim(db, removed)
            new_epochs = len(seqs.keys() - self._seqs.keys()) if seqs else 0
            if trimmed or len(self._seqs) + new_epochs > KEEP_EPOCHS:
                db.execute(
                    "DELETE FROM sender WHERE epoch NOT IN "
                    "(SELECT epoch FROM sender ORDER BY updated DESC LIMIT ?)",
                    (KEEP_EPOCHS,),
                )
            if trimmed:
                db.executemany(
                    "INSERT INTO counter (name, value) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    [
                        ("dropped_points", self.dropped_points),
                        ("dropped_batches", self.dropped_batches),
                    ],
                )
            db.execute("COMMIT")
        except BaseException:
            # a full disk may have rolled the transaction back already: the error
            # to report is the first one, not "cannot rollback"
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            self._reload(db)
            # `updated` orders the senders for pruning: it only grows (old spools held
            # wall-clock seconds; the sequence goes on from the largest)
            self._stamp = db.execute("SELECT coalesce(max(updated), 0) FROM sender").fetchone()[0]
            self._next_id = max([self._next_id, *(i + 1 for i in ids if i is not None)])
            raise
        if seqs:
            self._stamp = stamp
            self._seqs.update(seqs)
            if len(self._seqs) > KEEP_EPOCHS:
                self._seqs = dict(db.execute("SELECT epoch, seq FROM sender"))
        removed = [(rid, node) for rid, node in removed if rid < first_new]  # older rows only
        return [i if i is not None and i > trimmed else None for i in ids], removed

    def _remove(
        self, db: sqlite3.Connection, ids: list[int], removed: list[tuple[int, str]]
    ) -> None:
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"SELECT id, node, points, length(data) + length(msg_id) FROM batch "
                f"WHERE id IN ({marks})",
                chunk,
            ).fetchall()
            db.execute(f"DELETE FROM batch WHERE id IN ({marks})", chunk)
            for rid, node, pts, size in rows:
                removed.append((rid, node))
                self.batches -= 1
                self.points -= pts
                self.bytes -= size + ROW_OVERHEAD

    def _trim(self, db: sqlite3.Connection, removed: list[tuple[int, str]]) -> int:
        """Drop the oldest batches while over the cap; count them; return the last id dropped."""
        if self.bytes <= self.max_bytes:
            return 0
        excess = self.bytes - self.max_bytes
        rows = db.execute(
            "SELECT id, node, points, length(data) + length(msg_id) FROM batch ORDER BY id"
        )
        last = 0
        freed = n = pts = 0
        for rid, node, p, size in rows:
            last = rid
            removed.append((rid, node))
            freed += size + ROW_OVERHEAD
            n += 1
            pts += p
            if freed >= excess:
                break
        rows.close()
        db.execute("DELETE FROM batch WHERE id <= ?", (last,))
        self.bytes -= freed
        self.batches -= n
        self.points -= pts
        self.dropped_points += pts
        self.dropped_batches += n
        return last

    def _reload(self, db: sqlite3.Connection) -> None:
        """Senders' seqs and the batch totals, as the database has them."""
        self._seqs = {e: s for e, s in db.execute("SELECT epoch, seq FROM sender")}
        n, pts, size = db.execute(
            "SELECT count(*), coalesce(sum(points), 0), "
            "coalesce(sum(length(data) + length(msg_id)), 0) FROM batch"
        ).fetchone()
        self.batches, self.points, self.bytes = n, pts, size + n * ROW_OVERHEAD

    # -- the NATS side -------------------------------------------------------------
    def read(self, after: int = 0, limit: int = 100) -> list[Stored]:
        """Up to `limit` batches with id > `after`, oldest first."""
        db = self._need_db()
        return [
            Stored(rid, node, msg_id, points, zlib.decompress(data) if packed else data)
            for rid, node, msg_id, points, data, packed in db.execute(
                "SELECT id, node, msg_id, points, data, zlib FROM batch "
                "WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit),
            )
        ]

    def rows_per_node(self) -> dict[str, int]:
        """How many batches each node has in the spool (read once, when the bridge starts)."""
        db = self._need_db()
        return dict(db.execute("SELECT node, count(*) FROM batch GROUP BY node"))

    def stats(self) -> dict[str, int]:
        return {
            "spool_points": self.points,
            "spool_batches": self.batches,
            "spool_bytes": self.bytes,
            "spool_dropped": self.dropped_points,
            "spool_dropped_batches": self.dropped_batches,
            "spool_written_batches": self.written_batches,
            "spool_written_bytes": self.written_bytes,
        }

    def _need_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"spool {self.path} is not open")
        return self._db


def _deflate(data: bytes) -> tuple[bytes, int]:
    """(bytes to store, 1 if deflated): deflated when that is smaller."""
    if len(data) >= 64:
        z = zlib.compress(data, 1)
        if len(z) < len(data):
            return z, 1
    return data, 0


# --- measuring write amplification ----------------------------------------------


class SpoolError(OSError):
    """The spool cannot be opened or written; the message names the path and the reason."""


def process_io(pid: int | str = "self") -> dict[str, int]:
    """A process's I/O counters from /proc/PID/io (empty where there is none)."""
    try:
        with open(f"/proc/{pid}/io") as f:
            return {k: int(v) for k, v in (line.split(":") for line in f if ":" in line)}
    except OSError:
        return {}


def _sample_batch(node: str, start: int, n: int) -> bytes:
    t = time.time_ns()
    return msgpack.packb(
        [
            {"node": node, "type": "count", "key": "0", "value": start + i, "time": t, "origin": ""}
            for i in range(n)
        ],
        use_bin_type=True,
    )


def write_cost(
    points: int = 100_000,
    points_per_commit: int = 50,
    directory: str | None = None,
    max_bytes: int = 64 * 1024 * 1024,
) -> dict[str, Any]:
    """Bytes written to disk per 1,000 points through a spool, as the bridge uses it.

    Each commit adds one batch of `points_per_commit` points and removes the batch
    published before it (NATS up, the steady state). The spool's file growth
    (database + WAL) and the process's `write()` byte count are measured, after a
    final checkpoint so that the bytes copied from the WAL into the database count.
    """
    with tempfile.TemporaryDirectory(prefix="edgert-spool-", dir=directory) as d:
        path = Path(d) / "spool.db"
        payload = 0
        with Spool(path, max_bytes) as spool:
            io0 = process_io()
            t0 = time.perf_counter()
            prev: list[int] = []
            sent = 0
            seq = 0
            while sent < points:
                n = min(points_per_commit, points - sent)
                data = _sample_batch("bench", sent, n)
                payload += len(data)
                seq += 1
                prev = spool.commit(
                    [Batch("bench", f"bench.1:{seq}:bench", n, data)], {"bench.1": seq}, prev
                )
                sent += n
            spool.commit(done=prev)
            spool._need_db().execute("PRAGMA wal_checkpoint(TRUNCATE)")
            elapsed = time.perf_counter() - t0
            io1 = process_io()
        files = sum(p.stat().st_size for p in Path(d).iterdir())
    written = io1.get("wchar", 0) - io0.get("wchar", 0)
    disk = io1.get("write_bytes", 0) - io0.get("write_bytes", 0)
    k = points / 1000
    return {
        "points": points,
        "points_per_commit": points_per_commit,
        "payload_bytes_per_1000": round(payload / k),
        "written_bytes_per_1000": round(written / k),
        "block_write_bytes_per_1000": round(disk / k),
        "amplification": round(written / payload, 2) if payload else None,
        "file_bytes_after": files,
        "commits_per_s": round(seq / elapsed) if elapsed else None,
    }
