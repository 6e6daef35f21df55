"""CRC-16/MODBUS, table-driven: the checksum that ends every RTU frame.

`crc16(data)` returns the CRC as an int (polynomial 0xA001 reflected, initial
0xFFFF); on the wire it goes low byte first, which `with_crc(frame)` appends.
A frame with its CRC appended checks to zero: `crc16(frame_with_crc) == 0`.
"""

from __future__ import annotations

__all__ = ["crc16", "with_crc", "crc_ok"]


def _table() -> tuple[int, ...]:
    out = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        out.append(crc)
    return tuple(out)


_TABLE = _table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """The CRC-16/MODBUS of `data`."""
    crc = 0xFFFF
    table = _TABLE
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc


def with_crc(frame: bytes | bytearray) -> bytes:
    """`frame` followed by its CRC, low byte first."""
    crc = crc16(frame)
    return bytes(frame) + bytes((crc & 0xFF, crc >> 8))


def crc_ok(frame: bytes | bytearray | memoryview) -> bool:
    """True when the last two bytes of `frame` are the CRC of the rest."""
    return len(frame) >= 4 and crc16(frame) == 0
