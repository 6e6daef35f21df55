"""What the benchmarks read about processes from /proc: CPU time, I/O bytes, start times.

`cpu_seconds(pids)` gives each live process's user + system CPU time;
`run_seconds(pids)` the same to the nanosecond, summed over its live threads
(for idle figures, where a clock tick's 10 ms is a large part of the whole);
`cpu_used(before, after)` sums what a set of processes used between two such
samples (a process that appeared in between counts from zero, one that ended
counts up to its last sample). `io_counters(pid)` reads /proc/PID/io.
`start_time(pid)` identifies a process across PID reuse.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = ["cpu_seconds", "run_seconds", "cpu_used", "io_counters", "start_time", "alive"]

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    """User + system CPU seconds of each process in `pids` that is still there."""
    out: dict[int, float] = {}
    for pid in pids:
        f = _stat_fields(pid)
        if f is not None and len(f) > 12:
            out[pid] = (int(f[11]) + int(f[12])) / _TICK  # utime, stime
    return out


def run_seconds(pids: Iterable[int]) -> dict[int, float]:
    """Seconds each process in `pids` spent on a CPU, summed over its threads now
    alive (/proc/PID/task/*/schedstat, in nanoseconds; a thread that ended is not
    counted, so take it over windows in which none ends: an idle gateway)."""
    out: dict[int, float] = {}
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        ns = 0
        for t in tasks:
            try:
                with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                    ns += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
        out[pid] = ns / 1e9
    return out


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds a set of processes used between two `cpu_seconds` samples."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def wakeups(pid: int) -> int:
    """Context switches so far over every thread of `pid` (voluntary and not): each is
    a wake-up of one of them, or a preemption (0 when the process is gone)."""
    n = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/status") as f:
                n += sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
        except (OSError, ValueError, IndexError):
            continue
    return n


def io_counters(pid: int) -> dict[str, int]:
    """/proc/PID/io (rchar, wchar, read_bytes, write_bytes, ...); empty when unreadable."""
    try:
        with open(f"/proc/{pid}/io") as f:
            return {k: int(v) for k, v in (line.split(":") for line in f if ":" in line)}
    except OSError:
        return {}


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (with the pid, its identity)."""
    f = _stat_fields(pid)
    return int(f[19]) if f is not None and len(f) > 19 else None


def alive(pid: int, started: int | None = None) -> bool:
    """True while `pid` runs and is not a zombie (and, if given, started at `started`)."""
    f = _stat_fields(pid)
    if f is None or f[0] == "Z":
        return False
    return started is None or (len(f) > 19 and int(f[19]) == started)
