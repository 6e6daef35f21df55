"""Commands: a request on `<prefix>.<gateway>.cmd.<node>` to the driver of that node.

The request carries a batch of points for that node; it goes to the driver that
owns the node (`routes`) as `["C", id, maps]`, and the driver's
`["R", id, ok, error]` becomes the reply `{"ok": true}` or
`{"ok": false, "error": "..."}`. An unknown node, a driver that is not running,
a malformed payload or no answer within `timeout` gets an error reply naming
the problem. Commands come from programs nobody here wrote: a point may leave
out `node`, `key`, `time` and `origin`; anything deep, huge, non-finite or out
of range is refused, any exception while handling a request becomes an error
reply, and past `max_in_flight` requests waiting for drivers, past
`max_queued` requests queued behind them, or while a flood keeps the reading
of requests `MAX_LAG` behind, the reply is "busy" at once (a flood is answered quickly rather than
late). Refusals are logged at most `LOG_REFUSED` a `LOG_WINDOW`
(a flood of bad requests does not flood the log or the SD card); the others
are counted (`refused_unlogged`) and the next line logged says how many were
left out. `Commands` belongs to the bridge's one loop.
"""

from __future__ import annotations

import asyncio
import errno
import json
import math
import time
from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from ..bus import encode_frame
from ..point import MAX_BATCH_BYTES, BadBatch, Point, points_from_maps, unpack_limited
from .payload import CONTENT_TYPES, request_encoding

__all__ = ["Commands", "LogThrottle", "decode_command", "MAX_IN_FLIGHT", "MAX_QUEUED", "MAX_LAG"]

MAX_IN_FLIGHT = 256  # requests waiting for a driver's answer; past it: "busy"
MAX_QUEUED = 128  # requests received but not yet looked at; past it: "busy"
MAX_LAG = 0.25  # seconds the command connection's reading is behind; past it: "busy"
INT_MIN, UINT_MAX = -(2**63), 2**64 - 1  # what msgpack can carry to the driver
TIME_MAX = 2**63 - 1
LOG_REFUSED, LOG_WINDOW = 10, 10.0  # refusals logged per window of seconds, at most


class LogThrottle:
    """At most `limit` log lines per `window` seconds; counts the ones left out."""

    def __init__(self, limit: int = LOG_REFUSED, window: float = LOG_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self.start = -math.inf
        self.logged = 0
        self.left_out = 0  # since the last line logged
        self.left_out_total = 0

    def allow(self, now: float) -> int | None:
        """None: leave this line out; else log it, with this many left out before it."""
        if now - self.start >= self.window:
            self.start, self.logged = now, 0
        if self.logged >= self.limit:
            self.left_out += 1
            self.left_out_total += 1
            return None
        self.logged += 1
        n, self.left_out = self.left_out, 0
        return n


def decode_command(data: bytes, enc: str, node: str) -> list[Point]:
    """The points of a command for `node`; raises BadBatch naming the point and key."""
    try:
        if enc == "json":
            if len(data) > MAX_BATCH_BYTES:
                raise BadBatch(f"frame of {len(data)} bytes exceeds {MAX_BATCH_BYTES}")
            obj = json.loads(data)
        else:
            obj = unpack_limited(data)
    except RecursionError:
        raise BadBatch(f"not valid {enc}: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:  # BadBatch is a ValueError
        if isinstance(e, BadBatch):
            raise
        raise BadBatch(f"not valid JSON: {e}") from None
    if isinstance(obj, list):
        now = 0
        for m in obj:
            if isinstance(m, dict):  # the defaults of DESIGN section 4
                m.setdefault("node", node)
                m.setdefault("key", "0")
                m.setdefault("origin", "")
                if "time" not in m:
                    now = now or time.time_ns()
                    m["time"] = now
    points = points_from_maps(obj)
    for i, p in enumerate(points):
        where = f"point {i} ({p.type}.{p.key})"
        v = p.value
        if isinstance(v, float) and not math.isfinite(v):
            raise BadBatch(f"{where}: value {v} is not a finite number")
        if isinstance(v, int) and not INT_MIN <= v <= UINT_MAX:
            raise BadBatch(f"{where}: value {v} is outside the 64-bit integer range")
        if p.time > TIME_MAX:
            raise BadBatch(f"{where}: time {p.time} is outside the 64-bit range")
        if p.time == 0:
            p.time = time.time_ns()
    return points


class Commands:
    """Commands in flight to drivers, by id."""

    def __init__(
        self,
        base: str,
        routes: dict[str, str],
        timeout: float,
        send: Callable[[list[bytes]], None],
        encoding: str,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self.base = base
        self.routes = routes
        self.timeout = timeout
        self.send = send  # sends a multipart message on the bus ROUTER (raises zmq.ZMQError)
        self.encoding = encoding
        self.pending: dict[int, asyncio.Future[tuple[bool, str]]] = {}
        self.next_id = 0
        self.max_in_flight = max_in_flight
        self.max_queued = max_queued
        self.in_flight = 0  # requests being handled (decoding, or waiting for a driver)
        self.seen = 0  # requests looked at by `admit` (admitted or not)
        # Behind a flood: a round trip to the server (a probe), whose answer queues
        # behind every request not read yet, took over MAX_LAG while more than
        # `max_queued` requests came. `probe`: when the one out now left, else None.
        self.probe: float | None = None
        self.probe_seen = 0
        self.flooded = False  # what the last probe back found
        self.count = 0
        self.errors = 0
        self.busy = 0  # requests refused at once because too many were in flight
        self.log_throttle = LogThrottle()
        self._busy: dict[str, tuple[bytes, dict[str, str]]] = {}  # the busy reply, by encoding

    def admit(self, queued: int = 0) -> bool:
        """True when one more request may be handled now (then `handle` must follow).

        `queued` is how many more requests wait behind this one. While a flood
        keeps the reading behind (`probe_back`), every request is answered busy, the
        cheapest way: a flood then costs no decoding, no driver's time, and drains
        soonest. A lone request on a slow or busy machine is never refused for it.
        """
        self.seen += 1  # read, so behind the probe out now if any, whatever the answer
        if self.in_flight >= self.max_in_flight or queued > self.max_queued:
            return False
        if self.flooded or (
            self.probe is not None
            and self.seen - self.probe_seen > self.max_queued
            and time.monotonic() - self.probe > MAX_LAG
        ):
            return False
        self.in_flight += 1
        return True

    def probe_out(self, now: float) -> None:
        """A probe left now (see `flooded`)."""
        self.probe, self.probe_seen = now, self.seen

    def probe_back(self, now: float) -> None:
        """The probe's answer came back now: were we behind a flood?"""
        if self.probe is not None:
            lag = now - self.probe
            self.flooded = lag > MAX_LAG and self.seen - self.probe_seen > self.max_queued
        self.probe = None

    def answer(self, cmd_id: int, ok: bool, error: str) -> None:
        """A driver's ["R", id, ok, error]."""
        fut = self.pending.get(cmd_id)
        if fut is not None and not fut.done():
            fut.set_result((ok, error))

    def cancel(self) -> None:
        for fut in self.pending.values():
            fut.cancel()

    async def refuse_busy(self, nc: Any, msg: Any) -> None:
        """The answer to a request `admit` refused, without decoding it.

        This is the path a flood takes, so it is cheap: one reply per encoding,
        made once (the figures in it are the bounds, not the moment's counts).
        """
        self.count += 1
        self.busy += 1
        self.errors += 1
        if msg.reply:
            enc = request_encoding(msg, self.encoding)
            data, headers = self._busy.get(enc) or self._busy_reply(enc)
            await nc.publish(msg.reply, data, headers=headers)

    def _busy_reply(self, enc: str) -> tuple[bytes, dict[str, str]]:
        error = (
            f"busy: {self.max_in_flight} commands in flight, {self.max_queued} queued or"
            f" {MAX_LAG:g}s behind; try again later"
        )
        reply = {"ok": False, "error": error}
        data = (
            json.dumps(reply).encode() if enc == "json" else msgpack.packb(reply, use_bin_type=True)
        )
        self._busy[enc] = (data, {"Content-Type": CONTENT_TYPES[enc]})
        return self._busy[enc]

    async def handle(self, nc: Any, msg: Any, log: Any) -> None:
        """One request from NATS (admitted): apply it and reply; never raises but on cancel."""
        try:
            self.count += 1
            try:
                error = await self.apply(msg)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # whatever a request does, it gets a reply
                error = f"the command could not be handled: {type(e).__name__}: {e}"
            if error:
                self.errors += 1
                left_out = self.log_throttle.allow(time.monotonic())
                if left_out is not None:
                    more = f" ({left_out} more refusals not logged)" if left_out else ""
                    log.warning("command on %.200s refused: %.500s%s", msg.subject, error, more)
            if not msg.reply:
                return
            reply = {"ok": True} if error is None else {"ok": False, "error": error}
            try:
                await self._reply(nc, msg, reply)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("cannot reply to a command on %.200s: %s", msg.subject, e)
        finally:
            self.in_flight -= 1

    async def _reply(self, nc: Any, msg: Any, reply: dict[str, Any]) -> None:
        enc = request_encoding(msg, self.encoding)
        data = (
            json.dumps(reply).encode() if enc == "json" else msgpack.packb(reply, use_bin_type=True)
        )
        await nc.publish(msg.reply, data, headers={"Content-Type": CONTENT_TYPES[enc]})

    async def apply(self, msg: Any) -> str | None:
        """Send a command to the driver that owns its node; its answer, or what is wrong."""
        node = msg.subject[len(self.base) + len(".cmd.") :]
        if not msg.reply:
            return "a command must be a request (it has no reply subject)"
        driver = self.routes.get(node)
        if driver is None:
            known = ", ".join(sorted(self.routes)) or "none"
            return f"unknown node {node!r} (nodes of this gateway: {known})"
        enc = request_encoding(msg, self.encoding)
        try:
            points = decode_command(msg.data, enc, node)
        except BadBatch as e:
            return f"malformed command payload ({enc}): {e}"
        if not points:
            return "the command holds no points"
        for i, p in enumerate(points):
            if p.node != node:
                return f"point {i} is for node {p.node!r}, but the subject names node {node!r}"
        self.next_id += 1
        cmd_id = self.next_id
        frame = encode_frame("C", cmd_id, [p.to_map() for p in points])
        try:
            self.send([driver.encode(), frame])
        except zmq.ZMQError as e:
            if e.errno == errno.EHOSTUNREACH:
                return f"driver {driver!r} of node {node!r} is not running"
            return f"driver {driver!r} of node {node!r} cannot take commands now: {e}"
        fut: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()
        self.pending[cmd_id] = fut
        try:
            async with asyncio.timeout(self.timeout):
                ok, error = await fut
        except TimeoutError:
            return f"driver {driver!r} did not answer within {self.timeout:g}s"
        finally:
            self.pending.pop(cmd_id, None)
        return None if ok else (error or f"driver {driver!r} refused the command")
