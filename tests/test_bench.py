"""`edgert bench` keeps working: each suite runs small and reports its figures with baselines."""

from __future__ import annotations

import subprocess
import sys

from edgert.bench import core as bench_core
from edgert.bench import rows


def test_core_bench_measures_restart_startup_and_memory() -> None:
    r = bench_core.restart_latency(rounds=3)
    assert 0 < r["edgert_p50_ms"] <= r["edgert_p95_ms"] < 5000
    assert r["bare_fork_p50_ms"] > 0 and r["bare_spawn_p50_ms"] > 0
    s = bench_core.startup(n=3)
    assert s["drivers"] == 3 and 0 < s["edgert_s"] < 30
    assert 0 < s["memory"]["edgert_uss_mb"] < s["memory"]["edgert_rss_mb"]
    table = rows("core", {"restart": r, "startup": s, "memory": s["memory"]})
    assert any(row[0].startswith("restart p50") and row[3] for row in table)


def test_bench_cli_help_and_bad_suite() -> None:
    run = [sys.executable, "-m", "edgert", "bench"]
    h = subprocess.run([*run, "--help"], capture_output=True, text=True)
    assert h.returncode == 0 and "Example" in h.stdout
    bad = subprocess.run([*run, "--only", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "nope" in bad.stderr
