"""The benchmarks' NATS subscriber: a nats-py client in its own process, counting points.

`Listener(url, subject, check=...)` subscribes for the length of a `with`
block. In the default mode it reads only each batch's array header (cheap
enough to keep up with any bridge); with `check=True` it decodes every point
and keeps, per node, which counter values arrived (so a lost value and a
duplicate are told apart) and, with `latency=True`, receipt time minus the
point's `time`. It reconnects at once when the server comes back, and notes
when points resume after a silence. `snapshot()` asks it for its figures so
far; `missing({node: n})` for the counter values below n that never came;
`latencies(t0, t1)` for the latencies of points that arrived between two
monotonic times (CLOCK_MONOTONIC is the same in every process).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from array import array
from typing import Any

import msgpack

from edgert.roundtrip import round_trip

__all__ = ["Listener"]

GAP = 0.5  # seconds of silence after which the next arrival counts as "resumed"


class _Counts:
    """What arrived: totals, counter values per node, latencies, resumptions."""

    def __init__(self, check: bool, latency: bool) -> None:
        self.check = check
        self.latency = latency
        self.points = 0
        self.messages = 0
        self.last = 0.0
        self.resumed: list[float] = []
        self.nodes: dict[str, list[Any]] = {}  # node -> [seen bytearray, received, dups, low]
        self.other = 0  # points whose value is not a counter
        self.lat_at = array("d")
        self.lat_ns = array("q")

    def add(self, data: bytes) -> None:
        now = time.monotonic()
        if now - self.last >= GAP:
            self.resumed.append(now)
        self.last = now
        self.messages += 1
        if not self.check:
            u = msgpack.Unpacker()
            u.feed(data)
            self.points += u.read_array_header()
            return
        pts = msgpack.unpackb(data, raw=False)
        self.points += len(pts)
        t_ns = time.time_ns()
        for p in pts:
            v = p.get("value")
            node = self.nodes.get(p.get("node"))
            if node is None:
                node = self.nodes.setdefault(p.get("node"), [bytearray(1024), 0, 0, 0])
            if type(v) is not int or v < 0:
                self.other += 1
                continue
            seen = node[0]
            if v >= len(seen):
                seen.extend(bytes(max(v + 1 - len(seen), len(seen))))
            if seen[v]:
                node[2] += 1
            else:
                seen[v] = 1
                node[1] += 1
            if self.latency:
                self.lat_at.append(now)
                self.lat_ns.append(t_ns - p.get("time", 0))

    def snapshot(self) -> dict[str, Any]:
        nodes = {}
        for name, node in self.nodes.items():
            seen = node[0]
            low = seen.find(0, node[3])
            node[3] = len(seen) if low < 0 else low
            high = len(seen) - 1
            while high >= 0 and not seen[high]:
                high -= 1
            nodes[name] = {
                "received": node[1],
                "duplicates": node[2],
                "contiguous": node[3],  # every value below this one arrived
                "highest": high,
            }
        return {
            "at": time.monotonic(),
            "points": self.points,
            "messages": self.messages,
            "resumed": list(self.resumed),
            "nodes": nodes,
            "other": self.other,
        }

    def missing(self, limits: dict[str, int]) -> dict[str, int]:
        """Per node, how many of the values 0 .. limit-1 never arrived."""
        out = {}
        for name, limit in limits.items():
            seen = self.nodes[name][0] if name in self.nodes else bytearray()
            head = seen[:limit]
            out[name] = head.count(0) + max(0, limit - len(head))
        return out

    def latencies(self, t0: float, t1: float) -> list[int]:
        return [ns for at, ns in zip(self.lat_at, self.lat_ns, strict=True) if t0 <= at < t1]


def _serve(url: str, subject: str, check: bool, latency: bool, conn: Any) -> None:
    """The listener process: subscribe, count, answer requests until "stop"."""

    async def main() -> None:
        import nats

        counts = _Counts(check, latency)
        errors: list[str] = []
        reconnects: list[float] = []

        async def on_msg(msg: Any) -> None:
            counts.add(msg.data)

        async def on_error(e: Exception) -> None:
            errors.append(repr(e))

        async def on_reconnect() -> None:
            reconnects.append(time.monotonic())

        nc = await nats.connect(
            url,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.01,
            error_cb=on_error,
            reconnected_cb=on_reconnect,
        )
        try:
            await nc.subscribe(
                subject, cb=on_msg, pending_msgs_limit=1_000_000, pending_bytes_limit=-1
            )
            await round_trip(nc, 10.0)  # not nc.flush(): its PING can overtake the SUB
            loop = asyncio.get_running_loop()
            request = asyncio.Event()
            loop.add_reader(conn.fileno(), request.set)
            conn.send("ready")
            try:
                while True:
                    await request.wait()
                    request.clear()
                    while conn.poll():
                        ask = conn.recv()
                        if ask[0] == "latencies":
                            conn.send(counts.latencies(ask[1], ask[2]))
                            continue
                        if ask[0] == "missing":
                            conn.send(counts.missing(ask[1]))
                            continue
                        snap = counts.snapshot()
                        snap["errors"] = errors[-5:]
                        snap["reconnects"] = list(reconnects)
                        conn.send(snap)
                        if ask[0] == "stop":
                            return
            finally:
                loop.remove_reader(conn.fileno())
        finally:
            await nc.close()

    try:
        asyncio.run(main())
    finally:
        conn.close()


class Listener:
    """A NATS subscriber process counting the points on `subject`, for a `with` block."""

    def __init__(self, url: str, subject: str, check: bool = False, latency: bool = False):
        self.url = url
        self.subject = subject
        self.check = check or latency
        self.latency = latency
        self.proc: Any = None
        self.conn: Any = None
        self.final: dict[str, Any] | None = None

    def __enter__(self) -> Listener:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_serve,
            args=(self.url, self.subject, self.check, self.latency, child),
            name="bench-listener",
        )
        try:
            self.proc.start()
            child.close()
            if not self.conn.poll(30) or self.conn.recv() != "ready":
                raise RuntimeError(f"the benchmark's subscriber to {self.subject} did not start")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def _ask(self, *request: Any, timeout: float = 30.0) -> Any:
        if self.conn is None:
            raise RuntimeError("the listener is not running")
        self.conn.send(request)
        if not self.conn.poll(timeout):
            raise RuntimeError("the benchmark's subscriber did not answer")
        return self.conn.recv()

    def snapshot(self) -> dict[str, Any]:
        """Totals so far: points, messages, per-node counters, resumptions, reconnects."""
        return self._ask("snapshot")

    def latencies(self, t0: float, t1: float) -> list[int]:
        """Receipt minus `time` (ns) of every point that arrived in [t0, t1) (monotonic)."""
        return self._ask("latencies", t0, t1)

    def missing(self, limits: dict[str, int]) -> dict[str, int]:
        """Per node, how many of the counter values 0 .. limit-1 never arrived (needs check)."""
        return self._ask("missing", limits)

    def close(self) -> dict[str, Any] | None:
        """Stop the subscriber (its last snapshot is kept in `final`); harmless twice."""
        proc, conn = self.proc, self.conn
        self.proc = self.conn = None
        try:
            if conn is not None and proc is not None and proc.is_alive():
                try:
                    conn.send(("stop",))
                    if conn.poll(10):
                        self.final = conn.recv()
                except (OSError, EOFError):
                    pass
        finally:
            if proc is not None and proc.pid is not None:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
            if conn is not None:
                conn.close()
        return self.final
