"""`edgert values` and `tail --last`: the latest value of every point, from the gateway,
without waiting for a point to change (a silent register, a GPIO input)."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from edgert.cli import cli
from edgert.cli.tail import format_value
from edgert.testing import running_gateway, status, wait_for

NATS_DOWN = '[nats]\nurl = "nats://127.0.0.1:1"\n'  # nobody listens there: values are local
BODY = (
    NATS_DOWN
    + '[[driver]]\nname = "gen"\ntype = "sim"\n'
    + '[[driver.signal]]\nname = "n"\nshape = "counter"\nrate = 20.0\n'
    # one point at start, the next in ~17 minutes: silent, as a register on "change"
    + '[[driver]]\nname = "quiet"\ntype = "sim"\n'
    + '[[driver.signal]]\nname = "level"\nshape = "counter"\nrate = 0.001\n'
    + '[[driver.signal]]\nname = "temp"\nshape = "counter"\nrate = 0.001\n'
)


def edgert(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgert", *args], capture_output=True, text=True, timeout=timeout
    )


def test_values_show_the_latest_point_of_every_key_also_of_a_silent_node(make_config) -> None:
    cfg = make_config(BODY)
    rdir = str(cfg.runtime_dir)
    with running_gateway(cfg):
        wait_for(lambda: status(cfg)["by_name"]["quiet"]["points_out"] >= 2, 15, "quiet spoke")

        def snapshot() -> dict:  # in-process: polled, so no interpreter start per look
            r = CliRunner().invoke(cli, ["values", "--runtime-dir", rdir, "--json"])
            assert r.exit_code == 0, r.output
            return {(p["node"], p["type"], p["key"]): p for p in json.loads(r.stdout)["points"]}

        got = wait_for(lambda: len(s := snapshot()) == 3 and s, 15, "3 values")
        assert set(got) == {("gen", "n", "0"), ("quiet", "level", "0"), ("quiet", "temp", "0")}
        assert got[("quiet", "level", "0")]["value"] == 0  # its only point so far
        assert got[("quiet", "level", "0")]["age"] >= 0
        first = got[("gen", "n", "0")]["value"]
        later = wait_for(lambda: (v := snapshot()[("gen", "n", "0")]["value"]) > first and v, 10)
        assert later > first  # the latest, not the first

        one = edgert("values", "quiet", "--runtime-dir", rdir)  # piped: a plain table
        assert one.returncode == 0, one.stderr
        lines = one.stdout.splitlines()
        assert lines[0].split()[:5] == ["NODE", "TYPE", "KEY", "VALUE", "AGE"]
        assert [line.split()[:4] for line in lines[1:]] == [
            ["quiet", "level", "0", "0"],
            ["quiet", "temp", "0", "0"],
        ]

        # tail --last: the silent node's values at once, though no new point comes
        r = edgert("tail", "--runtime-dir", rdir, "--node", "quiet", "--last", "--count", "2")
        assert r.returncode == 0, r.stderr
        assert sorted(line.split()[2] for line in r.stdout.splitlines()) == ["level", "temp"]


def test_values_of_a_gateway_without_bridge_say_why(make_config) -> None:
    cfg = make_config('[nats]\nenabled = false\n[[driver]]\nname = "g"\ntype = "sim"\n')
    with running_gateway(cfg):
        wait_for(lambda: status(cfg)["by_name"]["g"]["state"] == "running", 10, "running")
        r = CliRunner().invoke(cli, ["values", "--runtime-dir", str(cfg.runtime_dir)])
    assert r.exit_code == 1
    assert "no bridge answering for values" in r.output and "enabled = false" in r.output


def test_floats_of_32_bit_registers_print_short_and_others_exactly() -> None:
    assert format_value(229.99978637695312) == "229.99979"  # a float32 read as float64
    assert format_value(0.1 + 0.2) == "0.30000000000000004"  # not a float32: exact
    assert format_value(65.0) == "65.0"
    assert format_value(True) == "true" and format_value("on") == '"on"'
    assert format_value(None) == "null" and format_value(12) == "12"
    assert format_value(float("nan")) == "nan"
