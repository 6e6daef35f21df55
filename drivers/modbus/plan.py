"""The read plan: which block reads cover a device's registers, and when each is due.

Registers of one device, one table and one poll interval are sorted by address
and merged into blocks: a register joins the block before it when the unused
addresses between them are at most `max_gap` and the block stays within
`max_registers_per_request` (or `max_bits_per_request` for coils and discrete
inputs). Each block is one request per poll.

A block is due on a fixed grid, `first + k * period` (an `every()` timer), so
polling never drifts; when the bus falls behind by more than a period, the
missed slots are skipped (and counted in `skipped`), never queued up. A block that a device refuses with
"illegal data address" can be `split()` into reads without gaps.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

from edgert import Every, every

from . import pdu
from .config import DeviceConfig, RegisterConfig
from .registers import _FORMAT, Value, decode

__all__ = ["Block", "merge", "plan_device"]


def merge(
    registers: list[RegisterConfig], max_count: int, max_gap: int
) -> list[tuple[int, int, list[RegisterConfig]]]:
    """(start, count, registers) of the fewest reads covering `registers` (one table)."""
    out: list[tuple[int, int, list[RegisterConfig]]] = []
    start = end = -1
    members: list[RegisterConfig] = []
    for r in sorted(registers, key=lambda r: (r.address, -r.size)):
        r_end = r.address + r.size
        if members and r.address <= end + max_gap and max(end, r_end) - start <= max_count:
            end = max(end, r_end)
            members.append(r)
            continue
        if members:
            out.append((start, end - start, members))
        start, end, members = r.address, r_end, [r]
    if members:
        out.append((start, end - start, members))
    return out


@dataclass(eq=False)
class Block:
    """One read request of one device, repeated every `period` seconds."""

    device: int  # index of the device on its bus
    table: str
    start: int
    count: int
    registers: list[RegisterConfig]
    period: float
    first: float  # the time of the first slot
    extra: float | None = None  # a one-off read before `due` (read-back after a write)
    read_at: float = 0.0  # when it was last read (the longest waiting goes first)
    refused: int | None = None  # the exception code of the last refusal, until read again
    base: int = 0  # the device counts addresses from this (address_base, coil_base)
    request: bytes = field(init=False)
    tick: Every = field(init=False)
    _readers: list[_Reader] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        fc = pdu.READ_FC[self.table]
        self.request = pdu.read_request(fc, self.start - self.base, self.count)
        self.tick = every(self.period, start=self.first)
        self._readers = [_reader(r, r.address - self.start) for r in self.registers]

    @property
    def due(self) -> float:
        """The time of the next slot on the grid."""
        return self.tick.next

    @property
    def skipped(self) -> int:
        """Slots passed over because the bus was late."""
        return self.tick.skipped

    @property
    def next_at(self) -> float:
        due = self.tick.next
        return due if self.extra is None or self.extra > due else self.extra

    def advance(self, now: float) -> None:
        """After a read at `now`: drop the one-off read, move `due` past `now` on the grid."""
        self.extra = None
        self.tick.due(now)

    def values(self, items: list[int] | list[bool]) -> list[tuple[RegisterConfig, Value]]:
        """Each register's value from the items this block read."""
        out = []
        data = b""
        for reg, i, size, how, st, scaled in self._readers:
            if how == _ITEM:
                v: Value = items[i]
            elif how == _GENERIC:
                out.append((reg, decode(reg, items[i : i + size])))
                continue
            else:
                if not data:  # the block's registers as bytes, once per read
                    data = struct.pack(f">{len(items)}H", *items)
                v = st.unpack_from(data, 2 * i)[0]  # type: ignore[union-attr]
                if how == _FLOAT and not math.isfinite(v):  # type: ignore[arg-type]
                    out.append((reg, None))
                    continue
            if scaled:
                v = v * reg.scale + reg.offset  # type: ignore[operator]
            out.append((reg, v))
        return out

    def split(self, now: float) -> list[Block]:
        """This block as reads that span no unused address, first due at `now`
        (itself when it cannot split)."""
        parts = merge(self.registers, self.count, 0)
        if len(parts) == 1:
            return [self]
        return [
            Block(self.device, self.table, s, c, regs, self.period, now, base=self.base)
            for s, c, regs in parts
        ]


# How a register's value comes out of a block's items: the item itself (a coil,
# an unscaled uint16), a struct unpacked from the block's bytes (numbers in
# big-endian word and byte order), or `decode` (every other case).
_ITEM, _STRUCT, _FLOAT, _GENERIC = range(4)
_Reader = tuple[RegisterConfig, int, int, int, "struct.Struct | None", bool]


def _reader(reg: RegisterConfig, index: int) -> _Reader:
    """Worked out once per register, so a read decodes each value with few steps."""
    kind, size = reg.kind, reg.size
    scaled = not (reg.scale == 1.0 and reg.offset == 0.0)
    if reg.bits:
        return (reg, index, size, _ITEM, None, False)
    fmt = _FORMAT.get(kind)
    if reg.bit is not None or fmt is None or (size > 1 and reg.word_order != "big"):
        return (reg, index, size, _GENERIC, None, scaled)
    if reg.byte_order != "big":
        return (reg, index, size, _GENERIC, None, scaled)
    if kind == "uint16":
        return (reg, index, size, _ITEM, None, scaled)
    how = _FLOAT if kind.startswith("float") else _STRUCT
    return (reg, index, size, how, struct.Struct(">" + fmt), scaled)


def plan_device(
    index: int,
    dev: DeviceConfig,
    default_interval: float,
    first: float,
    phase: float = 0.0,
    spread: float = math.inf,
) -> list[Block]:
    """The blocks that poll device number `index`, first due at `first`, or `phase`
    (0 to 1) of the way into their first interval (of at most `spread` seconds)."""
    groups: dict[tuple[str, float], list[RegisterConfig]] = {}
    for r in dev.register:
        interval = r.poll_interval or dev.poll_interval or default_interval
        groups.setdefault((r.table, interval), []).append(r)
    blocks = []
    for (table, interval), regs in groups.items():
        limit = (
            dev.max_bits_per_request
            if table in ("coil", "discrete")
            else dev.max_registers_per_request
        )
        gap = -1 if dev.one_request_per_register else dev.max_gap  # -1: only the same address
        for start, count, members in merge(regs, limit, gap):
            at = first + phase * min(interval, spread)
            blocks.append(
                Block(index, table, start, count, members, interval, at, base=dev.base(table))
            )
    return blocks
