"""Two gateways with the same id on one NATS system: both say so, in status and the log."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from click.testing import CliRunner

from edgert.cli import cli
from edgert.config import load
from edgert.testing import running_gateway, status, wait_for
from edgert.testing.nats import NatsProcess, Subscriber

GATEWAY = """
[gateway]
id = "same"
runtime_dir = "{dir}/run"
data_dir = "{dir}/data"
[nats]
url = "{url}"
encoding = "json"
[[driver]]
name = "gen"
type = "sim"
[[driver.signal]]
name = "t"
"""


def bridge(cfg) -> dict:
    return status(cfg)["by_name"]["bridge"]


def test_a_second_gateway_with_the_same_id_is_named_by_both(short_dir: Path) -> None:
    with NatsProcess(short_dir / "nats") as srv:
        cfgs = []
        for n in ("a", "b"):
            (short_dir / n).mkdir()
            (short_dir / n / "gw.toml").write_text(GATEWAY.format(dir=short_dir / n, url=srv.url))
            cfgs.append(load(short_dir / n / "gw.toml"))
        a, b = cfgs
        with running_gateway(a):
            wait_for(lambda: bridge(a)["stats"].get("nats") == "connected", 20, "a connected")
            # alone: its own question, heard back, is not a twin
            wait_for(lambda: "duplicate_id" in bridge(a)["stats"], 10, "a checked")
            with Subscriber(srv.url, "edgert.same.status") as sub, running_gateway(b):
                wait_for(lambda: bridge(b)["stats"].get("nats") == "connected", 20, "b up")
                pid_a, pid_b = bridge(a)["pid"], bridge(b)["pid"]
                got_a = wait_for(lambda: bridge(a)["stats"].get("duplicate_id"), 10, "a sees b")
                got_b = wait_for(lambda: bridge(b)["stats"].get("duplicate_id"), 10, "b sees a")
                assert f"pid {pid_b}" in got_a and f"pid {pid_a}" in got_b

                def flagged() -> bool:
                    msgs = [json.loads(m.data) for m in sub.messages]
                    return any(m.get("duplicate_id") for m in msgs)

                wait_for(flagged, 15, "the status subject says so")
                r = CliRunner().invoke(cli, ["status", "--runtime-dir", str(a.runtime_dir)])
                assert r.exit_code == 0, r.output
                assert f"DUPLICATE ID: also host {socket.gethostname()} pid {pid_b}" in r.output


def test_gateways_with_different_ids_are_not_twins(short_dir: Path) -> None:
    with NatsProcess(short_dir / "nats") as srv:
        cfgs = []
        for n in ("a", "b"):
            (short_dir / n).mkdir()
            text = GATEWAY.format(dir=short_dir / n, url=srv.url).replace('"same"', f'"gw{n}"')
            (short_dir / n / "gw.toml").write_text(text)
            cfgs.append(load(short_dir / n / "gw.toml"))
        with running_gateway(cfgs[0]), running_gateway(cfgs[1]):
            for cfg in cfgs:
                wait_for(lambda cfg=cfg: bridge(cfg)["stats"].get("nats") == "connected", 20)
            # both have asked (at their session's start) and heard only themselves
            with Subscriber(srv.url, "edgert.*.status") as sub:
                wait_for(lambda: len({m.subject for m in sub.messages}) == 2, 15, "statuses")
            for cfg in cfgs:
                assert bridge(cfg)["stats"]["duplicate_id"] == ""
