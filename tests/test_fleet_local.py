"""The fleet actor's control client against a supervisor that answers garbage."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest

from edgert.fleet.local import control_request


@pytest.mark.parametrize("body", [b"\xc1", b"\x92\x01", b"\x81\x90\x01", b"\x91" * 5000])
def test_a_garbled_reply_is_an_error_reply_not_an_exception(short_dir: Path, body: bytes) -> None:
    async def main() -> dict:
        async def answer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            n = struct.unpack(">I", await r.readexactly(4))[0]
            await r.readexactly(n)
            w.write(struct.pack(">I", len(body)) + body)
            await w.drain()
            w.close()

        server = await asyncio.start_unix_server(answer, str(short_dir / "control.sock"))
        async with server:
            return await control_request(str(short_dir), "status", 5.0)

    reply = asyncio.run(main())
    assert reply["ok"] is False and "control socket" in reply["error"]
