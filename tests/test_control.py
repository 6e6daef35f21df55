"""The control socket's server, driven as the supervisor's loop drives it: never blocking."""

from __future__ import annotations

import array
import fcntl
import select
import socket
import struct
import termios
import threading
import time
from pathlib import Path

import msgpack
import pytest

from edgert.supervisor.control import MAX_REQUEST, ControlError, ControlServer, request
from edgert.testing import wait_for


def serve(server: ControlServer, until: threading.Event, seen: list) -> None:
    while not until.is_set():
        p = select.poll()
        for fd, ev in server.events():
            p.register(fd, ev)
        ready = dict(p.poll(50))
        for conn, op in server.requests(ready, time.monotonic()):
            seen.append(op)
            reply = {"ok": op == "status", "status": {"n": 1}, "error": f"no {op!r}"}
            server.answer(conn, reply | ({"big": "x" * 300_000} if op == "status" else {}))


def unread(s: socket.socket) -> int:
    """Bytes sent on `s` that its peer has not read yet (the send queue)."""
    out = array.array("i", [0])
    fcntl.ioctl(s.fileno(), termios.TIOCOUTQ, out)
    return out[0]


@pytest.fixture
def server(tmp_path: Path):
    srv = ControlServer(str(tmp_path / "control.sock"))
    stop, seen = threading.Event(), []
    t = threading.Thread(target=serve, args=(srv, stop, seen))
    t.start()
    yield tmp_path, seen
    stop.set()
    t.join(5)
    srv.close()
    assert not (tmp_path / "control.sock").exists()


def test_a_request_is_answered_even_when_it_comes_in_pieces_and_the_answer_is_big(server):
    rdir, seen = server
    assert request(rdir, "status")["status"] == {"n": 1}
    with pytest.raises(ControlError, match="no 'nope'"):
        request(rdir, "nope")
    body = msgpack.packb({"op": "status"})
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(rdir / "control.sock"))
        s.sendall(struct.pack(">I", len(body)) + body[:3])
        # the second half goes only once the server has read the first (nothing left in
        # our send queue): it has half a request and must wait for the rest
        wait_for(lambda: unread(s) == 0, 10, "the server to read the first half")
        s.sendall(body[3:])
        s.settimeout(10)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    (n,) = struct.unpack(">I", data[:4])
    assert n == len(data) - 4 and msgpack.unpackb(data[4:])["status"] == {"n": 1}
    assert seen == ["status", "nope", "status"]


def test_an_oversized_or_malformed_request_is_dropped_or_refused(server):
    rdir, seen = server
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(rdir / "control.sock"))
        s.sendall(struct.pack(">I", MAX_REQUEST + 1) + b"x" * 100)
        s.settimeout(10)
        assert s.recv(1) == b""  # hung up on, no answer
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(rdir / "control.sock"))
        s.sendall(struct.pack(">I", 3) + b"\xc1\xc1\xc1")  # not msgpack
        s.settimeout(10)
        assert s.recv(4)  # an answer: the refusal
    assert seen == [None]
    assert request(rdir, "status")["ok"]  # and the server goes on


def test_oversized_requests_are_counted_and_a_full_server_says_busy(tmp_path: Path) -> None:
    from edgert.supervisor.control import MAX_CONNECTIONS

    srv = ControlServer(str(tmp_path / "control.sock"))
    stop, seen = threading.Event(), []
    held = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(tmp_path / "control.sock"))
            s.sendall(struct.pack(">I", MAX_REQUEST + 1) + b"x" * 100)
            srv_ready = {fd: select.POLLIN for fd, _ in srv.events()}
            while srv.counts()["dropped"] == 0:  # accept, then read the oversized header
                srv.requests(srv_ready, time.monotonic())
                srv_ready = {fd: select.POLLIN for fd, _ in srv.events()}
        for _ in range(MAX_CONNECTIONS):  # fill it with clients that say nothing
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            held.append(c)
            c.connect(str(tmp_path / "control.sock"))
            n = len(held)
            while len(srv.events()) < 1 + n:  # accepted (the backlog is shorter)
                srv.requests({srv.events()[0][0]: select.POLLIN}, time.monotonic())
        t = threading.Thread(target=serve, args=(srv, stop, seen))
        t.start()
        with pytest.raises(ControlError, match="busy: too many control connections"):
            request(tmp_path, "status")
        assert srv.counts() == {"dropped": 1, "busy": 1}
        for c in held:
            c.close()

        def answered() -> bool:  # once the server has seen them go: room again
            try:
                return request(tmp_path, "status")["ok"]
            except ControlError as e:
                assert "busy" in str(e)
                return False

        wait_for(answered, 10, "an answer once the idle clients left")
    finally:
        stop.set()
        if "t" in locals():
            t.join(5)
        for c in held:
            c.close()
        srv.close()
