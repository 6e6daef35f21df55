"""The outbox's crash-safe store: what a driver published, in a memory-mapped file.

Each actor that publishes keeps one ring file, `<runtime_dir>/outbox/<name>.ring`
(mode 0600, in a 0700 directory), mapped into its process. The page cache holds
it, so it outlives the process: a SIGKILL or a segfault loses nothing the
outbox had accepted. There is no fsync (a power cut empties the runtime
directory, a tmpfs, anyway) and, on a tmpfs, no disk write at all.

The file is a 4 KiB header page and a byte ring of `capacity` bytes, addressed
by a logical offset that only grows (physical = logical mod capacity). Records:

    crc32 u32 | body length u32 | logical offset u64 | body
    body "P": first ordinal u64, points u32, the packed point maps, back to back
    body "S": seq u64, first ordinal u64, points u32: batch `seq` is those points

Points are numbered (ordinals) in publish order; a P record is written when
`ctx.publish` hands points over, an S record when the outbox seals them into a
numbered batch, always before that batch is sent. The header has two slots
(generation, head offset, head ordinal, last acknowledged seq, crc), written
alternately when acknowledgements free space, so a torn header write leaves
the previous slot valid. Only the record being written when the process died
can be torn; its crc (and the logical offset, which a record from an earlier
lap round the ring does not have) ends the scan there.

`Ring.open(path, epoch, capacity)` reads what a previous process of the same
actor left (its epoch, its unacknowledged batches with their seqs, its points
not yet sealed), writes it compactly into a fresh file (renamed over the old
one, so a crash during recovery loses nothing either) and returns the ring
with that in `recovered`. The outbox then continues the same epoch: the bridge
drops any batch it already took by its seq, and JetStream drops by message id
what it already has. Space is allocated (`posix_fallocate`) as the ring first
reaches it, so a full tmpfs is an `OSError` here, never a SIGBUS later; an
empty ring starts its next record at the start of the file again, so a healthy
path uses a few pages.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import struct
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

__all__ = [
    "Ring",
    "Recovered",
    "ring_path",
    "ring_capacity",
    "discard",
    "array_header",
    "MIN_CAPACITY",
    "filesystem",
]

MAGIC = b"EDGERTR1"
HEADER = 4096
_FIXED = struct.Struct("<8sQH200s")  # magic, capacity, epoch length, epoch; crc follows
_SLOT = struct.Struct("<QQQQ")  # generation, head offset, head ordinal, last acked seq
SLOTS = (512, 576)
_REC = struct.Struct("<IIQ")  # crc, body length, logical offset
_P = struct.Struct("<cQI")  # b"P", first ordinal, points
_S = struct.Struct("<cQQI")  # b"S", seq, first ordinal, points
_PH = struct.Struct("<IIQcQI")  # a P record up to its maps
_PT = struct.Struct("<IQcQI")  # the same without its crc (which covers these bytes)
_SH = struct.Struct("<IIQcQQI")  # an S record
_U32 = struct.Struct("<I")
_crc32 = zlib.crc32
_PH_SIZE, _REC_SIZE = _PH.size, _REC.size
S_SIZE = _REC.size + _S.size
CHUNK = 256 * 1024  # bytes allocated at a time
RESERVE = 64 * 1024  # kept free by P records, for the S records that seal them
MIN_CAPACITY = 4 * 1024 * 1024 + RESERVE  # the least a driver gets: any batch the bridge takes fits


def ring_path(runtime_dir: os.PathLike[str] | str, name: str) -> Path:
    """The ring file of actor `name` in a gateway's runtime directory."""
    return Path(runtime_dir) / "outbox" / f"{name}.ring"


def ring_capacity(max_points: int) -> int:
    """The ring size for an outbox that holds up to `max_points` points: 128 bytes a
    point (a packed point map is about 60), at least `MIN_CAPACITY`."""
    return max(MIN_CAPACITY, 128 * max_points)


array_header = msgpack.Packer().pack_array_header  # the msgpack header of an n-item array


@dataclass
class Recovered:
    """What a previous process of the actor left unacknowledged."""

    acked: int = 0  # its last seq acknowledged (or dropped): batches go on from there
    seq: int = 0  # its last seq sealed: new batches are numbered after it
    batches: list[tuple[int, bytes, int]] = field(default_factory=list)  # (seq, maps, points)
    pending: list[bytes] = field(default_factory=list)  # packed maps not sealed yet

    @property
    def points(self) -> int:
        return sum(n for _, _, n in self.batches) + len(self.pending)


class Ring:
    """One actor's ring file, mapped; owned by the outbox's loop (see the module doc)."""

    def __init__(self, path: Path, fd: int, capacity: int, epoch: str) -> None:
        self.path = path
        self.capacity = capacity
        self.epoch = epoch
        self.recovered = Recovered()
        self._fd = fd
        self._mm = mmap.mmap(fd, HEADER + capacity)
        self._allocated = 0  # bytes of the ring allocated so far
        self._gen = 0
        self._head = 0  # logical offset of the oldest record still needed
        self._tail = 0  # logical offset of the next record
        self._head_ord = 0  # the oldest point not acknowledged
        self._next_ord = 0  # the next point's ordinal
        self._sealed_ord = 0  # the first point not in a batch
        self._acked = 0
        self._live: deque[tuple[int, int, int]] = deque()  # P records: (offset, ordinal, n)
        self._fast_end = 0  # logical offset `append` may write up to on its fast path
        self._lap_at = -HEADER  # the tail's lap's start less HEADER (see _bounds)

    # -- opening -------------------------------------------------------------------
    @classmethod
    def open(
        cls, path: os.PathLike[str] | str, epoch: str, capacity: int, lock_timeout: float = 5.0
    ) -> Ring:
        """Open the ring at `path`, recovering what a previous process left in it.

        The recovered epoch replaces `epoch` when there is one. Raises OSError when
        the file cannot be made (no space, no permission) or stays locked by a
        live process for `lock_timeout` seconds.
        """
        path = Path(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        old_fd = None
        old: tuple[str, Recovered] | None = None
        try:
            with contextlib.suppress(FileNotFoundError):
                old_fd = os.open(path, os.O_RDWR)
                _lock(old_fd, lock_timeout, path)
                old = _read(old_fd)  # None when it is not a ring: it is replaced
            rec = old[1] if old is not None else Recovered()
            need = sum(len(b) + 2 * S_SIZE for _, b, _ in rec.batches)
            need += sum(len(p) + S_SIZE for p in rec.pending) + RESERVE
            capacity = _pages(max(capacity, 2 * RESERVE, 2 * need))
            tmp = path.with_name(path.name + ".new")
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.ftruncate(fd, HEADER + capacity)
                os.posix_fallocate(fd, 0, HEADER)
                ring = cls(path, fd, capacity, old[0] if old is not None else epoch)
                ring._start(rec)
                os.rename(tmp, path)
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            return ring
        finally:
            if old_fd is not None:
                os.close(old_fd)

    def _start(self, rec: Recovered) -> None:
        e = self.epoch.encode()[:200]
        fixed = _FIXED.pack(MAGIC, self.capacity, len(e), e)
        # Written, not stored through the mapping: on a disk file system (ext4) the
        # first write fault on a new file's mapping waits for the journal (5-15 ms of
        # every restart of a driver whose runtime directory is not a tmpfs); a write
        # puts the page in the cache, and the mapping's first store is then cheap.
        os.pwrite(self._fd, fixed + struct.pack("<I", zlib.crc32(fixed)), 0)
        self._acked = rec.acked
        self._write_slot()
        for seq, maps, n in rec.batches:  # the capacity is at least twice what they take
            self.append(_maps_of(maps), n)
            self.seal(seq, n)
        for i in range(0, len(rec.pending), 1000):
            chunk = rec.pending[i : i + 1000]
            self.append(b"".join(chunk), len(chunk))
        self.recovered = rec

    # -- writing ---------------------------------------------------------------------
    @staticmethod
    def fits(data_bytes: int, capacity: int) -> bool:
        """Can a P record with `data_bytes` of packed maps fit in an empty ring?"""
        return _PH.size + data_bytes <= capacity - RESERVE

    def append(self, data: bytes, n: int) -> bool:
        """Store `n` published points (their packed maps, back to back); False when
        there is no room for them (nothing written)."""
        lo = self._tail
        size = _PH_SIZE + len(data)
        if lo + size > self._fast_end:  # no room, or allocate, wrap or start over
            return self._append_slow(data, n)
        # this runs for every `publish` call a driver makes: as few steps as it takes
        nxt = self._next_ord
        rec = _PT.pack(size - _REC_SIZE, lo, b"P", nxt, n) + data  # all but the crc
        at = lo - self._lap_at
        self._mm[at : at + size] = _crc32(rec).to_bytes(4, "little") + rec  # one copy
        self._tail = lo + size
        self._live.append((lo, nxt, n))
        self._next_ord = nxt + n
        return True

    def _append_slow(self, data: bytes, n: int) -> bool:
        lo = self._tail
        size = _PH.size + len(data)
        if size > self.capacity - (lo - self._head) - RESERVE:
            return False
        nxt = self._next_ord
        lo = self._lo()
        self._put(lo, _PH.pack(0, size - _REC.size, lo, b"P", nxt, n), data)
        self._live.append((lo, nxt, n))
        self._next_ord = nxt + n
        self._bounds()
        return True

    def _bounds(self) -> None:
        """Work out how far `append` may go without its slow path: to the end of the
        space allocated in the tail's lap round the ring, short of the head's last lap
        and the reserve, and not at all when an empty ring is to start over (`_lo`).
        Called after whatever moves the head, a lap or the allocation."""
        cap, tail = self.capacity, self._tail
        lap = tail - tail % cap
        self._lap_at = lap - HEADER  # physical offset in the file = logical - this
        self._fast_end = min(lap + self._allocated, self._head + cap - RESERVE)
        if self._head == tail and tail % cap >= CHUNK:
            self._fast_end = 0

    def seal(self, seq: int, n: int) -> bool:
        """The next `n` points not yet in a batch are batch `seq` (written before it
        is sent); False when there is no room, not even in the reserve."""
        if S_SIZE > self.capacity - (self._tail - self._head):
            return False
        lo = self._lo()
        self._put(lo, _SH.pack(0, _S.size, lo, b"S", seq, self._sealed_ord, n), b"")
        self._sealed_ord += n
        self._bounds()
        return True

    def release(self, n: int, seq: int) -> None:
        """The oldest `n` points, the batches up to `seq`, are acknowledged or dropped."""
        self._head_ord += n
        self._acked = max(self._acked, seq)
        live = self._live
        if self._head_ord >= self._next_ord:
            live.clear()  # all acknowledged (the usual ack): no record to walk past
        while live and live[0][1] + live[0][2] <= self._head_ord:
            live.popleft()
        self._head = live[0][0] if live else self._tail
        self._write_slot()
        self._bounds()

    def _lo(self) -> int:
        """Where the next record goes: the tail, or the start of the file again when
        the ring is empty (a healthy path stays in its first pages)."""
        cap = self.capacity
        if self._head == self._tail and self._tail % cap >= CHUNK:
            self._head = self._tail = (self._tail // cap + 1) * cap
            self._write_slot()
        return self._tail

    def _put(self, lo: int, head: bytes, data: bytes) -> None:
        """Write the record at `lo`: `head` (its crc left 0, filled here) then `data`."""
        crc = zlib.crc32(data, zlib.crc32(head[4:]))
        p = lo % self.capacity
        size = len(head) + len(data)
        if p + size <= self._allocated:  # the common case: no wrap, no allocation
            at = HEADER + p
            mm = self._mm
            mm[at : at + len(head)] = head
            _U32.pack_into(mm, at, crc)
            mm[at + len(head) : at + size] = data
        else:
            self._put_wrapped(p, _U32.pack(crc) + head[4:] + data)
        self._tail = lo + size

    def _put_wrapped(self, p: int, rec: bytes) -> None:
        cap = self.capacity
        end = p + len(rec)
        if end <= cap:
            self._allocate(end)
            self._mm[HEADER + p : HEADER + end] = rec
        else:
            self._allocate(cap)
            cut = cap - p
            self._mm[HEADER + p : HEADER + cap] = rec[:cut]
            self._mm[HEADER : HEADER + end - cap] = rec[cut:]

    def _allocate(self, upto: int) -> None:
        if upto > self._allocated:
            new = min(self.capacity, -(-upto // CHUNK) * CHUNK)
            os.posix_fallocate(self._fd, HEADER + self._allocated, new - self._allocated)
            self._allocated = new

    def _write_slot(self) -> None:
        self._gen += 1
        body = _SLOT.pack(self._gen, self._head, self._head_ord, self._acked)
        at = SLOTS[self._gen % 2]
        self._mm[at : at + _SLOT.size + 4] = body + struct.pack("<I", zlib.crc32(body))

    # -- closing ---------------------------------------------------------------------
    def close(self, remove: bool = False) -> None:
        """Unmap and close; `remove` deletes the file (a clean stop: nothing to recover)."""
        if self._fd < 0:
            return
        if remove:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self._mm.close()
        os.close(self._fd)
        self._fd = -1


def filesystem(path: os.PathLike[str] | str) -> str | None:
    """The type of the file system `path` is on ("tmpfs", "ext4", ...), from
    /proc/self/mountinfo; None when that cannot be read."""
    target = os.path.realpath(path)
    best, kind = "", None
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                mnt = left.split()[4].replace("\\040", " ")
                inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best):
                    best, kind = mnt, right.split()[0]
    except (OSError, IndexError):
        return None
    return kind


def discard(path: os.PathLike[str] | str) -> int:
    """Delete a ring file nobody will recover (its actor was removed); the points
    it held unacknowledged (0 when there is none or it is unreadable)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return 0
    try:
        got = _read(fd)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(path)
    return got[1].points if got is not None else 0


# -- reading a ring a previous process left ---------------------------------------------
def _lock(fd: int, timeout: float, path: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise OSError(
                    errno.EBUSY, f"outbox file still in use by another process after {timeout:g}s"
                ) from None
            time.sleep(0.01)


def _read(fd: int) -> tuple[str, Recovered] | None:
    """(epoch, what is unacknowledged) of a ring file; None when it holds no ring."""
    try:
        return _read_mapped(fd)
    except (ValueError, struct.error):  # not a file this module wrote
        return None


def _read_mapped(fd: int) -> tuple[str, Recovered] | None:
    size = os.fstat(fd).st_size
    if size <= HEADER:
        return None
    with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mm:
        fixed = mm[: _FIXED.size]
        (crc,) = struct.unpack_from("<I", mm, _FIXED.size)
        magic, cap, elen, ebytes = _FIXED.unpack(fixed)
        if magic != MAGIC or crc != zlib.crc32(fixed) or cap + HEADER > size or elen > 200:
            return None
        slot = None
        for at in SLOTS:
            body = mm[at : at + _SLOT.size]
            (c,) = struct.unpack_from("<I", mm, at + _SLOT.size)
            if c == zlib.crc32(body):
                s = _SLOT.unpack(body)
                if slot is None or s[0] > slot[0]:
                    slot = s
        if slot is None:
            return None
        _, head, head_ord, acked = slot
        return ebytes[:elen].decode(errors="replace"), _scan(mm, cap, head, head_ord, acked)


def _scan(mm: mmap.mmap, cap: int, lo: int, head_ord: int, acked: int) -> Recovered:
    rec = Recovered(acked=acked, seq=acked)
    points: list[bytes] = []  # from ordinal head_ord on
    sealed = head_ord  # the first ordinal not in a recovered batch
    while True:
        crc, blen, at = _REC.unpack(_get(mm, cap, lo, _REC.size))
        if at != lo or not _S.size <= blen <= cap - _REC.size:
            break
        rest = _get(mm, cap, lo + 4, blen + _REC.size - 4)
        if zlib.crc32(rest) != crc:
            break  # torn: the write the process died in
        body = rest[_REC.size - 4 :]
        if body[:1] == b"P":
            _, first, n = _P.unpack_from(body)
            maps = _split(body[_P.size :], n)
            want = head_ord + len(points)  # the ordinal this record must go on from
            if maps is None or not (first == want if points else first <= want <= first + n):
                break
            points.extend(maps[want - first :])
        elif body[:1] == b"S" and blen == _S.size:
            _, seq, first, n = _S.unpack(body)
            rec.seq = max(rec.seq, seq)
            if first + n > head_ord:
                if first != sealed or first + n > head_ord + len(points):
                    break
                part = points[first - head_ord : first - head_ord + n]
                rec.batches.append((seq, array_header(n) + b"".join(part), n))
                sealed = first + n
        else:
            break
        lo += _REC.size + blen
    rec.pending = points[sealed - head_ord :]
    return rec


def _get(mm: mmap.mmap, cap: int, lo: int, n: int) -> bytes:
    p = lo % cap
    if p + n <= cap:
        return mm[HEADER + p : HEADER + p + n]
    return mm[HEADER + p : HEADER + cap] + mm[HEADER : HEADER + p + n - cap]


def _split(data: bytes, n: int) -> list[bytes] | None:
    """`n` packed maps back to back, one bytes each; None when they are not."""
    u = msgpack.Unpacker()
    u.feed(data)
    out = []
    at = 0
    try:
        for _ in range(n):
            u.skip()
            end = u.tell()
            out.append(data[at:end])
            at = end
    except Exception:  # noqa: BLE001 - anything odd: not a record this ring wrote
        return None
    return out if at == len(data) else None


def _maps_of(packed: bytes) -> bytes:
    """The maps of a packed array, without its header."""
    b = packed[0]
    return packed[1:] if b & 0xF0 == 0x90 else packed[3:] if b == 0xDC else packed[5:]


def _pages(n: int) -> int:
    return -(-n // mmap.PAGESIZE) * mmap.PAGESIZE
