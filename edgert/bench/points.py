"""Benchmarks of the point path, each beside a baseline measured in the same run.

- throughput: a `sim` counter driver publishing as fast as it can, through the
  bus, the spool and the bridge, to a nats-py subscriber in another process
  (points/s counted there), core NATS and JetStream, beside raw pyzmq
  PUSH/PULL between two processes of the same msgpack batches (built the same
  way, from `Point`s, 1,000 a batch as the outbox seals them; no acks, no NATS,
  so the JetStream row is held to the same bar as the core one), and of
  pre-packed batches (transport alone); the two taking turns three times, each
  figure the median of its turns; target >= 0.7 of the first;
- latency: `ctx.publish()` to the subscriber's receipt at 1,000 points/s, one
  point per call (`edgert.bench.producer`: every 10 ms the points due),
  p50/p99 of `receipt - point.time`, beside the same points made the same way
  (every 10 ms, each stamped as it is made, one message a tick) through raw
  ZeroMQ PUSH/PULL and then NATS with no spool in between, the two taking
  turns (10 s each, twice: 20,000 samples a side); targets: p50 < 1 ms and
  p99 < 5 ms above the raw path's. (A raw path sending one point a
  millisecond measures 1 ms less at p50 on this machine: every process on a
  path woken once per 10 ms wakes colder; that is the shape of the load, not
  a cost of edgert's);
- spool: bytes written to disk per 1,000 points by the spool alone
  (`spool.write_cost`), and by the bridge with NATS healthy (the spool should
  stay unwritten), as payload bytes the spool wrote and as the process's
  `write()` bytes (`/proc/<pid>/io`). The cost of an outage is the `outage`
  suite's.

A nats-server is started for the run on a free port; each gateway's runtime
directory (its drivers' outbox ring files) is on a tmpfs, as deployed. Every function returns a
plain dict; `edgert bench` prints them.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack
import zmq

from edgert.bench.gateway import producer, sim_counter
from edgert.bench.measure import percentiles, rnd
from edgert.bench.workdir import runtime_dir, workdir
from edgert.config import GatewayConfig, loads
from edgert.point import Point
from edgert.roundtrip import round_trip
from edgert.spool import process_io, write_cost
from edgert.testing import running_gateway, status, wait_for
from edgert.testing.nats import NatsProcess

__all__ = ["throughput", "latency", "spool_cost", "run_all"]

BATCH = 1000  # points per bus frame, as the Outbox seals them
TICK = 0.01  # the latency test's producers wake this often (`edgert.bench.producer`'s default)


# --- the subscriber process ------------------------------------------------------


def _subscriber(
    url: str, subject: str, warmup: float, seconds: float, mode: str, conn: Any
) -> None:
    """Counts points (mode "count") or their latencies (mode "latency"); sends the result."""

    async def main() -> dict[str, Any]:
        import nats

        nc = await nats.connect(url)
        sub = await nc.subscribe(subject, pending_msgs_limit=1_000_000, pending_bytes_limit=-1)
        await round_trip(nc, 10.0)  # not nc.flush(): its PING can overtake the SUB
        conn.send("ready")
        first = None
        counted = 0
        lat: list[int] = []
        start = end = 0.0
        while True:
            try:
                msg = await sub.next_msg(timeout=30)
            except nats.errors.TimeoutError:
                break
            now = time.monotonic()
            if first is None:
                first = now
                start, end = first + warmup, first + warmup + seconds
            if now >= end:
                break
            if now < start:
                continue
            if mode == "count":
                u = msgpack.Unpacker()
                u.feed(msg.data)
                counted += u.read_array_header()
            else:
                t = time.time_ns()
                for p in msgpack.unpackb(msg.data, raw=False):
                    lat.append(t - p["time"])
        await nc.close()
        return {"points": counted, "seconds": seconds, "latencies_ns": lat}

    conn.send(asyncio.run(main()))
    conn.close()


@contextmanager
def _subscribed(url: str, subject: str, warmup: float, seconds: float, mode: str) -> Iterator[Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_subscriber, args=(url, subject, warmup, seconds, mode, child))
    proc.start()
    child.close()
    try:
        if not parent.poll(30) or parent.recv() != "ready":
            raise RuntimeError("the benchmark's subscriber did not start")
        yield parent
    finally:
        proc.join(60)
        if proc.is_alive():
            proc.kill()
            proc.join()
        parent.close()


def _result(conn: Any, timeout: float) -> dict[str, Any]:
    if not conn.poll(timeout):
        raise RuntimeError("the benchmark's subscriber gave no result")
    return conn.recv()


# --- gateways under test ---------------------------------------------------------


def _gateway(d: str, url: str, driver: str, jetstream: bool, run: str) -> GatewayConfig:
    text = (
        f'[gateway]\nid = "bench"\nruntime_dir = "{run}"\ndata_dir = "{d}/data"\n'
        f'[nats]\nurl = "{url}"\njetstream = {str(jetstream).lower()}\n'
        f"spool_max_bytes = {1 << 30}\n{driver}"
    )
    return loads(text, f"{d}/bench.toml")


def _run_gateway(
    d: str,
    srv: NatsProcess,
    driver: str,
    jetstream: bool,
    warmup: float,
    seconds: float,
    mode: str,
) -> dict[str, Any]:
    with runtime_dir() as run:  # on a tmpfs, as deployed (the drivers' ring files)
        return _run_gateway_in(d, run, srv, driver, jetstream, warmup, seconds, mode)


def _run_gateway_in(
    d: str,
    run: str,
    srv: NatsProcess,
    driver: str,
    jetstream: bool,
    warmup: float,
    seconds: float,
    mode: str,
) -> dict[str, Any]:
    cfg = _gateway(d, srv.url, driver, jetstream, run)
    with _subscribed(srv.url, "edgert.bench.p.>", warmup, seconds, mode) as conn:
        with running_gateway(cfg, log_level=logging.CRITICAL):
            b = wait_for(lambda: status(cfg)["by_name"]["bridge"], 15, "the bridge")
            io0 = process_io(b["pid"])
            pts0 = b["stats"].get("points_in", 0)
            spooled0 = b["stats"].get("spool_written_bytes", 0)
            res = _result(conn, warmup + seconds + 60)
            snap = status(cfg)["by_name"]
            io1 = process_io(b["pid"])
            pts1 = snap["bridge"]["stats"].get("points_in", 0)
    spooled = max(1, pts1 - pts0)
    res["bridge_write_bytes_per_1000"] = round(
        (io1.get("write_bytes", 0) - io0.get("write_bytes", 0)) / spooled * 1000
    )
    res["bridge_wchar_per_1000"] = round(
        (io1.get("wchar", 0) - io0.get("wchar", 0)) / spooled * 1000
    )
    res["spool_written_bytes_per_1000"] = round(
        (snap["bridge"]["stats"].get("spool_written_bytes", 0) - spooled0) / spooled * 1000
    )
    res["fast_batches"] = snap["bridge"]["stats"].get("fast_batches", 0)
    res["batches_out"] = snap["bridge"]["stats"].get("batches_out", 0)
    res["driver_dropped"] = snap["gen"]["dropped"]
    res["spool_dropped"] = snap["bridge"]["dropped"]
    return res


# --- baselines --------------------------------------------------------------------


def _baseline_sender(endpoint: str, seconds: float, prepacked: bool, rate: float | None) -> None:
    zctx = zmq.Context(1)
    sock = zctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    n = 0
    fixed = msgpack.packb([Point("gen", "n", "0", i).to_map() for i in range(BATCH)])
    start = next_at = time.monotonic()
    end = start + seconds
    try:
        while time.monotonic() < end:
            if rate is not None:  # as the producer: every TICK, the points due, one message
                next_at += TICK
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                due = int((time.monotonic() - start) * rate) + 1 - n
                maps = []
                for _ in range(due):  # each point stamped as it is made, as `publish` does
                    maps.append(Point("gen", "n", "0", n, time.time_ns()).to_map())
                    n += 1
                if next_at <= time.monotonic():  # late (a busy machine): skip ahead
                    next_at = time.monotonic()
                if not maps:
                    continue
                data = msgpack.packb(maps, use_bin_type=True)
            elif prepacked:
                data = fixed
            else:
                pts = [Point("gen", "n", "0", n + i) for i in range(BATCH)]
                data = msgpack.packb([p.to_map() for p in pts], use_bin_type=True)
                n += BATCH
            while not sock.poll(100, zmq.POLLOUT):  # never block past the deadline
                if time.monotonic() >= end:
                    return
            try:
                sock.send(data, zmq.NOBLOCK)
            except zmq.Again:
                continue
    finally:
        sock.close(0)
        zctx.term()


def _baseline_receiver(endpoint: str, warmup: float, seconds: float, conn: Any) -> None:
    zctx = zmq.Context(1)
    sock = zctx.socket(zmq.PULL)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    conn.send("ready")
    counted = 0
    sock.recv()  # the first batch starts the clock
    first = time.monotonic()
    start, end = first + warmup, first + warmup + seconds
    try:
        while sock.poll(5000):
            data = sock.recv()
            now = time.monotonic()
            if now >= end:
                break
            if now >= start:
                u = msgpack.Unpacker()
                u.feed(data)
                counted += u.read_array_header()
    finally:
        sock.close(0)
        zctx.term()
    conn.send({"points": counted, "seconds": seconds})


def _reap(procs: list[Any], timeout: float) -> None:
    """Join the processes that were started; kill what does not end in `timeout`."""
    for p in procs:
        if p.pid is None:
            continue  # never started
        p.join(timeout)
        if p.is_alive():
            p.kill()
            p.join()


def _zmq_baseline(d: str, warmup: float, seconds: float, prepacked: bool) -> float:
    ctx = mp.get_context("spawn")
    endpoint = f"ipc://{d}/baseline.sock"
    parent, child = ctx.Pipe()
    recv = ctx.Process(target=_baseline_receiver, args=(endpoint, warmup, seconds, child))
    send = ctx.Process(
        target=_baseline_sender, args=(endpoint, warmup + seconds + 1, prepacked, None)
    )
    try:
        recv.start()
        child.close()
        if not parent.poll(30) or parent.recv() != "ready":
            raise RuntimeError("the baseline receiver did not start")
        send.start()
        res = _result(parent, warmup + seconds + 60)
        send.terminate()  # the figures are in: no need to wait out the sender's deadline
    finally:
        _reap([send, recv], warmup + seconds + 30)
        parent.close()
    return res["points"] / res["seconds"]


def _forwarder(endpoint: str, url: str, subject: str, seconds: float, conn: Any) -> None:
    """Baseline for latency: PULL from ZeroMQ and publish each batch on NATS at once."""

    async def main() -> None:
        import nats

        nc = await nats.connect(url)
        zctx = zmq.Context(1)
        sock = zctx.socket(zmq.PULL)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(endpoint)
        conn.send("ready")
        loop = asyncio.get_running_loop()
        fd = sock.getsockopt(zmq.FD)
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    await nc.publish(subject, sock.recv(zmq.NOBLOCK))
                ready = loop.create_future()
                loop.add_reader(fd, lambda f=ready: f.done() or f.set_result(None))
                try:
                    await asyncio.wait([ready], timeout=0.1)
                finally:
                    loop.remove_reader(fd)
        finally:
            sock.close(0)
            zctx.term()
            await nc.close()

    asyncio.run(main())


def _latency_baseline(
    d: str, url: str, rate: float, warmup: float, seconds: float
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    endpoint = f"ipc://{d}/forward.sock"
    total = warmup + seconds + 2
    with _subscribed(url, "baseline.p", warmup, seconds, "latency") as conn:
        p2, c2 = ctx.Pipe()
        fwd = ctx.Process(target=_forwarder, args=(endpoint, url, "baseline.p", total + 1, c2))
        send = ctx.Process(target=_baseline_sender, args=(endpoint, total, False, rate))
        try:
            fwd.start()
            c2.close()
            if not p2.poll(30) or p2.recv() != "ready":
                raise RuntimeError("the baseline forwarder did not start")
            send.start()
            res = _result(conn, total + 60)
            for p in (send, fwd):  # the figures are in: no need to wait out their deadlines
                p.terminate()
        finally:
            _reap([send, fwd], total + 30)
            p2.close()
    return res


# --- the suite --------------------------------------------------------------------


def throughput(
    seconds: float = 3.0,
    warmup: float = 2.0,
    jetstream: bool = False,
    prepacked: bool = True,
    rounds: int = 3,
) -> dict[str, Any]:
    """Points/s from a sim driver to a NATS subscriber, beside raw ZeroMQ PUSH/PULL.

    edgert and the raw baselines take turns, `rounds` times, each measured over
    `seconds` after `warmup`; each figure is the median of its rounds, and the ratio
    is of the medians. The raw baseline is one process building points as fast as
    a core lets it, so it swings with whatever else the machine runs (by a fifth
    from one run to the next on a shared 2-core machine, more between the core
    and JetStream rows of one run when they were measured once each); the turns
    put edgert and its baseline under the same load, and the rounds' figures are
    kept (`*_by_round`) to show the spread.
    """
    mine: list[float] = []
    base: list[float] = []
    packed: list[float] = []
    totals = dict.fromkeys(("driver_dropped", "spool_dropped", "fast_batches", "batches_out"), 0)
    last: dict[str, Any] = {}
    with workdir() as (d, srv):
        for i in range(rounds):
            here = f"{d}/t{i}"  # each round its own runtime and data directories
            Path(here).mkdir()
            last = _run_gateway(
                here, srv, sim_counter("gen", 1e6), jetstream, warmup, seconds, "count"
            )
            mine.append(last["points"] / last["seconds"])
            for k in totals:
                totals[k] += last[k]
            base.append(_zmq_baseline(here, warmup, seconds, prepacked=False))
            if prepacked:
                packed.append(_zmq_baseline(here, warmup, seconds, prepacked=True))
    m, b = statistics.median(mine), statistics.median(base)
    p = statistics.median(packed) if packed else 0.0
    return {
        "edgert_points_s": round(m),
        "baseline_zmq_points_s": round(b),
        "baseline_zmq_prepacked_points_s": round(p),
        "ratio": round(m / b, 3) if b else None,
        "ratio_prepacked": round(m / p, 3) if p else None,
        "rounds": rounds,
        "edgert_points_s_by_round": [round(x) for x in mine],
        "baseline_zmq_points_s_by_round": [round(x) for x in base],
        "jetstream": jetstream,
        **totals,
        "bridge_write_bytes_per_1000": last["bridge_write_bytes_per_1000"],
        "bridge_wchar_per_1000": last["bridge_wchar_per_1000"],
        "spool_written_bytes_per_1000": last["spool_written_bytes_per_1000"],
    }


def latency(
    rate: float = 1000.0,
    seconds: float = 10.0,
    warmup: float = 1.0,
    jetstream: bool = False,
    rounds: int = 2,
) -> dict[str, Any]:
    """publish() to subscriber receipt at `rate` points/s, beside raw ZeroMQ + NATS.

    edgert and the raw path take turns, `rounds` times each, and each side's
    percentiles are of all its samples: a burst of load on the machine then
    falls on both sides alike rather than on whichever ran during it. The p99
    of each round is kept too (`*_p99_by_round_ms`), to show the spread.
    """
    mine_ns: list[int] = []
    theirs_ns: list[int] = []
    by_round: dict[str, list[float | None]] = {"edgert": [], "baseline": []}
    last: dict[str, Any] = {}
    with workdir() as (d, srv):
        for i in range(rounds):
            here = f"{d}/l{i}"  # each round its own runtime and data directories
            Path(here).mkdir()
            last = _run_gateway(
                here, srv, producer("gen", rate), jetstream, warmup, seconds, "latency"
            )
            base = _latency_baseline(d, srv.url, rate, warmup, seconds)
            mine_ns += last["latencies_ns"]
            theirs_ns += base["latencies_ns"]
            by_round["edgert"].append(percentiles(last["latencies_ns"])["p99_ms"])
            by_round["baseline"].append(percentiles(base["latencies_ns"])["p99_ms"])
    mine = percentiles(mine_ns)
    theirs = percentiles(theirs_ns)
    above = {
        f"{q}_above_raw_ms": rnd(mine[f"{q}_ms"] - theirs[f"{q}_ms"])
        if mine[f"{q}_ms"] is not None and theirs[f"{q}_ms"] is not None
        else None
        for q in ("p50", "p99")
    }
    return above | {
        "rate_points_s": rate,
        "rounds": rounds,
        "edgert_p50_ms": mine["p50_ms"],
        "edgert_p99_ms": mine["p99_ms"],
        "edgert_samples": mine["samples"],
        "edgert_p99_by_round_ms": by_round["edgert"],
        "baseline_p50_ms": theirs["p50_ms"],
        "baseline_p99_ms": theirs["p99_ms"],
        "baseline_samples": theirs["samples"],
        "baseline_p99_by_round_ms": by_round["baseline"],
        "jetstream": jetstream,
        "bridge_write_bytes_per_1000": last["bridge_write_bytes_per_1000"],
        "bridge_wchar_per_1000": last["bridge_wchar_per_1000"],
        "spool_written_bytes_per_1000": last["spool_written_bytes_per_1000"],
        "fast_batches": last["fast_batches"],
        "batches_out": last["batches_out"],
    }


def spool_cost() -> dict[str, Any]:
    """Bytes written per 1,000 points by the spool: small commits (1,000 points/s) and large."""
    small = write_cost(points=50_000, points_per_commit=50)
    large = write_cost(points=200_000, points_per_commit=BATCH)
    return {
        "payload_bytes_per_1000": small["payload_bytes_per_1000"],
        "written_bytes_per_1000_at_50_per_commit": small["written_bytes_per_1000"],
        "amplification_at_50_per_commit": small["amplification"],
        "written_bytes_per_1000_at_1000_per_commit": large["written_bytes_per_1000"],
        "amplification_at_1000_per_commit": large["amplification"],
    }


def run_all() -> dict[str, Any]:
    lat = latency()
    spool = spool_cost()
    spool["bridge_healthy_spool_bytes_per_1000"] = lat["spool_written_bytes_per_1000"]
    spool["bridge_healthy_wchar_per_1000"] = lat["bridge_wchar_per_1000"]
    return {
        "throughput": throughput(),
        "throughput_jetstream": throughput(jetstream=True, prepacked=False),
        "latency": lat,
        "spool": spool,
    }
