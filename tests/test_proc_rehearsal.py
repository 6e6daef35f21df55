"""The rehearsal the supervisor runs before it forks its zygote (`edgert.proc.rehearsal`)."""

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
}))
"""


def test_the_rehearsal_runs_a_drivers_publish_path_and_leaves_nothing_behind(tmp_path) -> None:
    """It runs, more often than 3.11 takes to specialize a function, what a driver runs
    as it publishes (the outbox, its ring, the Context's receive, the frames the bridge
    decodes and acks), then leaves no thread (ZeroMQ's are joined), no descriptor and
    no scratch directory behind: the fork that follows forks one thread and no socket."""
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
    ):
        assert calls.get(fn, 0) >= 9, (fn, {k: v for k, v in calls.items() if "." in k})
    assert out["threads"] == 1
    assert out["fds_after"] == out["fds_before"]
    assert out["left"] == []
    assert list(tmp_path.iterdir()) == []
