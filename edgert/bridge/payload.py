"""What the bridge puts on NATS: subjects' payloads in msgpack or JSON.

Points go to `<prefix>.<gateway>.p.<node>` as an array of point maps, status
to `<prefix>.<gateway>.status`, each with a `Content-Type` header
(`CONTENT_TYPES`). A batch too big for the server's max payload is split in
halves (`<id>.0`, `<id>.1`, ...) until each part fits: the same data always
splits the same way, so the message ids stay stable across resends.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack

__all__ = ["CONTENT_TYPES", "encode", "messages", "request_encoding"]

CONTENT_TYPES = {"msgpack": "application/msgpack", "json": "application/json"}
_JSON = json.JSONEncoder(separators=(",", ":"))  # one for every payload: dumps makes one a call


def encode(obj: Any, enc: str) -> bytes:
    """A payload per `nats.encoding` (compact JSON, or msgpack)."""
    if enc == "json":
        return _JSON.encode(obj).encode()
    return msgpack.packb(obj, use_bin_type=True)


def messages(msg_id: str, data: bytes, enc: str, max_payload: int) -> list[tuple[str, bytes]]:
    """(message id, payload) for one batch of packed point maps."""
    if enc == "msgpack" and len(data) <= max_payload:
        return [(msg_id, data)]
    return _split(msg_id, msgpack.unpackb(data, raw=False), enc, max_payload)


def _split(msg_id: str, maps: list[Any], enc: str, max_payload: int) -> list[tuple[str, bytes]]:
    data = encode(maps, enc)
    if len(data) <= max_payload or len(maps) <= 1:
        return [(msg_id, data)]
    half = len(maps) // 2
    return _split(f"{msg_id}.0", maps[:half], enc, max_payload) + _split(
        f"{msg_id}.1", maps[half:], enc, max_payload
    )


def request_encoding(msg: Any, default: str) -> str:
    """The encoding a request names in its Content-Type, else `default`."""
    ctype = (msg.headers or {}).get("Content-Type", "")
    for enc, name in CONTENT_TYPES.items():
        if ctype == name:
            return enc
    return default
