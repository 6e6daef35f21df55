"""The restart policy, pure: what to do when an actor's process has exited.

No processes, clocks or randomness of its own: `Policy.exited` is given the
time, how long the process ran and a source of jitter, and returns a
`Decision`. The supervisor's loop acts on it; the tests drive it directly.

OTP's rules, per actor:
- restart types: `permanent` is always restarted, `transient` only after an
  error, `temporary` never (its state becomes `failed` or `stopped`);
- backoff: the delay doubles from `backoff_min` up to `backoff_max`, with
  +-20 % jitter, and starts over once a run lasted `healthy_after` seconds;
- intensity: more than `intensity` restarts within `period` seconds (a sliding
  window on the monotonic clock) and the actor is given up on. Every restart
  counts, whether or not the process reached "running", so an actor that comes
  up and dies again is rate-limited like one that never starts;
- given up on: a critical actor tears the group down; any other becomes
  `failed` and is tried again after `failed_retry` seconds (0: never), with a
  fresh window.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Restart", "Policy", "History", "Decision"]

Restart = Literal["permanent", "transient", "temporary"]
JITTER = 0.2


@dataclass(frozen=True)
class Decision:
    """What to do with an actor whose process exited.

    `action` is `restart` (after `delay` seconds), `failed` (given up on; tried
    again after `delay` seconds, or never when `delay` is None), `stopped` (done,
    cleanly), or `teardown` (a critical actor was given up on: stop the group).
    """

    action: Literal["restart", "failed", "stopped", "teardown"]
    delay: float | None = None
    restarts_in_period: int = 0


@dataclass
class History:
    """One actor's restart record: the sliding window and the backoff step."""

    window: deque[float] = field(default_factory=deque)
    failures: int = 0  # consecutive short runs, for backoff


@dataclass(frozen=True)
class Policy:
    intensity: int = 5
    period: float = 30.0
    backoff_min: float = 0.1
    backoff_max: float = 10.0
    healthy_after: float = 10.0
    failed_retry: float = 60.0

    @classmethod
    def of(cls, section: object) -> Policy:
        """From a `[supervisor]` section (any object with these attributes)."""
        return cls(**{k: getattr(section, k) for k in cls.__dataclass_fields__})

    def exited(
        self,
        h: History,
        *,
        now: float,
        restart: Restart,
        error: bool,
        ran_for: float,
        critical: bool = False,
        jitter: Callable[[], float] = random.random,
    ) -> Decision:
        """Decide for an actor that exited (`error`: it failed rather than returned).

        `ran_for` is how long it was running (0 when it never got there);
        `jitter()` returns a number in [0, 1). Updates `h`.
        """
        if restart == "temporary" or (restart == "transient" and not error):
            return Decision("failed" if error else "stopped")
        w = h.window
        w.append(now)
        while w and w[0] <= now - self.period:
            w.popleft()
        if len(w) > self.intensity:
            n = len(w)
            w.clear()
            h.failures = 0
            if critical:
                return Decision("teardown", restarts_in_period=n)
            retry = self.failed_retry if self.failed_retry > 0 else None
            return Decision("failed", retry, restarts_in_period=n)
        if ran_for >= self.healthy_after:
            h.failures = 0
        delay = min(self.backoff_max, self.backoff_min * 2 ** min(h.failures, 40))
        delay = min(self.backoff_max, delay * (1 - JITTER + 2 * JITTER * jitter()))
        h.failures += 1
        return Decision("restart", delay, restarts_in_period=len(w))
