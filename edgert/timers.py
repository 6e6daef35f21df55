"""`every(interval)`: a periodic timer for an actor's loop that never drifts.

Slot k of a timer falls at `start + k * interval` (computed, never summed, so
rounding does not add up). `next` is the deadline of the first slot not yet
taken; give it to `ctx.until()` as the receive timeout. Then either:

- `due()` for a poll: True once when a slot has come; when several came (the
  loop was late), it fires once, skips the others and counts them in
  `skipped`, so a slow poll never turns into a burst of polls;
- `take(limit)` for a generator that must not skip (a counter): how many slots
  came, each to be produced; at most `limit`, the rest come on the next call.

    tick = every(cfg.interval)
    while True:
        msg = ctx.receive(timeout=ctx.until(tick.next))
        ...
        if tick.due():
            ctx.publish(read())

Slots sit on a grid shared by every process of the host: by default the
first slot is the newest multiple of `interval` on the monotonic clock (which
is system-wide), so it has already come and fires at once, and the next ones
fall on the multiples after it. Actors polling at the same interval therefore
wake at the same instants, and the bridge takes their batches in one turn
instead of one turn each. `start=` gives a schedule of its own instead.

The clock is `time.monotonic` (the one `ctx.now()` reads) unless another is
given; a test passes its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["every", "Every", "grid_after"]


class Every:
    """A periodic schedule: slots at `start + k * interval`, k = 0, 1, 2, ..."""

    __slots__ = ("interval", "start", "taken", "skipped", "_clock")

    def __init__(
        self,
        interval: float,
        *,
        start: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError(f"every(): the interval must be a positive number, got {interval!r}")
        self.interval = float(interval)
        self._clock = clock
        self.start = _grid(self.interval, clock) if start is None else float(start)
        self.taken = 0  # slots passed so far, fired or skipped
        self.skipped = 0  # slots `due()` passed over because the loop was late

    @property
    def next(self) -> float:
        """The deadline of the next slot (on the timer's clock)."""
        return self.at(self.taken)

    def at(self, k: int) -> float:
        """The time of slot `k`."""
        return self.start + k * self.interval

    def _came(self, now: float) -> int:
        """How many slots not yet taken are at or before `now`."""
        if now < self.next:
            return 0
        last = math.floor((now - self.start) / self.interval)  # the newest slot <= now ...
        while self.at(last + 1) <= now:  # ... whatever the rounding of the division
            last += 1
        while last >= self.taken and self.at(last) > now:
            last -= 1
        return last + 1 - self.taken

    def due(self, now: float | None = None) -> bool:
        """True when a slot came (once, however many came); the missed ones are skipped."""
        n = self._came(self._clock() if now is None else now)
        if n == 0:
            return False
        self.skipped += n - 1
        self.taken += n
        return True

    def take(self, limit: int | None = None, now: float | None = None) -> int:
        """How many slots came (at most `limit`); each is to be handled, none is skipped.

        Slot `taken - n + i` of the n returned falls at `at(taken - n + i)`.
        """
        n = self._came(self._clock() if now is None else now)
        if limit is not None:
            n = min(n, limit)
        self.taken += n
        return n


def _grid(interval: float, clock: Callable[[], float]) -> float:
    """The newest multiple of `interval` at or before now on `clock`."""
    if clock is time.monotonic:  # in integer nanoseconds: no rounding past now
        step = max(1, round(interval * 1e9))
        return time.monotonic_ns() // step * step / 1e9
    now = clock()
    at = math.floor(now / interval) * interval
    return at if at <= now else at - interval


def every(
    interval: float, *, start: float | None = None, clock: Callable[[], float] = time.monotonic
) -> Every:
    """A timer with a slot every `interval` seconds from `start` (default: the
    newest multiple of `interval` on the clock, so the first slot has come).

    The first slot is `start` itself: pass `start=ctx.now() + interval` for the
    first one an interval from now (off the shared grid).
    """
    return Every(interval, start=start, clock=clock)


def grid_after(now: float, interval: float) -> float:
    """The first multiple of `interval` after `now` on the monotonic clock: the next
    instant of the host's shared grid, where a periodic wake-up meets the others."""
    at = (math.floor(now / interval) + 1) * interval
    return at if at > now else at + interval
