"""Is the wall clock right yet? For a gateway without a real-time clock (a Pi).

Until NTP synchronizes it, a Pi's clock runs on from the time saved at the last
shutdown, then jumps (a step). Points read before the step carry times that are
off by the step's size.

- A `Clock` says whether the kernel considers the clock synchronized (the
  return value of `adjtimex(2)`, which `timedatectl` reports as "System clock
  synchronized") and the offset between the wall clock and the monotonic
  clock, which only a step changes. `clock_source("kernel")` is the real one,
  `"none"` never checks (always synchronized), `"file:PATH"` reads a JSON file
  `{"synced": bool, "shift_ns": int}` that a test or a simulation rewrites: the
  same interface, so the code that reacts is the code that runs. A clock also
  says which boot this is (`boot_id`: the kernel's
  /proc/sys/kernel/random/boot_id, or the file's `boot_id`): the spool records
  it, so rows written in an earlier boot are never taken for this boot's.
- `ClockWatch` is what the bridge keeps (sans-IO): fed a reading at each turn
  of its bus until the clock is synchronized (so a step is seen before any
  point taken in after it), then every ten seconds, it reports the state and
  records a step that comes while the clock was not synchronized: the wall
  time at the step (on the old clock), its size, and the wall time of the
  boot on the old clock. `fix` moves the time of a point
  read before the sync (the forwarder says which messages hold such points:
  `Publish.presync`) that was stamped before the step and since the boot by
  the step's size, which is the monotonic offset the point had to the step:
  the time it was read, on the synchronized clock. Points of an earlier boot
  are left alone (their clock was another one).
"""

from __future__ import annotations

import ctypes
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

__all__ = [
    "Clock",
    "ClockReading",
    "ClockWatch",
    "Step",
    "clock_source",
    "kernel_boot_id",
    "kernel_synced",
]

TIME_ERROR = 5  # adjtimex's return value while the clock is not synchronized
STEP_NS = 500_000_000  # an offset change this large between two readings is a step
MAX_STEPS = 8  # steps remembered


class ClockReading(NamedTuple):
    synced: bool
    offset_ns: int  # wall clock minus monotonic clock


class Clock(Protocol):
    def read(self) -> ClockReading: ...

    def boot_id(self) -> str:
        """Which boot this is ("": unknown): points of another boot ran on another clock."""
        ...


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def kernel_boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def _offset() -> int:
    return time.time_ns() - time.monotonic_ns()


def kernel_synced(libc: Any = None) -> bool:
    """The kernel's view (adjtimex in read-only mode); True where it cannot be asked."""
    try:
        libc = libc or ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, zeroed: modes = 0 reads only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return True
    return state != TIME_ERROR if state >= 0 else True


class KernelClock:
    def __init__(self) -> None:
        try:
            self.libc: Any = ctypes.CDLL(None, use_errno=True)
        except OSError:
            self.libc = None

    def read(self) -> ClockReading:
        synced = kernel_synced(self.libc) if self.libc is not None else True
        return ClockReading(synced, _offset())

    def boot_id(self) -> str:
        return kernel_boot_id()


class AlwaysSynced:
    def read(self) -> ClockReading:
        return ClockReading(True, _offset())

    def boot_id(self) -> str:
        return kernel_boot_id()


class FileClock:
    """The clock's state from a JSON file: `synced` and `shift_ns` (a step is a new shift),
    and `boot_id` (a new one is a reboot; the kernel's when absent)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def read(self) -> ClockReading:
        try:
            d = json.loads(self.path.read_text())
            return ClockReading(bool(d.get("synced", True)), _offset() + int(d.get("shift_ns", 0)))
        except (OSError, ValueError, TypeError, AttributeError):
            return ClockReading(True, _offset())

    def boot_id(self) -> str:
        try:
            return str(json.loads(self.path.read_text())["boot_id"])
        except (OSError, ValueError, TypeError, KeyError):
            return kernel_boot_id()


def clock_source(spec: str) -> Clock:
    """`kernel`, `none` or `file:PATH`."""
    if spec == "kernel":
        return KernelClock()
    if spec == "none":
        return AlwaysSynced()
    if spec.startswith("file:"):
        return FileClock(spec[5:])
    raise ValueError(f"clock {spec!r}: expected 'kernel', 'none' or 'file:PATH'")


@dataclass(frozen=True)
class Step:
    old_wall_ns: int  # the wall clock at the step, before it
    delta_ns: int  # how far it moved
    boot_wall_ns: int  # the wall clock at boot, on the clock before the step


class ClockWatch:
    """The clock's state as the bridge sees it; fed readings (see the module doc)."""

    def __init__(self, first: ClockReading) -> None:
        self.synced = first.synced
        self.offset_ns = first.offset_ns
        self.steps: list[Step] = []  # the last MAX_STEPS
        self.step_count = 0  # steps seen since start
        self.corrected = 0  # points whose time was corrected

    def update(self, r: ClockReading, mono_ns: int) -> Step | None:
        """Take a reading (`mono_ns`: the monotonic clock, which starts at boot); the
        step it shows, when one came while not synchronized."""
        delta = r.offset_ns - self.offset_ns
        step = None
        if abs(delta) >= STEP_NS and not self.synced:
            step = Step(self.offset_ns + mono_ns, delta, self.offset_ns)
            self.steps = [*self.steps, step][-MAX_STEPS:]
            self.step_count += 1
        self.offset_ns = r.offset_ns
        self.synced = r.synced
        return step

    @property
    def state(self) -> str:
        return "synchronized" if self.synced else "unsynchronized"

    def fix(self, maps: list[dict[str, Any]], seen: int = 0) -> int:
        """Correct, in place, the times of points read before the sync that were
        stamped before a step (and since the boot); returns how many were moved.

        `seen`: how many steps had been seen when the points were taken in (the
        forwarder's `Publish.steps`). A step taken before gets the full correction.
        A step seen already may still have points stamped before it (read just
        before it, taken in after), but a backward step of D makes the D seconds
        before it ambiguous (later points carry those times too): only times
        below that range are moved."""
        moved = set()
        first = self.step_count - len(self.steps)  # the index of self.steps[0]
        for k, s in enumerate(self.steps, first):  # oldest first: one may move it again
            end = s.old_wall_ns if k >= seen else s.old_wall_ns + min(0, s.delta_ns)
            for i, m in enumerate(maps):
                t = m.get("time")
                if isinstance(t, int) and s.boot_wall_ns <= t < end:
                    m["time"] = t + s.delta_ns
                    moved.add(i)
        self.corrected += len(moved)
        return len(moved)
