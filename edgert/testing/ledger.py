"""`LedgerDriver`: a sim-style counter that writes down what `ctx.publish` accepted.

For tests that kill a driver and then check that nothing it handed over was
lost. Each process of the driver is one *run*: it takes the next run number
(the files in `ledger` so far), publishes the counter 0, 1, 2, ... of that run
as points `(name, "n", "<run>", value)` at `rate` per second, each with its
own `ctx.publish` on wake-ups every 10 ms (like the `sim` driver), and after
each publish returns writes the count accepted so far into `ledger/run-<run>`
(bytes 0-8, little-endian; bytes 8-16 hold its pid). The file is in the page
cache, so it outlives a SIGKILL of the process: whatever it says was accepted,
and maybe one point more, must reach NATS. With `crash_at`, the first run
raises out of `run` once it published that many points. Use it as
`type = "edgert.testing.ledger:LedgerDriver"`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from edgert import Actor, Command, Context, Stop, every
from edgert.point import Point

__all__ = ["LedgerDriver", "LedgerConfig", "read_ledger"]

WAKE = 0.01


@dataclass
class LedgerConfig:
    ledger: str = field(metadata={"doc": "directory of the run files"})
    rate: float = field(default=2000.0, metadata={"gt": 0, "doc": "points per second"})
    crash_at: int = field(
        default=0, metadata={"min": 0, "doc": "run 0 raises once it published this many (0: never)"}
    )


class LedgerDriver(Actor[LedgerConfig]):
    Config = LedgerConfig

    def run(self, ctx: Context[LedgerConfig]) -> None:
        cfg = ctx.config
        os.makedirs(cfg.ledger, exist_ok=True)
        run = len(os.listdir(cfg.ledger))
        fd = os.open(f"{cfg.ledger}/run-{run}", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.pwrite(fd, (0).to_bytes(8, "little") + os.getpid().to_bytes(8, "little"), 0)
            slots = every(1.0 / cfg.rate, start=ctx.now())
            key = str(run)
            n = 0
            while True:
                msg = ctx.receive(timeout=ctx.until(max(slots.next, ctx.now() + WAKE)))
                if isinstance(msg, Stop):
                    return
                if isinstance(msg, Command):
                    ctx.reply(msg, "LedgerDriver accepts no commands")
                    continue
                for _ in range(slots.take(20_000)):
                    ctx.publish(Point(ctx.name, "n", key, n))
                    n += 1
                    os.pwrite(fd, n.to_bytes(8, "little"), 0)
                    if run == 0 and n == cfg.crash_at:
                        raise RuntimeError(f"LedgerDriver crashed on purpose after {n} points")
        finally:
            os.close(fd)


def read_ledger(ledger: str) -> dict[int, tuple[int, int]]:
    """run -> (points accepted, pid) from a ledger directory."""
    out = {}
    for f in os.listdir(ledger):
        if f.startswith("run-"):
            with open(os.path.join(ledger, f), "rb") as fh:
                b = fh.read(16)
            out[int(f[4:])] = (int.from_bytes(b[:8], "little"), int.from_bytes(b[8:16], "little"))
    return out
