"""The control socket: the supervisor serves it, `edgert status`/`reload` ask it.

A plain Unix stream socket, `<runtime_dir>/control.sock`: the supervisor needs
no ZeroMQ context (nor its I/O thread) for it. Each message either way is a
4-byte big-endian length and that many bytes of msgpack: a request is a map
`{"op": "status"}`, the answer `{"ok": true, "status": {...}}` or
`{"ok": false, "error": "..."}`. `ControlServer` is opened in the supervisor's
`run` and driven by its loop: it never blocks (partial reads and writes wait
in per-connection buffers), drops a connection that announces a request over
`MAX_REQUEST` bytes (counted: `dropped`) or idles past `IDLE`, and holds at
most `MAX_CONNECTIONS`: one more is answered "busy: too many control
connections" (counted: `busy`) and closed. `request()` is the client: it
connects, asks, reads the answer and closes; it raises `ControlError` with a
clear message when no gateway answers or the gateway refused.
`format_status` prints a snapshot as the status table.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import time
from pathlib import Path
from typing import Any

import msgpack

__all__ = ["ControlError", "ControlServer", "request", "frame", "format_status"]

MAX_REQUEST = 64 * 1024  # a request is a small map; a bigger one drops the connection
MAX_REPLY = 64 * 1024 * 1024
MAX_CONNECTIONS = 32
IDLE = 10.0  # seconds a connection may take to send its request and read its answer
_LEN = struct.Struct(">I")


class ControlError(Exception):
    """No gateway answered on the control socket, or it refused the request."""


def frame(obj: Any) -> bytes:
    """One message on the control socket: its length, then `obj` in msgpack."""
    body = msgpack.packb(obj, use_bin_type=True)
    return _LEN.pack(len(body)) + body


BUSY = frame(
    {
        "ok": False,
        "error": f"busy: too many control connections ({MAX_CONNECTIONS}); try again",
    }
)


def request(runtime_dir: str | os.PathLike[str], op: str, timeout: float = 3.0, **args: Any) -> Any:
    path = Path(runtime_dir) / "control.sock"
    if not path.exists():
        raise ControlError(
            f"no gateway is running with runtime directory {runtime_dir} (no {path})"
        )
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.settimeout(timeout)
            sock.connect(str(path))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                # refused at once ("busy"): its answer is waiting to be read
                sock.sendall(frame({"op": op, **args}))
            (n,) = _LEN.unpack(_read(sock, _LEN.size, deadline))
            if n > MAX_REPLY:
                raise ControlError(f"the gateway at {runtime_dir} sent a {n}-byte answer")
            data = _read(sock, n, deadline)
        except TimeoutError:
            raise ControlError(
                f"the gateway at {runtime_dir} did not answer within {timeout:g}s"
            ) from None
        except (OSError, EOFError) as e:  # refused (a stale socket), reset, not allowed
            raise ControlError(
                f"no gateway answers at {runtime_dir} ({str(e) or 'the connection closed'})"
            ) from None
    reply = msgpack.unpackb(data, raw=False)
    if not reply.get("ok"):
        raise ControlError(reply.get("error") or "request refused")
    return reply


def _read(sock: socket.socket, n: int, deadline: float) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


class _Conn:
    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.out = b""
        self.since = now


class ControlServer:
    """The listening socket and its connections; opened in `run`, used by its loop only."""

    def __init__(self, path: str) -> None:
        self.path = path
        if os.path.exists(path):
            os.unlink(path)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._listener.bind(path)
            self._listener.listen(16)
            self._listener.setblocking(False)
        except OSError:
            self._listener.close()
            raise
        self._conns: dict[int, _Conn] = {}
        self.dropped = 0  # connections dropped for an oversized or a second request
        self.busy = 0  # connections refused at MAX_CONNECTIONS

    def counts(self) -> dict[str, int]:
        """What the server refused, for the supervisor's status."""
        return {"dropped": self.dropped, "busy": self.busy}

    def events(self) -> list[tuple[int, int]]:
        """(fd, poll events) to wait on: the listener, and each connection for its request
        or, with an answer pending, for room to send it."""
        out = [(self._listener.fileno(), select.POLLIN)]
        for fd, c in self._conns.items():
            out.append((fd, select.POLLOUT if c.out else select.POLLIN))
        return out

    def requests(self, ready: dict[int, int], now: float) -> list[tuple[int, str | None]]:
        """Accept, read and send what `ready` allows; the complete requests: (conn, op),
        op None when malformed. Drops idle, oversized and broken connections."""
        from ..point import unpack_limited

        if self._listener.fileno() in ready:
            self._accept(now)
        out: list[tuple[int, str | None]] = []
        for fd, c in list(self._conns.items()):
            if now - c.since > IDLE:
                self._drop(fd)
                continue
            if fd not in ready:
                continue
            if c.out:
                self._send(fd)
                continue
            try:
                chunk = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self._drop(fd)
                continue
            c.inbuf += chunk
            if len(c.inbuf) < _LEN.size:
                continue
            (n,) = _LEN.unpack_from(c.inbuf)
            if n > MAX_REQUEST or len(c.inbuf) > _LEN.size + n:
                self.dropped += 1  # too big, or more than one request: not a client of ours
                self._drop(fd)
                continue
            if len(c.inbuf) < _LEN.size + n:
                continue
            try:
                req = unpack_limited(bytes(c.inbuf[_LEN.size :]))
                op = req.get("op") if isinstance(req, dict) else None
            except Exception:  # noqa: BLE001 - any garbage gets an error reply
                op = None
            c.inbuf.clear()
            out.append((fd, op if isinstance(op, str) else None))
        return out

    def answer(self, conn: int, reply: dict[str, Any]) -> None:
        """Queue `reply` for `conn` and send what the socket takes now; never waits."""
        c = self._conns.get(conn)
        if c is None:
            return
        c.out = frame(reply)
        self._send(conn)

    def close(self) -> None:
        for fd in list(self._conns):
            self._drop(fd)
        self._listener.close()
        if os.path.exists(self.path):
            os.unlink(self.path)

    def _accept(self, now: float) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors, say: the client retries
                return
            if len(self._conns) >= MAX_CONNECTIONS:
                self.busy += 1
                with contextlib.suppress(OSError):  # a fresh socket takes a small frame
                    sock.setblocking(False)
                    sock.send(BUSY)
                sock.close()
                continue
            sock.setblocking(False)
            self._conns[sock.fileno()] = _Conn(sock, now)

    def _send(self, fd: int) -> None:
        c = self._conns[fd]
        try:
            n = c.sock.send(c.out)
        except BlockingIOError:
            return
        except OSError:  # the client went away: it loses its answer
            self._drop(fd)
            return
        c.out = c.out[n:]
        if not c.out:
            self._drop(fd)  # one request per connection

    def _drop(self, fd: int) -> None:
        c = self._conns.pop(fd, None)
        if c is not None:
            c.sock.close()


def now_note(actor: dict[str, Any], bridged: bool = True) -> str:
    """What an actor says of its present state, from the figures it reports: its own
    note (`ctx.report(now=...)`), the NATS link (bridge), what it waits for, a closed
    port (Modbus), drops. `bridged`: the gateway has a bridge (without one, points
    held at a stop are discarded by design, not lost)."""
    from ..table import age

    s = actor.get("stats") or {}
    notes = [f"DUPLICATE ID: also {s['duplicate_id']}"] if s.get("duplicate_id") else []
    notes += [str(s["now"])] if s.get("now") else []
    if s.get("nats"):
        notes.append(f"nats {s['nats']}")
    if s.get("clock") == "unsynchronized":
        held = f", holding {s.get('clock_held', 0)} points" if s.get("clock_holding") else ""
        notes.append(f"clock unsynchronized{held}")
    if s.get("waiting"):
        notes.append(f"waiting: {s['waiting']}")
    if s.get("port") not in (None, "open"):
        notes.append(f"port {s['port']}: {s.get('port_error') or '?'}")
    if actor.get("state") == "failed":
        retry = actor.get("retry_in")
        notes.append("given up" if retry is None else f"retry in {age(retry)}")
    if actor.get("dropped"):
        notes.append(f"dropped {actor['dropped']}")
    if actor.get("lost_at_stop"):
        notes.append(f"{'lost' if bridged else 'discarded'} at stop {actor['lost_at_stop']}")
    return "; ".join(notes)


def format_status(status: dict[str, Any], tty: bool = False, width: int | None = None) -> str:
    """The status snapshot as a table, one row per actor (`edgert.table.render`): on a
    terminal fitted to its width, the NOW and LAST_ERROR columns wrapping, states in
    colour, and under the table a warning for a duplicate gateway id or an
    unsynchronized clock; otherwise one line per actor, nothing cut."""
    from ..table import STATE_STYLES, age, render

    headers = (
        "NAME",
        "KIND",
        "PID",
        "STATE",
        "RESTARTS",
        "UPTIME",
        "POINTS_OUT",
        "BUFFERED",
        "NOW",
        "LAST_ERROR",
    )
    rows = []
    bridged = any(a.get("kind") == "bridge" for a in status["actors"])
    for a in status["actors"]:
        err = (a.get("last_error") or "").strip().splitlines()
        rows.append(
            (
                a["name"],
                a.get("kind", ""),
                str(a["pid"] or "-"),
                a["state"],
                str(a["restarts"]),
                age(a["uptime"]) if a["uptime"] else "-",
                str(a["points_out"]),
                str(a["buffered"]),
                now_note(a, bridged),
                err[-1] if err else "",
            )
        )
    table = render(
        headers,
        rows,
        tty=tty,
        width=width,
        wrap=("NOW", "LAST_ERROR"),
        right=("PID", "RESTARTS", "UPTIME", "POINTS_OUT", "BUFFERED"),
        styles={"STATE": STATE_STYLES},
    )
    notes = []  # for a person at a terminal; piped, the rows alone (NOW says it too)
    stats = [a.get("stats") or {} for a in status["actors"]] if tty else []
    for twin in [s["duplicate_id"] for s in stats if s.get("duplicate_id")][:1]:
        notes.append(
            f"WARNING: another gateway with this id is on NATS ({twin}): commands reach "
            "either and the points of both mix; give each its own [gateway] id"
        )
    if "unsynchronized" in [s.get("clock") for s in stats]:
        notes.append(
            "warning: the clock is unsynchronized (points go out with Edgert-Clock: unsynced)"
        )
    rev = status.get("config_revision")
    head = f"gateway {status['gateway']}" + (f", config revision {rev}" if rev is not None else "")
    ctl = status.get("control") or {}
    if ctl.get("dropped") or ctl.get("busy"):
        head += (
            f"; control socket: {ctl.get('dropped', 0)} oversized requests dropped,"
            f" {ctl.get('busy', 0)} connections refused busy"
        )
    if removed := status.get("removed_lost_at_stop"):
        head += "; lost at stop by removed actors: " + ", ".join(
            f"{k} {v}" for k, v in removed.items()
        )
    return "\n".join([head, table, *notes])
