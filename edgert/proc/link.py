"""The link between the supervisor and one actor process: whole msgpack messages.

A `SOCK_SEQPACKET` socket pair: every send is one message, delivered whole or
not at all, and the end of the other side is EOF. Each message is
`[kind, data]`: the child sends `running`, `hb` (its figures) and `exit` (the
traceback of an error); the supervisor sends `stop` and `status`.

The supervisor's end is non-blocking (`try_send` says False when the buffer is
full; the caller keeps the message for later); the child's end blocks, as a
child has nothing better to do than wait for a supervisor that is reading.
"""

from __future__ import annotations

import select
import socket
from typing import Any

import msgpack

__all__ = ["Link", "encode_link", "decode_link", "MAX_MESSAGE"]

MAX_MESSAGE = 1 << 20


def encode_link(kind: str, data: Any = None) -> bytes:
    return msgpack.packb([kind, data], use_bin_type=True)


def decode_link(data: bytes) -> list[Any]:
    msg = msgpack.unpackb(data, raw=False)
    if not isinstance(msg, list) or len(msg) != 2 or not isinstance(msg[0], str):
        raise ValueError("malformed link message")
    return msg


class Link:
    """One end of a link. `recv_bytes` raises EOFError once the other end is gone."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple[Link, Link]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (a, b):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE)
        return cls(a), cls(b)

    @classmethod
    def from_fd(cls, fd: int) -> Link:
        return cls(socket.socket(fileno=fd))

    def fileno(self) -> int:
        return self.sock.fileno()

    def poll(self, timeout: float = 0.0) -> bool:
        """Is a message (or EOF) waiting? Waits up to `timeout` seconds."""
        r, _, _ = select.select([self.sock], [], [], timeout)
        return bool(r)

    def recv_bytes(self) -> bytes:
        data = self.sock.recv(MAX_MESSAGE)
        if not data:
            raise EOFError("the other end of the link is gone")
        return data

    def recv_nowait(self) -> bytes | None:
        """A waiting message, or None when there is none now; EOFError at the end."""
        try:
            data = self.sock.recv(MAX_MESSAGE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        if not data:
            raise EOFError("the other end of the link is gone")
        return data

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def try_send(self, data: bytes) -> bool:
        """Send without waiting: False when the link is full (nothing was sent)."""
        try:
            self.sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()
