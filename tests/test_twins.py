"""Two gateways with the same id on one NATS system: both say so, in status and the log."""

from __future__ import annotations

import json
import socket

from click.testing import CliRunner

from edgert.cli import cli
from edgert.config import GatewayConfig
from edgert.testing import running_gateway, status, wait_for
from edgert.testing.configs import nats_section, sim_driver
from edgert.testing.nats import NatsProcess, Subscriber


def gateway(make_config, gw: str, subdir: str, url: str) -> GatewayConfig:
    body = nats_section(url, encoding="json") + sim_driver(signal="t", shape="sine", rate=1.0)
    return make_config(body, gateway_id=gw, subdir=subdir)


def bridge(cfg) -> dict:
    return status(cfg)["by_name"]["bridge"]


def test_a_second_gateway_with_the_same_id_is_named_by_both(
    nats_server: NatsProcess, make_config
) -> None:
    srv = nats_server
    a, b = (gateway(make_config, "same", n, srv.url) for n in ("a", "b"))
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


def test_gateways_with_different_ids_are_not_twins(nats_server: NatsProcess, make_config) -> None:
    srv = nats_server
    cfgs = [gateway(make_config, f"gw{n}", n, srv.url) for n in ("a", "b")]
    with running_gateway(cfgs[0]), running_gateway(cfgs[1]):
        for cfg in cfgs:
            wait_for(lambda cfg=cfg: bridge(cfg)["stats"].get("nats") == "connected", 20)
        # both have asked (at their session's start) and heard only themselves
        with Subscriber(srv.url, "edgert.*.status") as sub:
            wait_for(lambda: len({m.subject for m in sub.messages}) == 2, 15, "statuses")
        for cfg in cfgs:
            assert bridge(cfg)["stats"]["duplicate_id"] == ""
