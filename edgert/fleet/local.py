"""Ask this gateway's supervisor over its control socket, from an asyncio loop.

The same request as `edgert reload` (`edgert.supervisor.control`), but awaited
on a `zmq.asyncio` socket so the bridge's loop keeps running while the
supervisor reloads. The socket is opened and closed per request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import zmq
import zmq.asyncio

__all__ = ["control_request"]


async def control_request(runtime_dir: str, op: str, timeout: float) -> dict[str, Any]:
    """The supervisor's reply map, or `{"ok": False, "error": ...}` when none came."""
    path = Path(runtime_dir) / "control.sock"
    if not path.exists():
        return {"ok": False, "error": f"no control socket at {path}"}
    zctx = zmq.asyncio.Context(1)
    try:
        sock = zctx.socket(zmq.DEALER)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(f"ipc://{path}")
            await sock.send_multipart([b"", msgpack.packb({"op": op}, use_bin_type=True)])
            if not await sock.poll(int(timeout * 1000)):
                return {"ok": False, "error": f"the supervisor did not answer within {timeout:g}s"}
            frames = await sock.recv_multipart()
        finally:
            sock.close(0)
    finally:
        zctx.term()
    reply = msgpack.unpackb(frames[-1], raw=False)
    return reply if isinstance(reply, dict) else {"ok": False, "error": "malformed reply"}
