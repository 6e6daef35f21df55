"""Register values: decode what a device holds into a point's value, encode a command.

`decode(reg, items)` turns the registers (ints) or bits (bools) a register
config spans into its value: byte order applies within each 16-bit register,
word order to the sequence of registers, then `value = raw * scale + offset`
for numbers (ints stay ints when scale is 1 and offset 0; a NaN or infinite
float becomes None). `encode(reg, value)` is the inverse for writes and raises
`Refused` for a value of the wrong kind, out of the type's range or out of the
register's `min`/`max`. Besides the 16/32/64-bit integers and floats: `int8`
and `uint8` (one byte of a register, `half = "high"` or `"low"`), `float16`,
`bcd16` and `bcd32` (4 and 8 decimal digits; a nibble above 9 reads as None),
and strings in UTF-8, latin-1 or UTF-16 (`encoding`), two bytes a register or,
with `half`, one character in the high or low byte of each register. `encode_mask` gives the
FC 22 masks that write one bit or one byte of a register, keeping the rest.
"""

from __future__ import annotations

import math
import struct

from .config import RegisterConfig

__all__ = ["decode", "encode", "encode_mask", "Refused", "Value"]

Value = float | int | bool | str | None

_FORMAT = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "float32": "f",
    "int64": "q",
    "uint64": "Q",
    "float64": "d",
    "float16": "e",
}
_INT_RANGE = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
    "int8": (-128, 127),
    "uint8": (0, 255),
    "bcd16": (0, 9999),
    "bcd32": (0, 99999999),
}
_FLOAT_MAX = {
    "float16": 65504.0,
    "float32": 3.4028234663852886e38,
    "float64": 1.7976931348623157e308,
}
_CODEC = {"utf-8": "utf-8", "latin-1": "latin-1", "utf-16": "utf-16-be"}


class Refused(ValueError):
    """A command value that cannot be written to its register."""


def _swap(word: int) -> int:
    return ((word & 0xFF) << 8) | (word >> 8)


def to_bytes(reg: RegisterConfig, words: list[int]) -> bytes:
    """The value's bytes, most significant first, from the registers as read."""
    if reg.byte_order == "little":
        words = [_swap(w) for w in words]
    if reg.word_order == "little":
        words = words[::-1]
    return struct.pack(f">{len(words)}H", *words)


def from_bytes(reg: RegisterConfig, data: bytes) -> list[int]:
    """The registers to write for the value's bytes (most significant first)."""
    words = list(struct.unpack(f">{len(data) // 2}H", data))
    if reg.word_order == "little":
        words = words[::-1]
    if reg.byte_order == "little":
        words = [_swap(w) for w in words]
    return words


def decode(reg: RegisterConfig, items: list[int] | list[bool]) -> Value:
    """The value of `reg` from exactly the `reg.size` registers or bits it spans."""
    kind = reg.kind
    if reg.bits:
        return bool(items[0])
    if reg.bit is not None:
        word = items[0] if reg.byte_order == "big" else _swap(int(items[0]))
        return bool(word >> reg.bit & 1)
    if kind in ("int8", "uint8"):
        byte = int(items[0]) >> 8 if reg.half == "high" else int(items[0]) & 0xFF
        raw: int | float = byte - 256 if kind == "int8" and byte > 127 else byte
        return _scaled(reg, raw)
    if kind == "string" and reg.half is not None:  # one character a register
        shift = 8 if reg.half == "high" else 0
        data = bytes(int(w) >> shift & 0xFF for w in items)
        return data.rstrip(b"\0 ").decode(reg.encoding, "replace")
    data = to_bytes(reg, list(items))  # type: ignore[arg-type]
    if kind == "string":
        if reg.encoding == "utf-16":
            n = len(data)
            while n >= 2 and data[n - 2 : n] in (b"\0\0", b"\0 "):
                n -= 2
            return data[:n].decode("utf-16-be", "replace")
        return data.rstrip(b"\0 ").decode(reg.encoding, "replace")
    if kind.startswith("bcd"):
        digits = data.hex()
        if not digits.isdigit():
            return None  # a nibble above 9: not BCD
        return _scaled(reg, int(digits))
    raw = struct.unpack(">" + _FORMAT[kind], data)[0]
    if kind.startswith("float"):
        if not math.isfinite(raw):
            return None
        return raw * reg.scale + reg.offset
    return _scaled(reg, raw)


def _scaled(reg: RegisterConfig, raw: int | float) -> int | float:
    if reg.scale == 1.0 and reg.offset == 0.0:
        return raw
    return raw * reg.scale + reg.offset


def encode_mask(reg: RegisterConfig, value: object) -> tuple[int, int]:
    """(and_mask, or_mask) of an FC 22 write of part of a register: a bit, or a byte."""
    if reg.bit is not None:
        if not isinstance(value, bool) and value not in (0, 1):
            raise Refused(f"{reg.name!r} takes true or false, got {value!r}")
        mask = 1 << reg.bit
        if reg.byte_order == "little":
            mask = _swap(mask)
        return 0xFFFF ^ mask, mask if value else 0
    raw = encode(reg, value)
    assert isinstance(raw, list)
    mask = 0xFF00 if reg.half == "high" else 0x00FF
    return 0xFFFF ^ mask, raw[0] & mask


def encode(reg: RegisterConfig, value: object) -> list[int] | bool:
    """What to write for `value`: a coil's bool, or the registers; raises Refused."""
    kind = reg.kind
    if reg.bits:
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        raise Refused(f"{reg.name!r} takes true or false, got {value!r}")
    if kind == "string":
        if not isinstance(value, str):
            raise Refused(f"{reg.name!r} takes a string, got {value!r}")
        try:
            data = value.encode(_CODEC[reg.encoding])
        except UnicodeEncodeError:
            raise Refused(f"{reg.name!r}: {value!r} is not {reg.encoding}") from None
        per = 2 if reg.half is None else 1  # bytes a register
        room = per * (reg.count or 1)
        if len(data) > room:
            raise Refused(f"{reg.name!r} holds {room} bytes, got {len(data)}")
        if per == 1:
            shift = 8 if reg.half == "high" else 0
            return [b << shift for b in data.ljust(room, b"\0")]
        return from_bytes(reg, data.ljust(room, b"\0"))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refused(f"{reg.name!r} takes a number, got {value!r}")
    if not math.isfinite(value):
        raise Refused(f"{reg.name!r}: {value!r} is not a finite number")
    if reg.min is not None and value < reg.min:
        raise Refused(f"{reg.name!r}: {value!r} is below min {reg.min:g}")
    if reg.max is not None and value > reg.max:
        raise Refused(f"{reg.name!r}: {value!r} is above max {reg.max:g}")
    if isinstance(value, int) and reg.scale == 1.0 and reg.offset == 0.0:
        raw: float | int = value  # exact, even beyond a float's 53 bits
    else:
        raw = (value - reg.offset) / reg.scale
    if kind.startswith("float"):
        if abs(raw) > _FLOAT_MAX[kind]:
            raise Refused(f"{reg.name!r}: {value!r} does not fit a {kind}")
    elif kind in ("int8", "uint8", "bcd16", "bcd32"):
        raw = round(raw)
        lo, hi = _INT_RANGE[kind]
        if not lo <= raw <= hi:
            raise Refused(f"{reg.name!r}: {value!r} is out of range for {kind} (raw {raw})")
        if kind in ("int8", "uint8"):
            byte = raw & 0xFF
            return [byte << 8 if reg.half == "high" else byte]
        digits = f"{raw:0{4 * reg.size}d}"
        return from_bytes(reg, bytes.fromhex(digits))
    else:
        raw = round(raw)
        lo, hi = _INT_RANGE[kind]
        if not lo <= raw <= hi:
            raise Refused(f"{reg.name!r}: {value!r} is out of range for {kind} (raw {raw})")
    return from_bytes(reg, struct.pack(">" + _FORMAT[kind], raw))
