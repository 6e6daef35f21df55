"""The fleet benchmark, small: a few gateways on a 3-node cluster, one node killed.

It lists every gateway (by one request and by `edgert fleet ls`), measures
their CPU and memory, and after SIGKILL of a cluster node finds every gateway
publishing and answering again with no counter value missing from any stream
and none stored twice; nothing it started is left running. `tally`, which
counts the values a stream holds, is tested on its own.
"""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from edgert.bench import OPT_IN, bench, fleet, rows
from edgert.bench.fleet import tally
from edgert.testing import descendants, pid_alive


@pytest.mark.slow
def test_fleet_bench_lists_measures_and_loses_nothing_when_a_node_dies() -> None:
    before = descendants(os.getpid())
    r = fleet.fleet(gateways=3, window=2.0, after_kill=1.0)
    assert r["ls"]["answered"] == 3 and r["ls"]["cli_listed"] == 3, r["ls"]
    assert r["idle"]["processes"] >= 3 * 4 and r["idle"]["pss_mb_per_gateway"] > 0, r["idle"]
    kill = r["node_kill"]
    assert kill["values_checked"] > 0, kill
    assert kill["all_back_s"] > 0 and kill["services_back_s"] >= kill["all_back_s"] > 0, kill
    left = {p for p in descendants(os.getpid()) - before if pid_alive(p)}
    assert not left, f"processes left running: {sorted(left)}"
    assert kill["lost"] == 0 and kill["duplicates"] == 0 and kill["ids_twice"] == 0, kill
    table = rows("fleet", r)
    assert [x.verdict for x in table if x.target] == ["pass"] * len([x for x in table if x.target])


def test_the_fleet_suite_is_named_on_the_command_line_and_opt_in() -> None:
    h = CliRunner().invoke(bench, ["--help"])
    assert h.exit_code == 0 and "fleet" in h.output and "--gateways" in h.output
    bad = CliRunner().invoke(bench, ["nope"])
    assert bad.exit_code == 2 and "nope" in bad.output
    assert "fleet" in OPT_IN and fleet.GATEWAYS == 50


def test_tally_counts_each_counter_on_its_own() -> None:
    # two nodes of one gateway both count from 0: the same values on two subjects
    # are two counters, not duplicates
    t = tally(
        [
            ("edgert.gw.p.gen", "e1:1:gen", [0, 1, 2]),
            ("edgert.gw.p.extra", "e2:1:extra", [0, 1]),
            ("edgert.gw.p.gen", "e1:2:gen", [3, 4]),
            ("edgert.gw.p.extra", "e2:2:extra", [2]),
        ]
    )
    assert (t["values"], t["lost"], t["duplicates"], t["ids_twice"]) == (8, 0, 0, 0), t
    assert t["duplicated"] == []


def test_tally_finds_gaps_repeats_and_ids_stored_twice() -> None:
    t = tally(
        [
            ("edgert.gw.p.gen", "e1:1:gen", [0, 1, 2]),
            ("edgert.gw.p.gen", "e1:2-3:gen", [3, 4, 5]),
            ("edgert.gw.p.gen", "e1:3:gen", [5]),  # 5 again, under another id
            ("edgert.gw.p.gen", "e1:1:gen", [0, 1, 2]),  # an id stored twice
            ("edgert.gw.p.gen", "e1:5:gen", [8]),  # 6 and 7 missing
        ]
    )
    assert (t["values"], t["lost"], t["duplicates"], t["ids_twice"]) == (11, 2, 4, 1), t
    five = next(d for d in t["duplicated"] if d["value"] == 5)
    assert five["copies"] == [(1, "e1:2-3:gen"), (2, "e1:3:gen")]
