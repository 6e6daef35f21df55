"""The local point bus: ZeroMQ frames between actor processes and the bridge.

- `frames`: the frame kinds, their checks (`BadFrame`) and the endpoints;
- `outbox`: the sending side in every actor process (seq, linger, window, resend);
- `ring`: the outbox's memory-mapped file, which outlives a crash of the process;
- `inbox`: the receiving side in the bridge (dedupe, order, cumulative acks);
- `shape`: the bridge's byte-level check of the usual one-node batch.

No pickle anywhere; every frame is size-limited msgpack and a malformed one is
counted, logged and skipped.
"""

from .frames import (
    BadFrame,
    accepts,
    ack_endpoint,
    bus_endpoint,
    decode_frame,
    decode_points,
    decode_points_after,
    encode_frame,
    new_epoch,
    p_frame,
    p_head,
    p_header,
)
from .inbox import Inbox, Sender, Slot
from .outbox import Command, Outbox

__all__ = [
    "BadFrame",
    "Command",
    "Inbox",
    "Outbox",
    "Sender",
    "Slot",
    "accepts",
    "ack_endpoint",
    "bus_endpoint",
    "decode_frame",
    "decode_points",
    "decode_points_after",
    "encode_frame",
    "new_epoch",
    "p_frame",
    "p_head",
    "p_header",
]
