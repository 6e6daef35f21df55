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

from dataclasses import dataclass, field

from edgert import Every, every

from . import pdu
from .config import DeviceConfig, RegisterConfig
from .registers import Value, decode

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

    def __post_init__(self) -> None:
        fc = pdu.READ_FC[self.table]
        self.request = pdu.read_request(fc, self.start - self.base, self.count)
        self.tick = every(self.period, start=self.first)

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
        for r in self.registers:
            i = r.address - self.start
            out.append((r, decode(r, items[i : i + r.size])))
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


def plan_device(
    index: int, dev: DeviceConfig, default_interval: float, first: float
) -> list[Block]:
    """The blocks that poll device number `index`, all first due at `first`."""
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
            blocks.append(
                Block(index, table, start, count, members, interval, first, base=dev.base(table))
            )
    return blocks
