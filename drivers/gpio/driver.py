"""The `gpio` driver: Linux GPIO lines (libgpiod v2) or a simulated chip, as points.

Each `[[driver.line]]` is a point with node = the driver's name and type = the
line's name, its value a bool (logical: `active_low` inverts). At start the
driver requests all its lines in one request (waiting with backoff while the
chip is missing or a line is busy) and publishes every line's value. Then:

- an input with `edge` publishes each (debounced) edge the chip reports, with
  the edge's own timestamp; with `edge = "none"` it is read every
  `poll_interval` seconds and published when its value changed;
- an output takes commands (points of its type, value true/false or 0/1): a
  batch is checked whole first, so a batch with an unknown line, an input or a
  bad value is refused and writes nothing; a written value is published back
  (origin "cmd" unless the command names one) and the command answered ok;
- on stop, outputs with `on_stop = "initial"` go back to `initial`, and the
  request is released (in `run`'s tear-down; a killed process's lines are
  released by the kernel, or the simulator's flocks).

One loop owns everything: it waits on the inbox and the chip's edge-event fd
together (`ctx.watch`), with a timeout from the next poll or debounce deadline.
"""

from __future__ import annotations

import time

from edgert import Actor, Command, Context, Every, Point, Stop, every
from edgert.point import Value

from .backend import LineRequest, LineSettings, open_backend
from .config import GpioConfig, Line

__all__ = ["GpioDriver", "settings_for", "as_bool"]

RETRY_MIN = 0.2  # seconds between attempts to request the lines, doubling...
RETRY_MAX = 5.0  # ...up to this


def settings_for(line: Line) -> LineSettings:
    """The request settings of a configured line."""
    return LineSettings(
        direction=line.direction,
        edge=line.edges,
        bias=line.bias,
        active_low=line.active_low,
        debounce=line.debounce_s,
        initial=line.initial_value,
    )


def as_bool(value: Value) -> bool | None:
    """A command's value as a line level: true/false or the integers 0/1; None otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    return None


class GpioDriver(Actor[GpioConfig]):
    """GPIO lines as points; outputs take commands. See the module's description."""

    def run(self, ctx: Context[GpioConfig]) -> None:
        cfg = ctx.config
        req = self._request(ctx, cfg)
        if req is None:
            return  # stopped while waiting for the chip
        with req:
            lines = _Lines(ctx, cfg, req)
            fd = req.fileno()
            ctx.watch(fd)
            try:
                lines.start()
                while True:
                    msg = ctx.receive(timeout=ctx.until(lines.next_deadline()))
                    match msg:
                        case Stop():
                            return
                        case Command():
                            ctx.reply(msg, lines.write(msg))
                    lines.read_events()
                    lines.poll_due()
            finally:
                ctx.unwatch(fd)
                lines.restore_outputs()

    def _request(self, ctx: Context[GpioConfig], cfg: GpioConfig) -> LineRequest | None:
        """Request every line, retrying with backoff; None when stopped first."""
        backend = open_backend(cfg.chip)
        settings = {ln.offset: settings_for(ln) for ln in cfg.line}
        consumer = cfg.consumer or f"edgert-{ctx.name}"
        delay = RETRY_MIN
        failures = 0
        while True:
            try:
                req = backend.request(consumer, settings)
            except OSError as e:
                failures += 1
                why = f"cannot request lines of {cfg.chip}: {e.strerror or e}"
                ctx.log.warning("%s; retrying in %.1f s", why, delay)
                ctx.report(now=f"waiting: {why}", request_failures=failures)
            else:
                ctx.report(now="", request_failures=failures)
                return req
            retry_at = ctx.now() + delay
            delay = min(delay * 2, RETRY_MAX)
            while ctx.now() < retry_at:
                msg = ctx.receive(timeout=ctx.until(retry_at))
                match msg:
                    case Stop():
                        return None
                    case Command():
                        ctx.reply(msg, f"the lines of {cfg.chip} are not requested yet")


class _Lines:
    """The state of one run with the lines requested: values, timers, counters."""

    def __init__(self, ctx: Context[GpioConfig], cfg: GpioConfig, req: LineRequest) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.req = req
        self.by_name = {ln.name: ln for ln in cfg.line}
        self.by_offset = {ln.offset: ln for ln in cfg.line}
        self.polled = [ln for ln in cfg.line if ln.is_input and ln.edges == "none"]
        self.values: dict[str, bool] = {}
        self.poll: Every | None = None
        if self.polled:  # the first poll on the shared grid after the values published at start
            self.poll = every(cfg.poll_interval)
            self.poll.taken = 1  # the slot that has come is the start's publish
        self.counts = {"edges": 0, "polls": 0, "polls_skipped": 0, "writes": 0, "refused": 0}

    def start(self) -> None:
        """Publish every line's value as requested."""
        now_ns = time.time_ns()
        got = self.req.get(ln.offset for ln in self.cfg.line)
        self._publish([(self.by_offset[o], v, now_ns, "") for o, v in got.items()])

    def next_deadline(self) -> float | None:
        next_poll = None if self.poll is None else self.poll.next
        deadlines = [d for d in (next_poll, self.req.deadline()) if d is not None]
        return min(deadlines, default=None)

    def read_events(self) -> None:
        events = self.req.read_events()
        if events:
            self.counts["edges"] += len(events)
            self._publish([(self.by_offset[e.offset], e.value, e.time_ns, "") for e in events])

    def poll_due(self) -> None:
        if self.poll is None or not self.poll.due():
            return  # a late loop polls once and counts the polls it skipped
        self.counts["polls"] += 1
        self.counts["polls_skipped"] = self.poll.skipped
        now_ns = time.time_ns()
        got = self.req.get(ln.offset for ln in self.polled)
        changed = [
            (self.by_offset[o], v, now_ns, "")
            for o, v in got.items()
            if self.values.get(self.by_offset[o].name) != v
        ]
        self._publish(changed)

    def write(self, cmd: Command) -> str | None:
        """Apply a command whole or not at all; None when written, else why not."""
        changes: dict[str, tuple[bool, str]] = {}
        for p in cmd.points:
            ln = self.by_name.get(p.type)
            if p.node != self.ctx.name or ln is None:
                outputs = ", ".join(n for n, x in self.by_name.items() if not x.is_input)
                return self._refuse(
                    f"no line {p.type!r} on node {p.node!r} (outputs: {outputs or 'none'})"
                )
            if ln.is_input:
                return self._refuse(f"line {ln.name!r} is an input; only outputs take commands")
            v = as_bool(p.value)
            if v is None:
                return self._refuse(f"line {ln.name!r} takes true/false or 0/1, got {p.value!r}")
            changes[ln.name] = (v, p.origin or "cmd")
        try:
            self.req.set({self.by_name[n].offset: v for n, (v, _) in changes.items()})
        except OSError as e:
            return self._refuse(f"writing {', '.join(changes)} failed: {e}")
        self.counts["writes"] += 1
        now_ns = time.time_ns()
        self._publish([(self.by_name[n], v, now_ns, origin) for n, (v, origin) in changes.items()])
        return None

    def restore_outputs(self) -> None:
        """Set outputs with `on_stop = "initial"` back to `initial` (run's tear-down)."""
        back = {ln.name: ln.initial_value for ln in self.cfg.line if ln.restore_on_stop}
        if not back:
            return
        try:
            self.req.set({self.by_name[n].offset: v for n, v in back.items()})
        except OSError as e:
            self.ctx.log.error("could not set outputs back to their initial values: %s", e)
            return
        now_ns = time.time_ns()
        self._publish([(self.by_name[n], v, now_ns, "on_stop") for n, v in back.items()])

    def _refuse(self, why: str) -> str:
        self.counts["refused"] += 1
        self.ctx.report(**self.counts)
        return why

    def _publish(self, items: list[tuple[Line, bool, int, str]]) -> None:
        if not items:
            return
        points = []
        for ln, v, t, origin in items:
            self.values[ln.name] = v
            points.append(Point(self.ctx.name, ln.name, "0", v, t, origin))
        self.ctx.publish(points)
        self.ctx.report(values=dict(self.values), **self.counts)
