"""What the processes keep: the rehearsal before the actors' forks (`edgert.proc.rehearsal`),
the C heap's fixed mmap threshold (the bridge's)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import collections, json, os, sys, tempfile
import edgert.proc.zygote  # the supervisor's imports: the rehearsal loads what it runs
from edgert.proc.rehearsal import rehearse

def fds():
    return sorted(int(f) for f in os.listdir("/proc/self/fd"))

before, scratch = fds(), set(os.listdir(tempfile.gettempdir()))
calls = collections.Counter()
def count(frame, event, arg):
    if event == "call":
        calls[frame.f_code.co_qualname] += 1
sys.setprofile(count)
ran = rehearse()
sys.setprofile(None)
left = sorted(set(os.listdir(tempfile.gettempdir())) - scratch)
print(json.dumps({
    "ran": ran,
    "calls": calls,
    "threads": len(os.listdir("/proc/self/task")),
    "fds_before": before,
    "fds_after": fds(),
    "left": [n for n in left if n.startswith("edgert-rehearsal-")],
    "heavy": sorted(m for m in ("asyncio", "nats", "sqlite3") if m in sys.modules),
}))
"""


def test_the_rehearsal_runs_a_drivers_publish_path_and_leaves_nothing_behind(tmp_path) -> None:
    """It runs, more often than 3.11 takes to specialize a function, what a driver runs
    as it publishes (the outbox, its ring, the Context's receive, the frames the bridge
    decodes and acks), then leaves no thread, no descriptor and no scratch directory
    behind: the fork that follows forks one thread and no socket."""
    env = {"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [sys.executable, "-P", "-c", PROBE], capture_output=True, text=True, timeout=60, env=env
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ran"] is True
    calls = out["calls"]
    for fn in (
        "Outbox.publish_one",
        "Outbox.publish_series",
        "Outbox._ack",
        "Context.receive",
        "Context.report",
        "decode_points_after",
        "Every.take",
    ):
        assert calls.get(fn, 0) >= 9, (fn, {k: v for k, v in calls.items() if "." in k})
    assert out["threads"] == 1
    assert out["fds_after"] == out["fds_before"]
    assert out["left"] == []
    assert out["heavy"] == []  # the supervisor's process still loads none of them
    assert list(tmp_path.iterdir()) == []


KILLED = """
import os, signal, sys
import edgert.proc.zygote
from edgert.proc.rehearsal import rehearse

def kill(frame, event, arg):  # the process killed in the middle of the rehearsal
    if event == "call" and frame.f_code.co_qualname == "Context.receive":
        os.kill(os.getpid(), signal.SIGKILL)
sys.setprofile(kill)
rehearse()
"""


def test_a_process_killed_during_the_rehearsal_leaves_no_scratch_file(tmp_path) -> None:
    """The zygote (under `edgert run` the supervisor) rehearses as it starts, and a gateway stopped then (the SIGTERM to its
    process group, or the supervisor killed) must leave nothing in the temporary
    directory: its ring file is gone from the disk once it is open."""
    env = {"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [sys.executable, "-P", "-c", KILLED], capture_output=True, text=True, timeout=60, env=env
    )
    assert r.returncode == -9, r.stderr  # it was killed where the probe meant it to be
    assert list(tmp_path.iterdir()) == []


ACTOR_LOG = """
import logging, sys
import edgert.proc.zygote
from edgert.proc.rehearsal import NAME, rehearse

logging.basicConfig(stream=sys.stdout, format="%(name)s %(message)s")
assert rehearse()
logging.getLogger(f"edgert.actor.{NAME}").warning("a driver of that name")  # after the fork
"""


def test_a_driver_named_as_the_rehearsal_still_logs() -> None:
    """The rehearsal's own lines are silenced, but not those of a real driver of the same
    name, which the processes forked after it log under the same logger."""
    r = subprocess.run(
        [sys.executable, "-P", "-c", ACTOR_LOG], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert "edgert.actor.rehearsal a driver of that name" in r.stdout


HEAP = """
import sys
from edgert.proc.zygote import fixed_mmap_threshold

def heap_kb():
    with open("/proc/self/smaps") as f:
        lines = f.read().split("\\n")
    for i, line in enumerate(lines):
        if line.endswith("[heap]"):
            return int(next(x for x in lines[i:] if x.startswith("Rss:")).split()[1])
    return 0

if sys.argv[1] == "fixed":
    fixed_mmap_threshold()
before = heap_kb()
for _ in range(3):
    block = bytearray(1 << 20)  # 1 MiB, written: its pages are resident
    del block
print(heap_kb() - before)
"""


def test_with_a_fixed_mmap_threshold_a_freed_large_block_leaves_the_heap() -> None:
    """glibc keeps a large block in the heap once one was freed (its threshold rises),
    and that memory stays resident after the block is freed; with the threshold fixed
    (what the bridge sets) each large block is mapped and unmapped on its own."""
    grew = {}
    for mode in ("fixed", "default"):
        r = subprocess.run(
            [sys.executable, "-P", "-c", HEAP, mode], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0, r.stderr
        grew[mode] = int(r.stdout)
    assert grew["fixed"] < 256, grew
    assert grew["default"] >= 768, grew  # what the fixed threshold saves (1 MiB)
