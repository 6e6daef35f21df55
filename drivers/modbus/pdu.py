"""Modbus PDUs: build requests, know the exact length of their answers, parse them.

A PDU is the function code and its data, without unit id, CRC or MBAP header.
`read_request` and the `write_*` functions build requests; `response_length`
says how many bytes a normal answer to a request has (an exception answer is
always 2: function code | 0x80, code); `parse_response` checks an answer
against its request and returns the registers (ints) or bits (bools) read.
`request_length` and `rtu_request_length` let a server or relay find where a
request ends in a byte stream without waiting for silence.
"""

from __future__ import annotations

import struct

from .crc import crc_ok
from .errors import BadFrame, DeviceException

__all__ = [
    "READ_FC",
    "read_request",
    "write_coil",
    "write_register",
    "write_coils",
    "write_registers",
    "mask_write",
    "response_length",
    "parse_response",
    "request_length",
    "rtu_request_length",
    "pack_bits",
    "unpack_bits",
]

#: function code reading each table
READ_FC = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
MAX_READ = {1: 2000, 2: 2000, 3: 125, 4: 125}
MAX_WRITE = {15: 1968, 16: 123}


def read_request(fc: int, address: int, count: int) -> bytes:
    """FC 1-4: read `count` bits or registers from `address`."""
    if not 1 <= count <= MAX_READ[fc]:
        raise ValueError(f"FC {fc} reads 1..{MAX_READ[fc]} items, not {count}")
    return struct.pack(">BHH", fc, address, count)


def write_coil(address: int, value: bool) -> bytes:
    """FC 5: write one coil."""
    return struct.pack(">BHH", 5, address, 0xFF00 if value else 0)


def write_register(address: int, raw: int) -> bytes:
    """FC 6: write one register."""
    return struct.pack(">BHH", 6, address, raw & 0xFFFF)


def write_coils(address: int, bits: list[bool]) -> bytes:
    """FC 15: write consecutive coils (1..1968)."""
    if not 1 <= len(bits) <= MAX_WRITE[15]:
        raise ValueError(f"FC 15 writes 1..{MAX_WRITE[15]} coils, not {len(bits)}")
    data = pack_bits(bits)
    return struct.pack(">BHHB", 15, address, len(bits), len(data)) + data


def write_registers(address: int, regs: list[int]) -> bytes:
    """FC 16: write consecutive registers (1..123)."""
    if not 1 <= len(regs) <= MAX_WRITE[16]:
        raise ValueError(f"FC 16 writes 1..{MAX_WRITE[16]} registers, not {len(regs)}")
    return struct.pack(f">BHHB{len(regs)}H", 16, address, len(regs), 2 * len(regs), *regs)


def mask_write(address: int, and_mask: int, or_mask: int) -> bytes:
    """FC 22: register = (register AND and_mask) OR (or_mask AND NOT and_mask)."""
    return struct.pack(">BHHH", 22, address, and_mask & 0xFFFF, or_mask & 0xFFFF)


def pack_bits(bits: list[bool]) -> bytes:
    """Bits to bytes, first bit in the lowest bit of the first byte."""
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


def unpack_bits(data: bytes, count: int) -> list[bool]:
    return [bool(data[i >> 3] >> (i & 7) & 1) for i in range(count)]


def response_length(request: bytes) -> int:
    """Bytes in the normal answer to `request` (PDU, without unit and CRC)."""
    fc = request[0]
    if fc in (1, 2):
        return 2 + (struct.unpack_from(">H", request, 3)[0] + 7) // 8
    if fc in (3, 4):
        return 2 + 2 * struct.unpack_from(">H", request, 3)[0]
    if fc in (5, 6, 15, 16):
        return 5
    if fc == 22:
        return 7
    raise ValueError(f"function code {fc} is not supported")


def parse_response(request: bytes, response: bytes) -> list[int] | list[bool] | None:
    """Check `response` against `request`; the values read, or None for a write.

    Raises DeviceException for an exception answer, BadFrame when the answer does
    not match the request.
    """
    fc = request[0]
    if response[0] == fc | 0x80 and len(response) == 2:
        raise DeviceException(response[1])
    if response[0] != fc:
        raise BadFrame(f"answer has function code {response[0]}, request had {fc}")
    if len(response) != response_length(request):
        raise BadFrame(
            f"answer of {len(response)} bytes to FC {fc}, expected {response_length(request)}"
        )
    if fc in (1, 2, 3, 4):
        count = struct.unpack_from(">H", request, 3)[0]
        if response[1] != len(response) - 2:
            raise BadFrame(
                f"byte count {response[1]} does not match {len(response) - 2} data bytes"
            )
        if fc in (1, 2):
            return unpack_bits(response[2:], count)
        return list(struct.unpack_from(f">{count}H", response, 2))
    if response[1:] != request[1 : len(response)]:
        raise BadFrame(f"FC {fc} answer does not echo the request")
    return None


def request_length(pdu: bytes | bytearray) -> int | None:
    """Length of the request PDU that starts `pdu`, from its function code and byte
    count; None when the function code's requests have no known length (or too few
    bytes are there to tell)."""
    if not pdu:
        return None
    fc = pdu[0]
    if fc in (1, 2, 3, 4, 5, 6, 8):
        return 5
    if fc in (15, 16):
        return 6 + pdu[5] if len(pdu) >= 6 else None
    if fc == 22:
        return 7
    if fc == 23:
        return 10 + pdu[9] if len(pdu) >= 10 else None
    if fc in (7, 11, 12, 17):
        return 1
    if fc == 43 and len(pdu) >= 2 and pdu[1] == 14:
        return 4
    return None


def rtu_request_length(buf: bytes | bytearray) -> int | None:
    """Length of the RTU request (unit ... CRC) at the start of `buf`; None: need more bytes.

    A function code of unknown length ends at the first CRC that checks (4 bytes at least).
    """
    if len(buf) < 2:
        return None
    n = request_length(buf[1:])
    if n is not None:
        return n + 3
    if buf[1] in (15, 16, 23) or (buf[1] == 43 and len(buf) < 3):
        return None  # its byte count is still to come
    for end in range(4, len(buf) + 1):
        if crc_ok(buf[:end]):
            return end
    return None
