"""`edgert bench` keeps working: each suite runs small and reports its figures with baselines."""

from __future__ import annotations

from click.testing import CliRunner

from edgert.bench import bench, rows
from edgert.bench import core as bench_core


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
    h = CliRunner().invoke(bench, ["--help"])
    assert h.exit_code == 0 and "Example" in h.output
    bad = CliRunner().invoke(bench, ["--only", "nope"])
    assert bad.exit_code == 2 and "nope" in bad.output
