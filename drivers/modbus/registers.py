"""Register values: decode what a device holds into a point's value, encode a command.

`decode(reg, items)` turns the registers (ints) or bits (bools) a register
config spans into its value: byte order applies within each 16-bit register,
word order to the sequence of registers, then `value = raw * scale + offset`
for numbers (ints stay ints when scale is 1 and offset 0; a NaN or infinite
float becomes None). `encode(reg, value)` is the inverse for writes and raises
`Refused` for a value of the wrong kind, out of the type's range or out of the
register's `min`/`max`.
"""

from __future__ import annotations

import math
import struct

from .config import RegisterConfig

__all__ = ["decode", "encode", "Refused", "Value"]

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
}
_INT_RANGE = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
_FLOAT_MAX = {"float32": 3.4028234663852886e38, "float64": 1.7976931348623157e308}


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
    data = to_bytes(reg, list(items))  # type: ignore[arg-type]
    if kind == "string":
        return data.rstrip(b"\0 ").decode("utf-8", "replace")
    raw = struct.unpack(">" + _FORMAT[kind], data)[0]
    if kind.startswith("float"):
        if not math.isfinite(raw):
            return None
        return raw * reg.scale + reg.offset
    if reg.scale == 1.0 and reg.offset == 0.0:
        return raw
    return raw * reg.scale + reg.offset


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
        data = value.encode("utf-8")
        room = 2 * (reg.count or 1)
        if len(data) > room:
            raise Refused(f"{reg.name!r} holds {room} bytes, got {len(data)}")
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
    else:
        raw = round(raw)
        lo, hi = _INT_RANGE[kind]
        if not lo <= raw <= hi:
            raise Refused(f"{reg.name!r}: {value!r} is out of range for {kind} (raw {raw})")
    return from_bytes(reg, struct.pack(">" + _FORMAT[kind], raw))
