"""The simulator behaves like a real device, byte for byte, on malformed and edge requests.

Each test talks to `edgert sim modbus` over a raw TCP socket or the raw pty, so
nothing between the test and the simulator hides what goes over the line.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import time
import tty
from collections.abc import Iterator

import pytest

from edgert.testing import wait_for
from edgert_drivers.modbus.crc import with_crc

TWO_UNITS = """
transport = "{transport}"
tcp_port = 0

[[device]]
unit = 1

[[device.register]]
address = 0
value = 11

[[device.register]]
table = "coil"
address = 0
value = false

[[device]]
unit = 2
strict = true

[[device.register]]
address = 0
value = 22

[[device.register]]
address = 1
value = 23
"""


@contextlib.contextmanager
def tcp_client(address: str) -> Iterator[socket.socket]:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        yield s


def mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def tcp_ask(s: socket.socket, frame: bytes, wait: float = 1.0) -> bytes | None:
    """Send `frame`; the whole answer (header and PDU), None for silence, b"" when closed."""
    s.sendall(frame)
    s.settimeout(wait)
    try:
        head = s.recv(7)
        if len(head) < 7:
            return head
        (length,) = struct.unpack_from(">H", head, 4)
        body = b""
        while len(body) < length - 1:
            body += s.recv(length - 1 - len(body))
        return head + body
    except TimeoutError:
        return None
    except ConnectionResetError:
        return b""


def read_pdu(address: int, count: int, fc: int = 3) -> bytes:
    return struct.pack(">BHH", fc, address, count)


@contextlib.contextmanager
def pty_client(path: str) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    try:
        yield fd
    finally:
        os.close(fd)


def rtu_ask(fd: int, unit: int, pdu: bytes, wait: float = 0.5) -> bytes | None:
    """Send one RTU frame; the answer (unit ... CRC) once the line is quiet, None: silence."""
    os.write(fd, with_crc(bytes((unit,)) + pdu))
    buf = b""
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic() if not buf else 0.05
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return buf or None
        buf += os.read(fd, 512)


# -- 9: a malformed MBAP header closes that connection, nothing else ---------------------


@pytest.mark.parametrize("length", [0, 1])
def test_an_mbap_length_of_0_or_1_closes_only_that_connection(modbus_sim, length) -> None:
    address = modbus_sim(TWO_UNITS.format(transport="tcp"))
    with tcp_client(address) as good, tcp_client(address) as bad:
        assert tcp_ask(good, mbap(1, 1, read_pdu(0, 1)))[7:] == b"\x03\x02\x00\x0b"
        bad.sendall(struct.pack(">HHH", 1, 0, length) + b"\x01"[:length])
        bad.settimeout(5)
        assert bad.recv(100) == b""  # closed, no answer
        assert tcp_ask(good, mbap(2, 1, read_pdu(0, 1)))[7:] == b"\x03\x02\x00\x0b"


def test_an_mbap_length_shorter_than_the_pdu_does_not_desynchronise(modbus_sim) -> None:
    address = modbus_sim(TWO_UNITS.format(transport="tcp"))
    with tcp_client(address) as s:
        pdu = read_pdu(0, 1)
        short = struct.pack(">HHHB", 7, 0, 4, 1) + pdu  # says 3 PDU bytes, carries 5
        got = tcp_ask(s, short + mbap(8, 1, pdu))
        assert got in (b"", None) or got[:2] != b"\x00\x07", got  # never a half-read answer
        if got:  # the next request, read in step
            assert got == mbap(8, 1, b"\x03\x02\x00\x0b")
    with tcp_client(address) as s:
        assert tcp_ask(s, mbap(9, 1, read_pdu(0, 1)))[7:] == b"\x03\x02\x00\x0b"


# -- 10: unsupported function codes get exception 1 on RTU ------------------------------


@pytest.mark.parametrize(
    "pdu",
    [
        b"\x08\x00\x00\x12\x34",  # diagnostics: return query data
        b"\x17\x00\x00\x00\x01\x00\x00\x00\x01\x02\x00\x05",  # read/write multiple
        b"\x2b\x0d\x00\x00",  # encapsulated interface, not device identification
        b"\x41\x00",  # a function code nobody defines
    ],
)
def test_unsupported_function_codes_get_exception_1_on_rtu(modbus_sim, pdu) -> None:
    port = modbus_sim(TWO_UNITS.format(transport="rtu"))
    with pty_client(port) as fd:
        got = rtu_ask(fd, 1, pdu)
        assert got == with_crc(bytes((1, pdu[0] | 0x80, 1))), got
        assert rtu_ask(fd, 1, read_pdu(0, 1)) == with_crc(b"\x01\x03\x02\x00\x0b")


# -- 11: broadcast, strict writes, write counts --------------------------------------


def test_a_broadcast_write_is_applied_by_every_unit_and_not_answered(modbus_sim) -> None:
    port = modbus_sim(TWO_UNITS.format(transport="rtu"))
    with pty_client(port) as fd:
        assert rtu_ask(fd, 0, b"\x06\x00\x00\x01\x2c", wait=0.3) is None
        assert rtu_ask(fd, 1, read_pdu(0, 1)) == with_crc(b"\x01\x03\x02\x01\x2c")
        assert rtu_ask(fd, 2, read_pdu(0, 1)) == with_crc(b"\x02\x03\x02\x01\x2c")
        assert rtu_ask(fd, 0, b"\x10\x00\x00\x00\x02\x04\x00\x05\x00\x06", wait=0.3) is None
        assert rtu_ask(fd, 2, read_pdu(0, 2)) == with_crc(b"\x02\x03\x04\x00\x05\x00\x06")


def test_strict_refuses_writes_to_unmapped_addresses(modbus_sim) -> None:
    address = modbus_sim(TWO_UNITS.format(transport="tcp"))
    with tcp_client(address) as s:
        assert tcp_ask(s, mbap(1, 2, b"\x06\x00\x05\x00\x01"))[7:] == b"\x86\x02"
        assert tcp_ask(s, mbap(2, 2, b"\x10\x00\x01\x00\x02\x04\x00\x01\x00\x02"))[7:] == (
            b"\x90\x02"
        )
        assert tcp_ask(s, mbap(3, 2, b"\x06\x00\x01\x00\x07"))[7:] == b"\x06\x00\x01\x00\x07"


@pytest.mark.parametrize(
    "pdu",
    [
        struct.pack(">BHHB", 16, 0, 124, 248) + bytes(248),
        struct.pack(">BHHB", 16, 0, 0, 0),
        struct.pack(">BHHB", 15, 0, 1969, 247) + b"\xff" * 247,
        struct.pack(">BHHB", 15, 0, 0, 0),
    ],
)
def test_write_counts_past_the_limits_get_exception_3(modbus_sim, pdu) -> None:
    address = modbus_sim(TWO_UNITS.format(transport="tcp"))
    with tcp_client(address) as s:
        assert tcp_ask(s, mbap(1, 1, pdu))[7:] == bytes((pdu[0] | 0x80, 3))
        assert tcp_ask(s, mbap(2, 1, read_pdu(0, 1)))[7:] == b"\x03\x02\x00\x0b"  # unwritten
        assert tcp_ask(s, mbap(3, 1, read_pdu(0, 1, fc=1)))[7:] == b"\x01\x01\x00"


# -- 12: over TCP, units 0 and 255 reach the server itself --------------------------------


@pytest.mark.parametrize("unit", [0, 255])
def test_tcp_requests_to_unit_0_or_255_are_answered(modbus_sim, unit) -> None:
    address = modbus_sim(TWO_UNITS.format(transport="tcp").split("[[device]]\nunit = 2")[0])
    with tcp_client(address) as s:
        assert tcp_ask(s, mbap(5, unit, read_pdu(0, 1))) == mbap(5, unit, b"\x03\x02\x00\x0b")


# -- 13: a counter wraps around its type's range ----------------------------------------

COUNTER = """
transport = "tcp"
tcp_port = 0

[[device]]
unit = 1

[[device.register]]
address = 0
type = "uint16"
shape = "counter"
step = 20000
period = 0.01

[[device.register]]
address = 1
type = "int16"
shape = "counter"
value = 32000
step = 700
period = 0.01
"""


def test_a_counter_wraps_instead_of_killing_the_simulator(modbus_sim) -> None:
    address = modbus_sim(COUNTER)
    seen: list[tuple[int, int]] = []

    def wrapped() -> bool:
        with tcp_client(address) as s:
            got = tcp_ask(s, mbap(1, 1, read_pdu(0, 2)))
        assert got and got[7] == 3, got
        seen.append(struct.unpack(">Hh", got[9:13]))
        return len(seen) > 3 and any(b[0] < a[0] for a, b in zip(seen, seen[1:], strict=False))

    wait_for(wrapped, 10, "the uint16 counter wrapping")
    assert any(v < 0 for _u, v in seen)  # int16 wrapped to negative
