"""Raw Python baselines for the point path: what plain pyzmq + msgpack + nats-py cost.

`RawPath` runs, for a `with` block, the least a gateway could do in Python:

- producers: one process per node that wakes every `tick` (10 ms), builds the
  points due at its rate as the same six-key maps edgert carries, coalesces
  them into one msgpack array and PUSHes it (`rate=None`: a pre-packed batch of
  `batch` points, sent as fast as the socket takes it, or `pace` times a second);
- a forwarder: one process that PULLs every batch and publishes its bytes
  unchanged on `<subject_prefix>.<node>` with nats-py.

No acknowledgements, no spool, no supervision: the floor edgert's figures are
compared with. `pids()` lists the processes whose CPU counts; `forwarder_pid`
the forwarder alone. Every process is bounded in time and killed when the block
ends.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq

__all__ = ["RawPath", "point_map", "payload_per_point"]


def point_map(node: str, value: int, t_ns: int) -> dict[str, Any]:
    """One point as edgert's bus and NATS payloads carry it."""
    return {"node": node, "type": "n", "key": "0", "value": value, "time": t_ns, "origin": ""}


def payload_per_point(node: str, value: int) -> float:
    """msgpack bytes per point of a 1,000-point batch of counter points near `value`."""
    t = time.time_ns()
    return len(msgpack.packb([point_map(node, value + i, t) for i in range(1000)])) / 1000


def _produce(
    endpoint: str,
    node: str,
    rate: float | None,
    tick: float,
    batch: int,
    seconds: float,
    pace: float | None = None,
) -> None:
    zctx = zmq.Context(1)
    sock = zctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    name = node.encode()
    start = time.monotonic()
    end = start + seconds
    try:
        if rate is None:
            first = 1_000_000  # counter values as large as a gateway's after a while
            t = time.time_ns()
            data = msgpack.packb([point_map(node, first + i, t) for i in range(batch)])
            sent = 0
            while time.monotonic() < end:
                if pace is not None:  # `pace` batches a second, on schedule
                    delay = start + sent / pace - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                sock.send_multipart([name, data])
                sent += 1
            return
        emitted = 0
        next_tick = start
        while True:
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now = time.monotonic()
            if now >= end:
                return
            due = int((now - start) * rate) + 1 - emitted
            if due > 0:
                t = time.time_ns()
                maps = [point_map(node, emitted + i, t) for i in range(due)]
                sock.send_multipart([name, msgpack.packb(maps)])
                emitted += due
            next_tick += tick
            if next_tick < now:
                next_tick = now + tick
    finally:
        sock.close(0)
        zctx.term()


def _forward(endpoint: str, url: str, subject_prefix: str, conn: Any) -> None:
    async def main() -> None:
        import nats

        nc = await nats.connect(url)
        zctx = zmq.Context(1)
        sock = zctx.socket(zmq.PULL)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(endpoint)
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        fd = sock.getsockopt(zmq.FD)
        loop.add_reader(fd, wake.set)
        loop.add_reader(conn.fileno(), wake.set)
        subjects: dict[bytes, str] = {}
        conn.send("ready")
        try:
            while not conn.poll():
                while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    node, data = sock.recv_multipart(zmq.NOBLOCK)
                    subject = subjects.get(node)
                    if subject is None:
                        subject = subjects[node] = f"{subject_prefix}.{node.decode()}"
                    await nc.publish(subject, data)
                wake.clear()
                if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    try:
                        async with asyncio.timeout(0.1):
                            await wake.wait()
                    except TimeoutError:
                        pass
        finally:
            loop.remove_reader(fd)
            loop.remove_reader(conn.fileno())
            sock.close(0)
            zctx.term()
            await nc.close()

    try:
        asyncio.run(main())
    finally:
        conn.close()


class RawPath:
    """Raw producers -> PUSH/PULL -> a nats-py forwarder, for a `with` block."""

    def __init__(
        self,
        directory: str | Path,
        url: str,
        subject_prefix: str,
        nodes: list[str],
        rate: float | None,
        seconds: float,
        tick: float = 0.01,
        batch: int = 1000,
        pace: float | None = None,
    ) -> None:
        self.endpoint = f"ipc://{directory}/raw.sock"
        self.url = url
        self.subject_prefix = subject_prefix
        self.nodes = nodes
        self.rate = rate
        self.seconds = seconds
        self.tick = tick
        self.batch = batch
        self.pace = pace
        self.procs: list[Any] = []
        self.forwarder: Any = None
        self.conn: Any = None

    def __enter__(self) -> RawPath:
        ctx = mp.get_context("spawn")
        try:
            self.conn, child = ctx.Pipe()
            self.forwarder = ctx.Process(
                target=_forward,
                args=(self.endpoint, self.url, self.subject_prefix, child),
                name="bench-raw-forwarder",
            )
            self.forwarder.start()
            child.close()
            if not self.conn.poll(30) or self.conn.recv() != "ready":
                raise RuntimeError("the raw forwarder did not start")
            for node in self.nodes:
                p = ctx.Process(
                    target=_produce,
                    args=(
                        self.endpoint,
                        node,
                        self.rate,
                        self.tick,
                        self.batch,
                        self.seconds,
                        self.pace,
                    ),
                    name=f"bench-raw-{node}",
                )
                self.procs.append(p)
                p.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def forwarder_pid(self) -> int:
        return self.forwarder.pid

    def pids(self) -> list[int]:
        """The forwarder and every producer: the processes whose CPU the baseline costs."""
        return [p.pid for p in [self.forwarder, *self.procs] if p is not None and p.pid]

    def close(self) -> None:
        """End the producers, then the forwarder; kill what does not end. Harmless twice."""
        procs, self.procs = self.procs, []
        fwd, self.forwarder = self.forwarder, None
        conn, self.conn = self.conn, None
        for p in procs:
            if p.pid is not None and p.is_alive():
                p.terminate()
        if conn is not None:
            try:
                conn.send("stop")
            except OSError:
                pass
        for p in [*procs, fwd]:
            if p is None or p.pid is None:
                continue
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
        if conn is not None:
            conn.close()
