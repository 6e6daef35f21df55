"""The `sim` driver: generates signals (sine, ramp, random, counter) at a fixed rate.

Each `[[driver.signal]]` becomes points with node = the driver's name and
type = the signal's name, `rate` per second. A signal's points fall on a
schedule (`every(1 / rate)`, on the grid every actor of the host shares, so
drivers of one rate wake together), so the rate never drifts and each point
carries its own slot's time. The driver does not wake once per
point: it wakes when the next point is due but at most every `WAKE_MIN`
seconds, and then publishes each point that came due with its own
`ctx.publish(point)`, as a polling driver does. A late wake-up catches up, so a
`counter` never skips a value. A signal with `writable = true` accepts
commands: the written value replaces the generated one (a counter goes on
counting from it).

The highest rate, `FULL_SPEED` (1,000,000), means as fast as the gateway takes
points: such a signal makes as many points as the outbox has credit for
(`ctx.room()`, at most `MAX_PER_WAKE` a wake-up), more than one a microsecond
where the path takes more, their times spread evenly since its last
wake-up; when the credit is short it passes over the microsecond slots it
could not send (counted as `skipped` in the driver's figures), so a saturated
path costs the driver a wake-up every `CREDIT_WAIT` (2 ms: the acks that free
credit come that often), not a core spent making points that would be
dropped.
It publishes the points of a wake-up in one `ctx.publish_series(type, values,
times)`, as a driver reading a block of samples does, its times a `range`
when the rate divides a second into whole nanoseconds: the outbox then packs
them as one block, with no `Point` and no step in Python per value.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from edgert import Actor, Command, Context, Invalid, Point, Stop, every

MAX_PER_WAKE = 20_000  # points of one signal per wake-up; the rest come at the next
WAKE_MIN = 0.01  # seconds: the shortest time between two wake-ups
CREDIT_WAIT = 0.002  # ... while a full-speed signal waits for credit (acks free it)
FULL_SPEED = 1_000_000  # points per second that mean: as fast as the bridge takes them


@dataclass
class Signal:
    """One `[[driver.signal]]`: a generated value published as points of type `name`."""

    name: str = field(
        metadata={"name": True, "doc": "the points' type (their node is the driver's name)"}
    )
    shape: Literal["sine", "ramp", "random", "counter"] = field(
        default="sine",
        metadata={
            "doc": "sine and ramp go from min to max over each period; random is uniform"
            " in min..max; counter is 0, 1, 2, ... never skipping"
        },
    )
    min: float = field(default=0.0, metadata={"doc": "lowest value (not for counter)"})
    max: float = field(default=100.0, metadata={"doc": "highest value, >= min (not for counter)"})
    period: float = field(
        default=60.0, metadata={"gt": 0, "doc": "seconds per cycle of sine and ramp"}
    )
    rate: float = field(
        default=1.0,
        metadata={
            "gt": 0,
            "max": FULL_SPEED,
            "doc": f"points per second ({FULL_SPEED:,}: as fast as the gateway takes them)",
        },
    )
    writable: bool = field(
        default=False,
        metadata={"doc": "commands may set the value (a counter counts on from the one written)"},
    )

    def check(self) -> None:
        if self.max < self.min:
            raise Invalid("max", f"must be >= min ({self.min})")


@dataclass
class SimConfig:
    signal: list[Signal] = field(
        default_factory=list, metadata={"doc": "the signals to generate, one table each"}
    )

    def check(self) -> None:
        seen: set[str] = set()
        for s in self.signal:
            if s.name in seen:
                raise Invalid("signal", f"duplicate signal name {s.name!r}")
            seen.add(s.name)


class _Gen:
    """The state of one signal: its schedule and its current value."""

    def __init__(self, sig: Signal) -> None:
        self.sig = sig
        self.slots = every(1.0 / sig.rate)  # on the host's shared grid
        self.counter = 0
        self.held: float | int | None = None
        self.last_ns = 0  # a full-speed signal's newest point time (ns)

    def burst(self, n: int, now: float, wall_ns: int) -> tuple[Sequence[float | int], range]:
        """A full-speed signal's `n` values and times (ns), spread evenly over the time
        since its last burst and ending at `now`: as many as the credit allows, not one
        a slot."""
        end = wall_ns + int(now * 1e9)
        step = max(1, (end - self.last_ns) // n) if self.last_ns else 1
        t0 = max(end - (n - 1) * step, self.last_ns + 1)
        times = range(t0, t0 + n * step, step)
        self.last_ns = times[-1]
        if self.sig.shape == "counter":
            values: Sequence[float | int] = range(self.counter, self.counter + n)
            self.counter += n
        else:
            values = [self.value((t - wall_ns) / 1e9) for t in times]
        return values, times

    def value(self, t: float) -> float | int:
        s = self.sig
        if s.shape == "counter":
            v = self.counter
            self.counter += 1
            return v
        if self.held is not None:
            return self.held
        span = s.max - s.min
        phase = ((t - self.slots.start) % s.period) / s.period
        if s.shape == "sine":
            return s.min + span * (0.5 + 0.5 * math.sin(2 * math.pi * phase))
        if s.shape == "ramp":
            return s.min + span * phase
        return random.uniform(s.min, s.max)


class SimDriver(Actor[SimConfig]):
    """Publishes generated signals; the model of a driver's select loop."""

    skipped = 0  # full-speed slots passed over for want of credit
    starved = False  # the last wake-up had less credit than points due: look again soon

    def run(self, ctx: Context[SimConfig]) -> None:
        self.skipped = 0
        self.starved = False
        start = ctx.now()
        wall_ns = time.time_ns() - int(start * 1e9)  # monotonic -> wall clock, for point times
        gens = {s.name: _Gen(s) for s in ctx.config.signal}
        woke = -math.inf
        while True:
            wake = min((g.slots.next for g in gens.values()), default=None)
            if wake is not None:
                wake = max(wake, woke + (CREDIT_WAIT if self.starved else WAKE_MIN))
            msg = ctx.receive(timeout=ctx.until(wake))
            match msg:
                case Stop():
                    return
                case Command():
                    ctx.reply(msg, self._write(ctx, gens, msg))
                case None:
                    woke = ctx.now()
                    self._emit(ctx, gens, wall_ns, woke)

    def _emit(
        self, ctx: Context[SimConfig], gens: dict[str, _Gen], wall_ns: int, now: float
    ) -> None:
        """Publish the points whose slots came by `now` (the wake-up's clock reading)."""
        self.starved = False
        for g in gens.values():
            if g.sig.rate >= FULL_SPEED:
                came = g.slots.take(now=now)  # every slot passed; points for the credit
                n = min(ctx.room(), MAX_PER_WAKE)
                if came > n:
                    self.starved = True
                    self.skipped += came - n
                    ctx.report(skipped=self.skipped)
                if n:
                    values, times = g.burst(n, now, wall_ns)
                    ctx.publish_series(g.sig.name, values, times)
                continue
            slots = g.slots
            n = slots.take(MAX_PER_WAKE, now=now)
            # once per wake-up, not per point: the names, the bound methods
            node, typ, at, value, publish = ctx.name, g.sig.name, slots.at, g.value, ctx.publish
            for k in range(slots.taken - n, slots.taken):
                t = at(k)
                publish(Point(node, typ, "0", value(t), wall_ns + int(t * 1e9)))

    def _write(self, ctx: Context[SimConfig], gens: dict[str, _Gen], cmd: Command) -> str | None:
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
