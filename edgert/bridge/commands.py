"""Commands: a request on `<prefix>.<gateway>.cmd.<node>` to the driver of that node.

The request carries a batch of points for that node; it goes to the driver that
owns the node (`routes`) as `["C", id, maps]`, and the driver's
`["R", id, ok, error]` becomes the reply `{"ok": true}` or
`{"ok": false, "error": "..."}`. An unknown node, a driver that is not running,
a malformed payload or no answer within `timeout` gets an error reply naming
the problem. `Commands` belongs to the bridge's one loop.
"""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from ..bus import encode_frame
from ..point import BadBatch, decode_batch
from .payload import CONTENT_TYPES, request_encoding

__all__ = ["Commands"]


class Commands:
    """Commands in flight to drivers, by id."""

    def __init__(
        self,
        base: str,
        routes: dict[str, str],
        timeout: float,
        send: Callable[[list[bytes]], None],
        encoding: str,
    ) -> None:
        self.base = base
        self.routes = routes
        self.timeout = timeout
        self.send = send  # sends a multipart message on the bus ROUTER (raises zmq.ZMQError)
        self.encoding = encoding
        self.pending: dict[int, asyncio.Future[tuple[bool, str]]] = {}
        self.next_id = 0
        self.count = 0
        self.errors = 0

    def answer(self, cmd_id: int, ok: bool, error: str) -> None:
        """A driver's ["R", id, ok, error]."""
        fut = self.pending.get(cmd_id)
        if fut is not None and not fut.done():
            fut.set_result((ok, error))

    def cancel(self) -> None:
        for fut in self.pending.values():
            fut.cancel()

    async def handle(self, nc: Any, msg: Any, log: Any) -> None:
        """One request from NATS: apply it and reply."""
        self.count += 1
        error = await self.apply(msg)
        if error:
            self.errors += 1
            log.warning("command on %s refused: %s", msg.subject, error)
        if not msg.reply:
            return
        reply = {"ok": True} if error is None else {"ok": False, "error": error}
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
            points = decode_batch(msg.data, enc)
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
