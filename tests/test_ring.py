"""The outbox's ring file: what a process left unacknowledged comes back, exactly.

An outbox over a real DEALER/ROUTER pair writes its points into a ring file;
`ring.close()` without `remove` leaves the file as a crash does (the writes are
in the page cache already), and a second outbox opening the same path must get
back every unacknowledged point, in its batch and seq, and nothing acked.
A forked writer SIGKILLed mid-stream checks the same against real torn writes.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import zmq

from edgert.bus import Outbox, decode_frame, encode_frame
from edgert.bus.ring import HEADER, RESERVE, SLOTS, Ring, discard, ring_path
from edgert.point import Point


class Bridge:
    """A ROUTER standing in for the bridge: reads P frames, sends acks."""

    def __init__(self, zctx: zmq.Context, where: Path) -> None:
        self.zctx = zctx
        self.endpoint = f"ipc://{where}/b.sock"
        self.router = zctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.router.bind(self.endpoint)
        self.dealers: list[zmq.Socket] = []

    def dealer(self) -> zmq.Socket:
        s = self.zctx.socket(zmq.DEALER)
        self.dealers.append(s)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.ROUTING_ID, b"drv")
        s.connect(self.endpoint)
        return s

    def frames(self, expect: int = 0) -> list[tuple]:
        """(seq, first, resent, values) of each P frame waiting; with `expect`, returns
        as soon as that many came (else once none comes for 50 ms)."""
        out: list[tuple] = []
        while (not expect or len(out) < expect) and self.router.poll(300 if not out else 50):
            _, data = self.router.recv_multipart()
            raw = msgpack.unpackb(data)
            f = decode_frame(data)
            out.append((f[2], f[3], len(raw) == 6, [p.value for p in f[4]]))
        return out

    def ack(self, box: Outbox, seq: int) -> None:
        self.router.send_multipart([b"drv", encode_frame("A", box.epoch, seq)])
        assert box.sock.poll(2000)
        box.on_readable()


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[Bridge]:
    zctx = zmq.Context(1)
    b = Bridge(zctx, tmp_path)
    try:
        yield b
    finally:
        for s in [b.router, *b.dealers]:
            s.close(0)
        zctx.term()


def points(start: int, n: int) -> list[Point]:
    return [Point("drv", "n", "0", i) for i in range(start, start + n)]


def open_box(bridge: Bridge, path: Path, capacity: int = 1 << 20, **kw) -> tuple[Outbox, Ring]:
    ring = Ring.open(path, "drv.1.a", capacity)
    return Outbox(bridge.dealer(), ring.epoch, ring=ring, **kw), ring


def crash(box: Outbox, ring: Ring) -> None:
    ring.close()  # the file stays as the process left it
    box.sock.close(0)


def test_a_restarted_outbox_sends_what_was_not_acked_with_its_seqs_then_its_own(
    bridge, tmp_path
) -> None:
    path = ring_path(tmp_path, "drv")
    box, ring = open_box(bridge, path)
    box.publish(points(0, 2500))
    box.flush()
    assert [(s, f) for s, f, _, _ in bridge.frames()] == [(1, 1), (2, 1), (3, 1)]
    bridge.ack(box, 1)
    box.publish(points(2500, 10))  # published, not sealed into a batch yet
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(path.parent).st_mode & 0o777 == 0o700
    crash(box, ring)

    box, ring = open_box(bridge, path)
    assert box.epoch == "drv.1.a" and box.recovered == 1510 and box.buffered == 1510
    box.publish(points(9000, 1))
    box.flush()
    got = bridge.frames()
    assert [(s, f, r) for s, f, r, _ in got] == [(2, 2, True), (3, 2, True), (4, 2, False)]
    values = [v for *_, vs in got for v in vs]
    assert values == list(range(1000, 2510)) + [9000]
    bridge.ack(box, 4)
    assert box.buffered == 0
    ring.close(remove=True)
    assert not path.exists()


def test_a_torn_last_record_is_ignored(bridge, tmp_path) -> None:
    path = ring_path(tmp_path, "drv")
    box, ring = open_box(bridge, path)
    for i in range(5):
        box.publish(points(i * 10, 10))
    crash(box, ring)
    with open(path, "r+b") as f:  # the last record (10 points) half written
        data = f.read()
        end = HEADER + len(data[HEADER:].rstrip(b"\0"))
        f.seek(end - 60)
        f.write(b"\0" * 60)
    box, ring = open_box(bridge, path)
    assert box.recovered == 40
    box.flush()
    assert [v for *_, vs in bridge.frames() for v in vs] == list(range(40))
    ring.close(remove=True)


def test_a_torn_header_slot_falls_back_to_the_other(bridge, tmp_path) -> None:
    path = ring_path(tmp_path, "drv")
    box, ring = open_box(bridge, path)
    box.publish(points(0, 1500))
    box.flush()
    bridge.frames()
    bridge.ack(box, 1)
    crash(box, ring)
    with open(path, "r+b") as f:  # the slot the ack wrote, torn
        newest = max(SLOTS, key=lambda at: struct.unpack_from("<Q", _read(f, at, 8))[0])
        f.seek(newest + 8)
        f.write(b"\xff")
    box, ring = open_box(bridge, path)
    assert box.recovered == 1500  # batch 1 again (the bridge drops it by its seq): none lost
    box.flush()
    assert [s for s, *_ in bridge.frames()] == [1, 2]
    ring.close(remove=True)


def _read(f, at: int, n: int) -> bytes:
    f.seek(at)
    return f.read(n)


def test_the_ring_wraps_around_and_recovers_across_the_end(bridge, tmp_path) -> None:
    path = ring_path(tmp_path, "drv")
    box, ring = open_box(bridge, path, capacity=2 * RESERVE, max_batch=100)
    n = 0
    for _ in range(150):  # ~5 KiB a batch, one always unacked: the ring never empties
        box.publish(points(n, 100))
        n += 100
        box.flush()
        assert len(bridge.frames(expect=1)) == 1  # the batch just flushed
        bridge.ack(box, box._seq - 1)
    assert ring._tail > 3 * ring.capacity and box.dropped == 0
    box.publish(points(n, 30))
    crash(box, ring)
    box, ring = open_box(bridge, path, capacity=2 * RESERVE, max_batch=100)
    assert box.recovered == 130
    box.flush()
    assert [v for *_, vs in bridge.frames() for v in vs] == list(range(n - 100, n + 30))
    ring.close(remove=True)


def test_a_full_ring_drops_the_oldest_and_counts_them(bridge, tmp_path) -> None:
    path = ring_path(tmp_path, "drv")
    box, ring = open_box(bridge, path, capacity=2 * RESERVE, max_batch=100)
    for i in range(100):  # never acked: ~300 KiB into a 128 KiB ring
        box.publish(points(i * 100, 100))
        box.flush()
    assert box.dropped > 0
    assert box.dropped + box.buffered == 10_000
    kept = box.buffered
    bridge.frames()  # what went out before the crash (the window's worth)
    crash(box, ring)
    box, ring = open_box(bridge, path, capacity=2 * RESERVE, max_batch=100)
    assert box.recovered == kept
    box.flush()
    assert [v for *_, vs in bridge.frames() for v in vs] == list(range(10_000 - kept, 10_000))
    ring.close(remove=True)


def test_a_discarded_ring_counts_its_points_and_is_gone(bridge, tmp_path) -> None:
    path = ring_path(tmp_path, "drv")
    box, ring = open_box(bridge, path)
    box.publish(points(0, 77))
    crash(box, ring)
    assert discard(path) == 77
    assert not path.exists()
    assert discard(path) == 0


def test_a_writer_sigkilled_mid_stream_leaves_every_accepted_point(bridge, tmp_path) -> None:
    rng = random.Random()
    for round_ in range(8):
        path = ring_path(tmp_path, f"w{round_}")
        ledger = tmp_path / f"ledger{round_}"
        fd = os.open(ledger, os.O_RDWR | os.O_CREAT, 0o600)
        os.pwrite(fd, bytes(8), 0)
        pid = os.fork()
        if pid == 0:  # the writer: publish as fast as it can, note each accepted count
            try:
                ring = Ring.open(path, "w.1.a", 2 * RESERVE)
                sock = zmq.Context(1).socket(zmq.DEALER)  # connected to nothing
                box = Outbox(sock, ring.epoch, ring=ring, max_batch=50)
                n = 0
                while True:
                    k = 1 + n % 7
                    box.publish(points(n, k))
                    n += k
                    os.pwrite(fd, n.to_bytes(8, "little"), 0)
                    if n % 3 == 0:
                        box.flush()
            finally:
                os._exit(1)
        want = rng.randint(200, 20_000)
        while int.from_bytes(os.pread(fd, 8, 0), "little") < want:
            os.sched_yield()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        accepted = int.from_bytes(os.pread(fd, 8, 0), "little")
        os.close(fd)
        ring = Ring.open(path, "w.2.b", 2 * RESERVE)
        rec = ring.recovered
        values = [p["value"] for _, maps, _ in rec.batches for p in msgpack.unpackb(maps)]
        values += [msgpack.unpackb(p)["value"] for p in rec.pending]
        ring.close(remove=True)
        # nothing is acked, so the ring keeps the newest points, dropping whole batches
        assert values == list(range(values[0], values[0] + len(values)))
        assert values[-1] + 1 >= accepted, f"round {round_}: accepted {accepted}"


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "run"
    path.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_ring_out_of_space_is_dropped_and_the_outbox_goes_on_in_memory(
    bridge, small_tmpfs, caplog
) -> None:
    path = ring_path(small_tmpfs, "drv")
    ring = Ring.open(path, "drv.1.a", 8 << 20)  # 8 MiB of ring on a 512 KiB file system
    box = Outbox(bridge.dealer(), ring.epoch, ring=ring)
    for i in range(20_000):  # ~1 MB of points, none acked yet
        box.publish([Point("drv", "n", "0", i)])
    assert not box.crash_safe and not path.exists()
    assert "outbox file" in caplog.text and "No space left" in caplog.text
    got: list[int] = []
    while len(got) < 20_000:
        box.flush()
        frames = bridge.frames()
        assert frames, f"stuck at {len(got)}"
        got += [v for *_, vs in frames for v in vs]
        bridge.ack(box, frames[-1][0])
    assert got == list(range(20_000)) and box.dropped == 0


def test_crash_safe_outbox_false_runs_the_drivers_without_ring_files(make_config, nats_server):
    from edgert.testing import running_gateway, wait_for
    from edgert.testing.nats import Subscriber

    sim = '[[driver]]\nname = "gen"\ntype = "sim"\n[[driver.signal]]\nname = "n"\nrate = 50.0\n'
    cfg = make_config(f'[nats]\nurl = "{nats_server.url}"\n{sim}')
    assert cfg.gateway.crash_safe_outbox  # the default
    plain = make_config(f'crash_safe_outbox = false\n[nats]\nurl = "{nats_server.url}"\n{sim}')
    with running_gateway(plain), Subscriber(nats_server.url, "edgert.gw.p.>") as sub:
        wait_for(lambda: len(sub.points()) > 20, 20, "points through NATS")
        outbox = plain.runtime_dir / "outbox"
        assert not outbox.exists() or not list(outbox.iterdir())
