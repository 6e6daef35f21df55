"""The control socket's server, driven as the supervisor's loop drives it: never blocking."""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from pathlib import Path

import msgpack
import pytest

from edgert.supervisor.control import MAX_REQUEST, ControlError, ControlServer, request


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
        time.sleep(0.1)  # the server has read half of it by now, and must wait for the rest
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
