"""Hostile command requests: deep, huge, non-finite, out of range, or a flood.

Every request gets a well-formed reply naming the problem, the bridge process
stays the same, keeps its NATS session, and its memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from edgert.bridge.commands import LOG_REFUSED, LOG_WINDOW, Commands, LogThrottle
from edgert.testing import running_gateway, status, wait_for
from edgert.testing.configs import gateway_config
from edgert.testing.nats import NatsProcess, decode, request

REQUEST_TIMEOUT = 10.0  # seconds a caller waits for a reply (generous: a loaded machine)
FLOOD_TIMEOUT = 2.0  # seconds a flooding requester waits (README: every reply comes within it)
MEMORY_SLACK_KB = 10 * 1024  # after a flood the bridge's RSS is back within this of before

GATEWAY = """
[supervisor]
backoff_min = 0.1
backoff_max = 0.5
[nats]
url = "{url}"
encoding = "msgpack"

[[driver]]
name = "boiler"
type = "sim"
[[driver.signal]]
name = "setpoint"
shape = "sine"
rate = 5.0
writable = true
"""

JSON = {"Content-Type": "application/json"}
MSGPACK = {"Content-Type": "application/msgpack"}


@contextlib.contextmanager
def running(directory: Path) -> Iterator[tuple[NatsProcess, object]]:
    """A nats-server and the gateway, up and on NATS."""
    with NatsProcess(directory / "nats") as srv:
        cfg = gateway_config(directory, GATEWAY.format(url=srv.url))
        with running_gateway(cfg):
            wait_for(
                lambda: (
                    (a := status(cfg)["by_name"])["boiler"]["state"] == "running"
                    and a["bridge"]["stats"].get("nats") == "connected"
                ),
                15,
                "boiler running, bridge on NATS",
            )
            yield srv, cfg


@pytest.fixture(scope="module")
def gateway(module_dir: Path) -> Iterator[tuple[NatsProcess, object]]:
    """One gateway for the module's tests (starting one is most of each test's time):
    each checks that the bridge is the process it found, never restarted."""
    with running(module_dir) as g:
        yield g


@pytest.fixture
def own_gateway(short_dir: Path) -> Iterator[tuple[NatsProcess, object]]:
    """A gateway of the test's own, for a test that counts from zero."""
    with running(short_dir) as g:
        yield g


def bridge(cfg: object) -> dict:
    return status(cfg)["by_name"]["bridge"]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def cmd(srv: NatsProcess, data: bytes, headers: dict) -> dict:
    return decode(request(srv.url, "edgert.gw.cmd.boiler", data, headers))


def point(value: object) -> dict:
    return {"node": "boiler", "type": "setpoint", "key": "0", "value": value, "time": 0}


HOSTILE = [
    ("deep-json", b"[" * 100000 + b"]" * 100000, JSON, "nested too deeply"),
    ("deep-msgpack", b"\x91" * 100000 + b"\xc0", MSGPACK, "nested too deeply"),
    (
        "int-2-64",
        b'[{"node":"boiler","type":"setpoint","key":"0","value":18446744073709551616,'
        b'"time":0,"origin":""}]',
        JSON,
        "point 0 (setpoint.0): value 18446744073709551616 is outside the 64-bit",
    ),
    (
        "int-negative",
        json.dumps([point(-(2**63) - 1)]).encode(),
        JSON,
        "outside the 64-bit integer range",
    ),
    ("nan-json", b'[{"type":"setpoint","value":NaN}]', JSON, "point 0 (setpoint.0): value nan"),
    ("inf-json", b'[{"type":"setpoint","value":-Infinity}]', JSON, "value -inf is not finite"),
    ("inf-msgpack", msgpack.packb([point(float("inf"))]), MSGPACK, "value inf is not finite"),
    (
        "big-time",
        json.dumps([{**point(1.0), "time": 2**70}]).encode(),
        JSON,
        "time 1180591620717411303424 is outside",
    ),
    ("huge-digits", b'[{"type":"setpoint","value":' + b"9" * 5000 + b"}]", JSON, "not valid JSON"),
    ("bad-utf8", b'[{"type":"\xff\xfe"}]', JSON, "not valid JSON"),
]


def test_hostile_requests_get_a_clear_refusal_and_the_bridge_stays(gateway) -> None:
    srv, cfg = gateway
    pid = bridge(cfg)["pid"]
    for name, data, headers, error in HOSTILE:
        reply = cmd(srv, data, headers)
        assert reply["ok"] is False, name
        assert error.replace("is not finite", "is not a finite number") in reply["error"], (
            name,
            reply,
        )
    # the omitted keys default (node, key, time, origin), and the command still works
    assert cmd(srv, b'[{"type":"setpoint","value":3}]', JSON) == {"ok": True}
    b = bridge(cfg)
    assert b["pid"] == pid and b["restarts"] == 0 and b["stats"]["nats"] == "connected"


def test_refusals_are_logged_at_most_ten_per_window() -> None:
    t = LogThrottle(limit=3, window=10.0)
    assert [t.allow(0.0), t.allow(1.0), t.allow(2.0)] == [0, 0, 0]
    assert [t.allow(3.0), t.allow(9.9)] == [None, None]  # left out, counted
    assert t.allow(10.0) == 2  # the next line logged says how many were left out
    assert t.allow(10.5) == 0 and t.left_out_total == 2


def test_behind_a_flood_every_request_is_busy_but_a_slow_round_trip_alone_refuses_none() -> None:
    c = Commands("edgert.gw", {}, 5.0, lambda parts: None, "msgpack", max_queued=10)
    now = time.monotonic()
    c.probe_out(now)
    assert all(c.admit() for _ in range(5))  # few requests: a slow probe is no flood
    c.probe_back(now + 2.0)
    assert not c.flooded and c.admit()
    c.probe_out(time.monotonic() - 1.0)  # out for a second, and a flood came meanwhile
    assert sum(c.admit() for _ in range(50)) == 10  # admitted until past max_queued
    c.probe_back(time.monotonic())
    assert c.flooded and not c.admit()
    c.probe_out(now)
    c.probe_back(now + 0.01)  # caught up: the next probe comes back at once
    assert not c.flooded and c.admit()


def test_requests_refused_for_the_in_flight_or_queued_bound_count_as_seen() -> None:
    # they were read behind the probe too: a flood of them is a flood
    c = Commands("edgert.gw", {}, 5.0, lambda parts: None, "msgpack", max_in_flight=1)
    c.probe_out(time.monotonic() - 1.0)
    assert c.admit() and not c.admit()  # the second: one already in flight
    assert not c.admit(queued=c.max_queued + 1)  # too many queued behind it
    assert c.seen == 3
    c.in_flight = 0
    assert sum(c.admit(queued=c.max_queued + 1) for _ in range(c.max_queued)) == 0
    c.probe_back(time.monotonic())
    assert c.flooded and not c.admit()  # the refused ones made the flood


def test_a_burst_of_bad_requests_is_counted_not_all_logged(own_gateway) -> None:
    srv, cfg = own_gateway
    n = 3 * LOG_REFUSED
    t0 = time.monotonic()
    for _ in range(n):
        assert cmd(srv, b"not json", JSON)["ok"] is False
    windows = int((time.monotonic() - t0) // LOG_WINDOW) + 1
    b = wait_for(lambda: (b := bridge(cfg))["stats"].get("command_errors", 0) >= n and b, 10)
    assert b["stats"]["refused_unlogged"] >= n - LOG_REFUSED * windows, b["stats"]


def garbage(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(10 if depth < 6 else 6)
    if kind == 0:
        return rng.choice([0, -1, 2**63, 2**64 - 1, -(2**63), rng.getrandbits(64)])
    if kind == 1:
        return rng.choice([0.5, float("nan"), float("inf"), -0.0, 1e308])
    if kind == 2:
        return "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(12)))
    if kind == 3:
        return rng.choice([None, True, False])
    if kind == 4:
        return rng.randbytes(rng.randrange(8))
    if kind == 5:
        return rng.choice(["setpoint", "0", "boiler", "", "a b"])
    if kind in (6, 7):
        return [garbage(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["node", "type", "key", "value", "time", "origin", "x"]
    return {rng.choice(keys): garbage(rng, depth + 1) for _ in range(rng.randrange(7))}


def test_generated_garbage_always_gets_a_well_formed_reply(gateway) -> None:
    srv, cfg = gateway
    pid = bridge(cfg)["pid"]
    rng = random.Random(8)

    async def throw() -> list[dict]:
        import nats

        nc = await nats.connect(srv.url)
        replies = []
        try:
            for _ in range(300):
                obj = garbage(rng)
                if rng.random() < 0.5:
                    data, headers = msgpack.packb(obj, use_bin_type=True), MSGPACK
                else:
                    text = json.dumps(obj, default=lambda b: b.hex())
                    data, headers = text.encode("utf-8", "surrogatepass"), JSON
                if rng.random() < 0.2:  # and random bytes, or a mangled encoding
                    data = rng.randbytes(rng.randrange(40))
                m = await nc.request("edgert.gw.cmd.boiler", data, timeout=10, headers=headers)
                replies.append(decode_reply(m))
        finally:
            await nc.close()
        return replies

    replies = asyncio.run(throw())
    assert len(replies) == 300
    for r in replies:
        assert set(r) <= {"ok", "error"} and isinstance(r["ok"], bool)
        assert r["ok"] or (isinstance(r["error"], str) and r["error"])
    b = bridge(cfg)
    assert b["pid"] == pid and b["restarts"] == 0 and b["stats"]["nats"] == "connected"


def decode_reply(m: object) -> dict:
    ctype = (m.headers or {}).get("Content-Type")
    return json.loads(m.data) if ctype == "application/json" else msgpack.unpackb(m.data)


async def flood(url: str, total: int, waits: list[float], seconds: float = 0.0) -> dict[str, int]:
    """Send `total` command requests (over `seconds`, or at full speed) and wait for
    the replies; counts by outcome ("ok", "busy", ..., "missing"); each reply's delay
    is appended to `waits`."""
    import nats

    body = msgpack.packb([point(1.5)])
    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    seen: dict[int, str] = {}
    sent: dict[int, float] = {}
    done = asyncio.Event()

    async def on_reply(m: object) -> None:
        r = msgpack.unpackb(m.data)
        i = int(m.subject.rsplit(".", 1)[1])
        seen[i] = "ok" if r["ok"] else r["error"].split(":")[0][:40]
        waits.append(time.monotonic() - sent[i])
        if len(seen) == total:
            done.set()

    inbox = nc.new_inbox()
    await nc.subscribe(inbox + ".*", cb=on_reply, pending_msgs_limit=total * 2)
    start = time.monotonic()
    try:
        for i in range(total):
            sent[i] = time.monotonic()
            await nc.publish("edgert.gw.cmd.boiler", body, reply=f"{inbox}.{i}", headers=MSGPACK)
            if i % 250 == 249:
                await nc.flush()
                ahead = start + (i + 1) * seconds / total - time.monotonic()
                if ahead > 0:  # paced
                    await asyncio.sleep(ahead)
        await nc.flush()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(90):
                await done.wait()
    finally:
        await nc.close()
    counts: dict[str, int] = {"missing": total - len(seen)}
    for v in seen.values():
        counts[v] = counts.get(v, 0) + 1
    return counts


def test_a_request_flood_is_answered_busy_and_memory_stays_bounded(gateway) -> None:
    srv, cfg = gateway
    pid = bridge(cfg)["pid"]
    before = rss_kb(pid)
    waits: list[float] = []
    counts = asyncio.run(flood(srv.url, 20_000, waits))
    assert counts["missing"] == 0, counts
    # Answered while a caller still waits: a request queued behind a flood is
    # refused "busy" at once instead of answered a minute late. (Before the
    # queue bound, the last of 20,000 replies came ~16 s after its request.)
    assert max(waits) < REQUEST_TIMEOUT, (max(waits), counts)
    assert set(counts) <= {"missing", "ok", "busy"}, counts
    assert counts.get("ok", 0) > 0, counts
    b = bridge(cfg)
    assert b["pid"] == pid and b["restarts"] == 0 and b["stats"]["nats"] == "connected"
    after = rss_kb(pid)
    print(f"flood {counts}; slowest reply {max(waits):.1f} s; bridge RSS {before} kB -> {after} kB")
    assert after - before < MEMORY_SLACK_KB, (before, after)


@pytest.mark.slow
def test_two_clients_flooding_for_ten_seconds_are_all_answered(gateway) -> None:
    """The contract's flood: 10,000 requests/s for 10 s from two clients.

    Every request is answered (ok or busy) within the requester's 2 s, the bridge
    keeps its NATS session (no new connect) and keeps forwarding points meanwhile,
    and its memory is back within 10 MB of before.
    """
    srv, cfg = gateway
    b = bridge(cfg)
    pid, attempts = b["pid"], b["stats"]["nats_connect_attempts"]
    before = rss_kb(pid)
    waits: list[float] = []
    points: list[float] = []  # when each point of the sim driver arrived

    async def both() -> tuple[list[dict[str, int]], float, float]:
        import nats

        nc = await nats.connect(srv.url)

        async def on_points(m: object) -> None:
            points.extend([time.monotonic()] * len(msgpack.unpackb(m.data)))

        await nc.subscribe("edgert.gw.p.boiler", cb=on_points)
        try:
            start = time.monotonic()
            results = await asyncio.gather(
                *(flood(srv.url, 50_000, waits, seconds=10.0) for _ in "ab")
            )
            return list(results), start, time.monotonic()
        finally:
            await nc.close()

    results, start, end = asyncio.run(both())
    for counts in results:
        assert counts["missing"] == 0, results
        assert set(counts) <= {"missing", "ok", "busy"}, results
    slowest = max(waits)
    b = bridge(cfg)
    assert b["pid"] == pid and b["restarts"] == 0 and b["stats"]["nats"] == "connected"
    assert b["stats"]["nats_connect_attempts"] == attempts, b["stats"]  # the session held
    during = sum(start <= t <= end for t in points)
    # wait for the queues to empty: memory is back near where it was
    after = wait_for(
        lambda: (r := rss_kb(pid)) - before < MEMORY_SLACK_KB and r, 10, "bridge RSS back"
    )
    print(
        f"two-client flood {results}; slowest reply {slowest:.2f} s; {during} points "
        f"forwarded in {end - start:.1f} s; RSS {before} -> {after} kB"
    )
    assert during >= 25, (during, end - start)  # the sim publishes 5 a second
    # The 2 s hold while the bridge gets about a third of a core; on a machine
    # loaded past twice its cores it gets less, and the backlog waits in its socket.
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if slowest >= FLOOD_TIMEOUT and load > 2 * cores:
        pytest.skip(f"slowest reply {slowest:.1f} s at load {load:.1f} on {cores} cores")
    assert slowest < FLOOD_TIMEOUT, (slowest, results)
