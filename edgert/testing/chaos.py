"""A counter whose every value is accounted for, through any crash: for chaos tests.

`ChaosCounter` publishes `<name>.n.0` = 0, 1, 2, ... at `rate` points a second,
never more than `ctx.room()` allows (so its outbox never drops at the source),
and keeps its place in a memory-mapped `state` file, so a restarted process
(after a SIGKILL of the driver or of `edgert run`) counts on from where the
killed one stopped. A SIGKILL can land between `ctx.publish` and the state
update: the value being published then is marked pending in the file, and the
next start records it in `<state>.uncertain` (accepted or not, nobody can
know) and moves on. `counter_state(path)` reads back the next value and the
uncertain ones; `check_counter(values, state)` compares what a stream holds
with that: lost, duplicated, out of order.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgert import Actor, Command, Context, Stop
from edgert.point import Point

__all__ = ["ChaosCounter", "CounterState", "Verdict", "check_counter", "counter_state"]

_LAYOUT = struct.Struct("<QQ")  # next value, pending flag (1: `next` may have been accepted)


@dataclass
class ChaosConfig:
    state: str = field(metadata={"doc": "the file that keeps the count across restarts"})
    rate: float = field(default=200.0, metadata={"gt": 0})


class ChaosCounter(Actor):
    Config = ChaosConfig

    def run(self, ctx: Context) -> None:
        cfg: ChaosConfig = ctx.config
        path = Path(cfg.state)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _LAYOUT.size:
                os.ftruncate(fd, _LAYOUT.size)
            with mmap.mmap(fd, _LAYOUT.size) as mem:
                self._count(ctx, cfg, path, mem)
        finally:
            os.close(fd)

    @staticmethod
    def _count(ctx: Context, cfg: ChaosConfig, path: Path, mem: mmap.mmap) -> None:
        n, pending = _LAYOUT.unpack_from(mem)
        if pending:
            with open(f"{path}.uncertain", "a") as f:
                f.write(f"{n}\n")
            n += 1
            _LAYOUT.pack_into(mem, 0, n, 0)
        step = 1.0 / cfg.rate
        due = time.monotonic()
        while True:
            wait = ctx.until(due) if ctx.room() > 0 else 0.05
            match ctx.receive(timeout=wait):
                case Stop():
                    return
                case Command() as cmd:
                    ctx.reply(cmd, "ChaosCounter takes no commands")
            now = time.monotonic()
            while due <= now and ctx.room() > 0:
                _LAYOUT.pack_into(mem, 0, n, 1)
                ctx.publish(Point(ctx.name, "n", "0", n))
                n += 1
                _LAYOUT.pack_into(mem, 0, n, 0)
                due += step
            if due < now - 1.0:
                due = now  # held back by the window: no burst to catch up


@dataclass
class CounterState:
    next: int  # every value below this one was published (or is uncertain)
    uncertain: set[int]


def counter_state(path: str | Path) -> CounterState:
    """What a `ChaosCounter` with this `state` file has published, as far as it knows."""
    n, pending = _LAYOUT.unpack(Path(path).read_bytes()[: _LAYOUT.size])
    unc_file = Path(f"{path}.uncertain")
    uncertain = {int(x) for x in unc_file.read_text().split()} if unc_file.exists() else set()
    if pending:
        uncertain.add(n)
    return CounterState(n, uncertain)


@dataclass
class Verdict:
    lost: list[int]  # published, certainly, and not in the stream
    duplicates: list[int]  # in the stream more than once
    out_of_order: list[tuple[int, int]]  # (before, after) pairs that go backwards
    unknown: list[int]  # in the stream, never published

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicates or self.out_of_order or self.unknown)


def check_counter(values: list[int], state: CounterState) -> Verdict:
    """Compare a counter's values, in stream order, with what its driver published."""
    seen: set[int] = set()
    dups: list[int] = []
    back: list[tuple[int, int]] = []
    prev = -1
    for v in values:
        if v in seen:
            dups.append(v)
        seen.add(v)
        if v <= prev:
            back.append((prev, v))
        prev = max(prev, v)
    lost = [v for v in range(state.next) if v not in seen and v not in state.uncertain]
    unknown = sorted(v for v in seen if v >= state.next and v not in state.uncertain)
    return Verdict(lost, dups, back, unknown)
