"""A benchmark driver that publishes a counter one point per `publish` call.

`Producer` models a polling driver: it wakes every `tick` seconds (10 ms by
default), works out how many points are due at `rate` points/s since it
started (so the rate never drifts and a late wake-up catches up), and
publishes each one alone with `ctx.publish(point)`. The values count up from
0 per process, so a subscriber can tell a lost point from a duplicate; `time`
is the moment of the `publish` call, so receipt minus `time` is the point
path's latency. Use it as `type = "edgert.bench.producer:Producer"`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from edgert import Actor, Command, Context, Point, Stop

__all__ = ["Producer", "ProducerConfig", "TYPE"]

TYPE = "edgert.bench.producer:Producer"


@dataclass
class ProducerConfig:
    rate: float = field(default=1000.0, metadata={"gt": 0, "max": 1_000_000})
    tick: float = field(default=0.01, metadata={"gt": 0, "max": 1})
    signal: str = field(default="n", metadata={"name": True})


class Producer(Actor):
    """Publishes `rate` counter points per second, each in its own `publish` call."""

    Config = ProducerConfig

    def run(self, ctx: Context) -> None:
        cfg: ProducerConfig = ctx.config
        start = time.monotonic()
        emitted = 0
        next_tick = start
        while True:
            msg = ctx.receive(timeout=ctx.until(next_tick))
            match msg:
                case Stop():
                    return
                case Command():
                    ctx.reply(msg, "the benchmark producer accepts no commands")
                    continue
            now = time.monotonic()
            if now < next_tick:
                continue
            due = int((now - start) * cfg.rate) + 1 - emitted
            for _ in range(due):
                ctx.publish(Point(ctx.name, cfg.signal, "0", emitted, time.time_ns()))
                emitted += 1
            ctx.report(produced=emitted)
            next_tick += cfg.tick
            if next_tick <= now:  # late (a busy machine): skip ahead, the count catches up
                next_tick = now + cfg.tick
