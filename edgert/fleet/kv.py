"""The two KV buckets of a managed fleet, as the gateways and `edgert fleet push` use them.

- `edgert-config` (or `[fleet] bucket`), key `<gateway id>`: the desired config,
  TOML; its KV revision names it everywhere (status, reports, `fleet ls`).
- `edgert-applied`, key `<gateway id>`: what became of each revision, JSON
  `{"revision", "state": "applied" | "refused" | "rolled_back", "error", "time"}`.

Whoever comes first creates a bucket (the same settings on both sides, so the
second create is a no-op); a gateway whose NATS user may not create streams
waits until it exists.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["APPLIED_BUCKET", "HISTORY", "bucket", "decode_report"]

APPLIED_BUCKET = "edgert-applied"
HISTORY = 5  # revisions of each key kept: a few past configs and reports to look back at


async def bucket(js: Any, name: str) -> Any:
    """The KV bucket `name`, created when missing."""
    from nats.js.errors import BucketNotFoundError

    try:
        return await js.key_value(name)
    except BucketNotFoundError:
        return await js.create_key_value(bucket=name, history=HISTORY)


def decode_report(value: bytes) -> dict[str, Any] | None:
    """A report from bucket `edgert-applied`, or None when it is not one."""
    try:
        rep = json.loads(value)
    except ValueError:
        return None
    if not isinstance(rep, dict) or not isinstance(rep.get("revision"), int):
        return None
    return rep
