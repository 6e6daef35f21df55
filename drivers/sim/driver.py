"""The `sim` driver: generates signals (sine, ramp, random, counter) at a fixed rate.

Each `[[driver.signal]]` becomes points with node = the driver's name and
type = the signal's name, `rate` per second, scheduled from the start time so
the rate never drifts; a late wake-up catches up in one batch, so a `counter`
never skips a value. A signal with `writable = true` accepts commands: the
written value replaces the generated one (a counter goes on counting from it).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Literal

from edgert import Actor, Command, Context, Point, Stop
from edgert.config import Invalid

MAX_BATCH = 5000


@dataclass
class Signal:
    name: str = field(metadata={"name": True})
    shape: Literal["sine", "ramp", "random", "counter"] = "sine"
    min: float = 0.0
    max: float = 100.0
    period: float = field(default=60.0, metadata={"gt": 0})
    rate: float = field(default=1.0, metadata={"gt": 0, "max": 1_000_000})
    writable: bool = False

    def check(self) -> None:
        if self.max < self.min:
            raise Invalid("max", f"must be >= min ({self.min})")


@dataclass
class SimConfig:
    signal: list[Signal] = field(default_factory=list)

    def check(self) -> None:
        seen: set[str] = set()
        for s in self.signal:
            if s.name in seen:
                raise Invalid("signal", f"duplicate signal name {s.name!r}")
            seen.add(s.name)


class _Gen:
    """The state of one signal: its schedule and its current value."""

    def __init__(self, sig: Signal, start: float) -> None:
        self.sig = sig
        self.start = start
        self.emitted = 0
        self.counter = 0
        self.held: float | int | None = None

    def due(self, now: float) -> int:
        return int((now - self.start) * self.sig.rate) + 1 - self.emitted

    def next_at(self) -> float:
        return self.start + self.emitted / self.sig.rate

    def value(self, t: float) -> float | int:
        s = self.sig
        if s.shape == "counter":
            v = self.counter
            self.counter += 1
            return v
        if self.held is not None:
            return self.held
        span = s.max - s.min
        phase = ((t - self.start) % s.period) / s.period
        if s.shape == "sine":
            return s.min + span * (0.5 + 0.5 * math.sin(2 * math.pi * phase))
        if s.shape == "ramp":
            return s.min + span * phase
        return random.uniform(s.min, s.max)


class SimDriver(Actor):
    """Publishes generated signals; the model of a driver's select loop."""

    Config = SimConfig

    def run(self, ctx: Context) -> None:
        start = time.monotonic()
        gens = {s.name: _Gen(s, start) for s in ctx.config.signal}
        while True:
            next_due = min((g.next_at() for g in gens.values()), default=None)
            msg = ctx.receive(timeout=ctx.until(next_due))
            match msg:
                case Stop():
                    return
                case Command():
                    ctx.reply(msg, self._write(ctx, gens, msg))
                case _:
                    self._emit(ctx, gens)

    def _emit(self, ctx: Context, gens: dict[str, _Gen]) -> None:
        now = time.monotonic()
        now_ns = time.time_ns()
        points: list[Point] = []
        for g in gens.values():
            n = min(g.due(now), MAX_BATCH)
            for i in range(n):
                t = g.start + (g.emitted + i) / g.sig.rate
                points.append(Point(ctx.name, g.sig.name, "0", g.value(t), now_ns))
            if n > 0:
                g.emitted += n
        if points:
            ctx.publish(points)

    def _write(self, ctx: Context, gens: dict[str, _Gen], cmd: Command) -> str | None:
        for p in cmd.points:  # check all before applying any
            g = gens.get(p.type)
            if p.node != ctx.name or g is None:
                return f"no signal {p.type!r} on node {p.node!r}"
            if not g.sig.writable:
                return f"signal {p.type!r} is not writable"
            if not isinstance(p.value, int | float) or isinstance(p.value, bool):
                return f"signal {p.type!r} takes a number, got {p.value!r}"
        for p in cmd.points:
            g = gens[p.type]
            if g.sig.shape == "counter":
                g.counter = int(p.value)  # type: ignore[arg-type]
            else:
                g.held = p.value
            ctx.publish(Point(ctx.name, p.type, p.key, p.value, origin=p.origin or "cmd"))
        return None
