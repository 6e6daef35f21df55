"""`edgert bench` keeps working: each suite runs small, reports its figures beside baselines
and targets, and leaves no process behind. (Speed is the benchmark's business, not a test's.)

The suites that run at full speed (throughput, overload) measure for well under a second:
they take both cores while they run, and slow every test running beside them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from multiprocessing import resource_tracker
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgert.bench import bench, efficiency, outage, overload, points, rows
from edgert.bench import core as bench_core
from edgert.bench.table import Row, _line
from edgert.testing import descendants, pid_alive


@pytest.fixture
def no_leftovers() -> Iterator[None]:
    """Fails the test if it leaves a child process of the test process running."""
    resource_tracker.ensure_running()  # shared by every spawn of this process, and long-lived
    before = descendants(os.getpid())
    yield
    left = {p for p in descendants(os.getpid()) - before if pid_alive(p)}
    assert not left, f"processes left running: {sorted(left)}"


def _gone(pids: list[int]) -> None:
    assert pids, "the suite reports the processes it started"
    assert not [p for p in pids if pid_alive(p)]


def _judged(suite: str, result: dict) -> list:
    table = rows(suite, result)
    assert table
    for line in table:
        assert line.verdict in ("pass", "FAIL", "n/a", "")
        assert bool(line.target) == bool(line.verdict)
    return table


def test_core_bench_measures_restart_startup_and_memory() -> None:
    r = bench_core.restart_latency(rounds=3)
    assert 0 < r["edgert_p50_ms"] <= r["edgert_p95_ms"] < 5000
    assert r["bare_fork_p50_ms"] > 0 and r["bare_spawn_p50_ms"] > 0
    s = bench_core.startup(n=3)
    assert s["drivers"] == 3 and 0 < s["edgert_s"] < 30
    assert 0 < s["memory"]["edgert_uss_mb"] < s["memory"]["edgert_rss_mb"]
    table = _judged("core", {"restart": r, "startup": s, "memory": s["memory"]})
    assert any(x.metric.startswith("restart p50") and x.ratio for x in table)


def test_points_bench_measures_throughput_and_latency_beside_raw_paths(no_leftovers) -> None:
    t = points.throughput(seconds=0.5, warmup=0.25, prepacked=False, rounds=1)
    assert t["edgert_points_s"] > 0 and t["baseline_zmq_points_s"] > 0
    assert len(t["edgert_points_s_by_round"]) == len(t["baseline_zmq_points_s_by_round"]) == 1
    lat = points.latency(rate=500.0, seconds=0.5, warmup=0.25)
    assert lat["edgert_samples"] > 0 and lat["baseline_samples"] > 0
    assert lat["edgert_p50_ms"] <= lat["edgert_p99_ms"]
    above = lat["edgert_p99_ms"] - lat["baseline_p99_ms"]
    assert lat["p99_above_raw_ms"] == pytest.approx(above, rel=0.01, abs=0.01)  # rounded
    table = _judged("points", {"throughput": t, "latency": lat})
    assert {x.target for x in table} >= {"ratio >= 0.7", "< baseline + 1 ms"}


def test_efficiency_bench_compares_whole_gateway_cpu_with_raw_python(no_leftovers) -> None:
    r = efficiency.efficiency(loads=((2, 200.0),), seconds=1.0, warmup=0.5, ring_off=((2, 200.0),))
    run = r["2x200"]
    mine, raw, plain = run["edgert"], run["raw"], run["edgert_no_ring"]
    assert run["offered_points_s"] == 400
    for side in (mine, raw, plain):
        assert side["points"] > 0 and side["cpu_pct"] > 0 and side["samples"] > 0
        assert side["p50_ms"] <= side["p99_ms"]
        _gone(side["pids"])
    assert {"bridge", "gen0", "gen1", "supervisor"} <= set(mine["cpu_by_process"])
    assert mine["dropped_at_source"] == 0
    # edgert and raw took turns twice; each side's figures pool its two turns
    assert len(mine["p99_by_round_ms"]) == len(raw["p99_by_round_ms"]) == 2
    assert len(set(mine["pids"])) >= 2 * 3  # two gateways' bridge and drivers at least
    assert run["cpu_ratio"] == pytest.approx(mine["cpu_pct"] / raw["cpu_pct"], rel=0.01)
    table = _judged("efficiency", r)
    assert [x.metric for x in table][:2] == ["2x200: delivered", "2x200: spool writes, NATS up"]
    # the same load without the outbox's ring file: the difference is the ring's cost
    assert {"gen0", "gen1"} <= set(plain["cpu_by_process"])
    assert run["ring_us_per_point"] == pytest.approx(
        run["ring_driver_us_per_point"] - run["no_ring_driver_us_per_point"],
        abs=1.0,  # rounded
    )
    assert "2x200: the ring's cost per point" in {x.metric for x in table}


def test_overload_bench_reports_each_driver_count_and_the_raw_forwarder(no_leftovers) -> None:
    r = overload.overload(counts=(1, 2), seconds=0.75, warmup=0.25)
    assert set(r["drivers"]) == {"1", "2"}
    for run in r["drivers"].values():
        assert run["points"] > 0 and run["bridge"]["points_per_cpu_s"] > 0
        assert run["spool_share_of"] in ("batches", "points", None)  # None: nothing came in
        assert run["dropped_at_source_s"] >= 0
        _gone(run["pids"])
    assert r["drivers"]["1"]["vs_first"] == 1.0
    assert r["raw_forwarder"]["points_per_cpu_s"] > 0
    _gone(r["raw_forwarder"]["pids"])
    table = _judged("overload", r)
    assert len(table) == 8


def test_outage_bench_counts_every_point_through_a_nats_restart(no_leftovers) -> None:
    r = outage.outage(down=3.0, drivers=2, rate=400.0, warmup=0.5)
    assert r["spooling_points"] > 0 and r["payload_bytes_per_point"] > 0, r
    assert r["first_point_after_s"] is not None and r["first_point_after_s"] >= 0, r
    assert r["drain_complete"] and r["drain_points"] > 0, r
    assert r["published"] > r["spooling_points"], r
    assert isinstance(r["lost"], int) and isinstance(r["duplicates"], int)
    _gone(r["pids"])
    table = _judged("outage", r)
    assert table[-2].metric == "points lost" and table[-2].target == "= 0 points"


def test_table_judges_each_kind_of_target() -> None:
    res = {"a": 3.0, "b": 1.0, "z": 0}
    judge = lambda target, base="b": _line(Row("m", "a", base, "ms", "x", target), res)  # noqa: E731
    assert judge("ratio <= 2").verdict == "FAIL" and judge("ratio >= 2").verdict == "pass"
    assert judge("over < 1").verdict == "FAIL" and judge("over < 2.5").verdict == "pass"
    assert judge("< 10").verdict == "pass" and judge("= 0").verdict == "FAIL"
    assert judge("< 10").target == "< 10 ms"
    assert _line(Row("m", "z", target="= 0"), res).verdict == "pass"
    missing = _line(Row("m", "nope", "b", target="ratio <= 2"), res)
    assert missing.edgert == "n/a" and missing.verdict == "n/a" and missing.ratio == ""


def test_bench_cli_help_and_bad_suite() -> None:
    h = CliRunner().invoke(bench, ["--help"])
    assert h.exit_code == 0 and "Example" in h.output
    assert "--suite" in h.output and "--outage-seconds" in h.output
    bad = CliRunner().invoke(bench, ["--suite", "nope"])
    assert bad.exit_code == 2 and "nope" in bad.output


def test_footprint_measures_memory_cpu_and_start_of_a_gateway(no_leftovers) -> None:
    from edgert.bench import footprint
    from edgert.bench.gateway import GatewayProcess
    from edgert.bench.workdir import workdir

    with workdir() as (d, srv):  # the managed gateway: its fleet actor is measured too
        r = footprint.measure(GatewayProcess(footprint._managed(d, srv.url), d), 0.2, 1.0)
    assert r["cold_start_s"] > 0 and r["idle_cpu_pct"] >= 0 and r["idle_writes_kb"] >= 0
    assert {"supervisor", "bridge", "fleet", "gen"} <= set(r["pss_by_process_mb"])
    assert r["processes"] >= 4  # supervisor (the zygote too), bridge, fleet, the driver
    assert r["pss_mb"] == pytest.approx(sum(r["pss_by_process_mb"].values()), abs=0.5)
    priv = r["private_by_process_mb"]
    assert {"supervisor", "bridge", "fleet", "gen"} <= set(priv) and "nats-server" not in priv
    for role, p in priv.items():  # USS, split by kind of mapping, is within the PSS
        assert 0 < p["uss"] <= r["pss_by_process_mb"][role] + 0.1, role
        parts = p["heap"] + p["anon"] + p["stack"] + p["libraries"] + p["files"]
        assert parts == pytest.approx(p["uss"], abs=0.05)
    assert priv["gen"]["anon"] > 0 and priv["gen"]["libraries"] > 0  # arenas, libpython
    assert 0 < r["pss_file_mb"] < r["pss_mb"]
    wakes = r["idle_wakeups_per_s_by_process"]
    assert wakes["gen"] > 0 and wakes["bridge"] > 0  # each polls or forwards once a second
    assert r["idle_wakeups_per_s"] == pytest.approx(sum(wakes.values()), abs=0.5)
    disk = footprint.installed_size()
    assert {"edgert", "pyzmq", "msgpack", "rich"} <= set(disk["by_dist_mb"])
    table = footprint.format_table({"managed": r, "disk": disk | {"nats_server_mb": 1.0}})
    assert table.splitlines()[1].split()[:2] == ["managed", str(r["processes"])]
    assert f"fleet {r['pss_by_process_mb']['fleet']}" in table
    assert "managed idle wake-ups/s by process: " in table
    assert f"gen {priv['gen']['uss']:.1f} (" in table


def test_the_memory_suites_measure_with_edgerts_bytecode_caches_written() -> None:
    """A module without its cache (a clone run with PYTHONDONTWRITEBYTECODE) gets one, as
    a first import would write it; with all present nothing is written."""
    import importlib.util

    from edgert.bench import bytecode

    source = bytecode.__file__
    cache = Path(importlib.util.cache_from_source(source))
    cache.unlink(missing_ok=True)
    said = bytecode.ensure()
    assert said.startswith("written for ") and cache.exists(), said
    assert cache.stat().st_mtime >= Path(source).stat().st_mtime
    assert bytecode.ensure().startswith("present for all ")
