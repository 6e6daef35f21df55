"""JetStream publish acks of one NATS session, matched by a counter.

Each message the uplink publishes into JetStream asks for its ack on
`<inbox>.<n>`, `n` counting the session's messages from 1, and one subscription
to `<inbox>.*` takes every ack: no future, callback or reply subject of its own
per message. `PubAcks` keeps, per batch (a forwarder's `Publish`: one message,
or more when it was split to fit the server's max payload), the number of its
last message, when it went and its points, and releases batches oldest first
once every message up to their last one has its ack; an ack that comes before
an older one waits for it. `ack_error` reads a reply: the stream's ack
(`{"stream": ..., "seq": ...}`, the common case, is known by its first bytes
and not parsed), or why the message was refused (a JetStream error, no stream
taking the subject, anything that is not an ack).

A refused message stops the releases in front of it: the batches before it
are released as their acks come, and once it is the oldest without an ack
(`failure`), the session ends, so it and everything after it are published
again in the next one, under the same message ids (JetStream drops what it
already stored). `progress` says when the oldest message without an ack began
to wait (it went, or the ones before it were acked), for the ack timeout.
Sans-IO: no clock, no NATS; the uplink feeds it.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

__all__ = ["PubAcks", "ack_error"]

_ACK_HEAD = b'{"stream":'  # how nats-server begins a JetStream ack (an error begins '{"error":')


class PubAcks:
    """The session's messages in flight into JetStream, and their acks."""

    def __init__(self, inbox: str) -> None:
        self.prefix = inbox + "."
        self.subject = inbox + ".*"  # the one subscription that takes every ack
        self.last = 0  # the number of the last message published
        self.done = 0  # every message up to this one has its ack
        self.early: set[int] = set()  # acked, while an older message still waits
        self.batches: deque[tuple[int, float, int]] = deque()  # (last message, sent, points)
        self.progress = 0.0  # when the oldest message without an ack began to wait
        self.refused = 0  # the oldest message the stream refused (0: none)
        self.error: Exception | None = None  # ... and why

    def publish(self, messages: int, points: int, now: float) -> list[str]:
        """The reply subjects of one batch's `messages` messages, in flight from now."""
        if not self.batches:
            self.progress = now  # nothing waited before: the timeout runs from now
        first = self.last + 1
        self.last += messages
        self.batches.append((self.last, now, points))
        prefix = self.prefix
        return [f"{prefix}{n}" for n in range(first, self.last + 1)]

    def number(self, subject: str) -> int:
        """The message an ack's subject answers for (0: not one of ours)."""
        tail = subject[len(self.prefix) :]
        return int(tail) if subject.startswith(self.prefix) and tail.isdigit() else 0

    def acked(self, n: int, now: float) -> tuple[int, int]:
        """Message `n` is stored: the batches released by it, oldest first, and their
        points (none while an older message still waits for its ack)."""
        if n <= self.done or n > self.last:
            return 0, 0  # a repeat, or not of this session
        if n != self.done + 1:
            self.early.add(n)
            return 0, 0
        early = self.early
        while n + 1 in early:
            early.discard(n + 1)
            n += 1
        self.done = n
        self.progress = now
        released = points = 0
        batches = self.batches
        while batches and batches[0][0] <= n:
            points += batches.popleft()[2]
            released += 1
        return released, points

    def refuse(self, n: int, error: Exception) -> None:
        """The stream refused message `n` (see `failure`)."""
        if self.done < n <= self.last and (not self.refused or n < self.refused):
            self.refused, self.error = n, error

    @property
    def failure(self) -> Exception | None:
        """Why the session must end: the oldest message without an ack was refused."""
        return self.error if self.refused and self.refused == self.done + 1 else None

    @property
    def waiting(self) -> bool:
        """Some batch awaits an ack."""
        return bool(self.batches)

    def oldest_sent(self) -> float:
        """When the oldest batch still awaiting an ack went (call only while `waiting`)."""
        return self.batches[0][1]


def ack_error(data: bytes, headers: dict[str, str] | None) -> Exception | None:
    """None when a reply is the stream's ack of the message (a duplicate's too), else
    why it was not stored: a status (503: no stream takes the subject), a JetStream
    error, or a reply that is not an ack."""
    if not headers and data.startswith(_ACK_HEAD):
        return None  # the common case, first: no import, no parse
    from nats.js.errors import APIError, NoStreamResponseError

    if headers and headers.get("Status"):
        status = headers["Status"]
        if status == "503":
            return NoStreamResponseError()
        return APIError(code=int(status), description=headers.get("Description", ""))
    try:
        reply: Any = json.loads(data)
    except ValueError:
        reply = None
    if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
        try:
            APIError.from_error(reply["error"])  # raises the error's own class
        except APIError as e:
            return e
        except Exception:  # noqa: BLE001 - a malformed error: said as it came
            pass
        return APIError(description=str(reply["error"]))
    if isinstance(reply, dict) and "stream" in reply and "error" not in reply:
        return None  # an ack laid out otherwise
    return APIError(description=f"not a JetStream ack: {data[:80]!r}")
