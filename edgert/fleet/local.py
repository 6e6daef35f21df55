"""Ask this gateway's supervisor over its control socket, from an asyncio loop.

The same request as `edgert reload` (`edgert.supervisor.control`: a length-prefixed
msgpack map on a Unix stream socket), but awaited, so the fleet actor's loop
keeps running while the supervisor reloads. A connection per request.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import msgpack

from ..supervisor.control import MAX_REPLY, frame

__all__ = ["control_request"]


async def control_request(runtime_dir: str, op: str, timeout: float) -> dict[str, Any]:
    """The supervisor's reply map, or `{"ok": False, "error": ...}` when none came."""
    path = Path(runtime_dir) / "control.sock"
    if not path.exists():
        return {"ok": False, "error": f"no control socket at {path}"}
    try:
        data = await asyncio.wait_for(_ask(str(path), op), timeout)
        reply = msgpack.unpackb(data, raw=False)
    except TimeoutError:
        return {"ok": False, "error": f"the supervisor did not answer within {timeout:g}s"}
    except (OSError, asyncio.IncompleteReadError, ValueError) as e:
        # ValueError covers a garbled reply too (msgpack's errors are ValueErrors)
        return {"ok": False, "error": f"the supervisor's control socket: {e}"}
    return reply if isinstance(reply, dict) else {"ok": False, "error": "malformed reply"}


async def _ask(path: str, op: str) -> bytes:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(frame({"op": op}))
        await writer.drain()
        n = int.from_bytes(await reader.readexactly(4), "big")
        if n > MAX_REPLY:
            raise ValueError(f"a {n}-byte answer")
        return await reader.readexactly(n)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
