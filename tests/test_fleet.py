"""The fleet over NATS: each gateway a micro service, found and asked by `edgert fleet`.

Two real gateways on one real nats-server: `$SRV.PING|INFO|STATS.edgert` find
both with their identity and figures, `svc.status` gives the status JSON,
`svc.reload` reloads through the supervisor (kept drivers keep their pids, a
broken file is refused), `edgert fleet ls|status` print them, and a gateway
that stopped is absent from `ls` rather than an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgert import __version__
from edgert.config import GatewayConfig
from edgert.testing import running_gateway, status, wait_for
from edgert.testing.configs import nats_section, sim_driver, supervisor
from edgert.testing.nats import NatsProcess, request

EXTRA = sim_driver("gen2", "level", "sine", rate=5.0)


def gateway(make_config, gw: str, url: str) -> GatewayConfig:
    body = supervisor() + nats_section(url) + sim_driver("gen", "temp", "sine", rate=5.0)
    return make_config(body, gateway_id=gw, subdir=gw)


def up(cfg: GatewayConfig, *names: str) -> bool:
    a = status(cfg)["by_name"]
    return all(a.get(n, {}).get("state") == "running" for n in names) and (
        a["bridge"]["stats"].get("nats") == "connected"
    )


@pytest.fixture
def fleet(
    nats_server: NatsProcess, make_config
) -> Iterator[tuple[NatsProcess, list[GatewayConfig]]]:
    srv = nats_server
    cfgs = [gateway(make_config, gw, srv.url) for gw in ("gw1", "gw2")]
    with running_gateway(cfgs[0]), running_gateway(cfgs[1]):
        for cfg in cfgs:
            wait_for(lambda cfg=cfg: up(cfg, "gen"), 20, f"{cfg.gateway.id} up")
        yield srv, cfgs


def gather(url: str, subject: str, timeout: float = 1.0, quiet: float = 0.5) -> list[dict]:
    """Every answer to one request on `subject`: the first within `timeout`, each next
    within `quiet` of the one before (as `edgert fleet ls` collects them)."""

    async def ask() -> list[dict]:
        import nats

        nc = await nats.connect(url)
        try:
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            await nc.publish(subject, b"", reply=inbox)
            out = []
            with contextlib.suppress(Exception):
                while True:
                    wait = quiet if out else timeout
                    out.append(json.loads((await sub.next_msg(timeout=wait)).data))
            return out
        finally:
            await nc.close()

    return asyncio.run(ask())


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgert", *args], capture_output=True, text=True, timeout=timeout
    )


def test_every_gateway_answers_the_micro_protocol(fleet) -> None:
    srv, cfgs = fleet
    for verb in ("PING", "INFO", "STATS"):
        kind = f"io.nats.micro.v1.{verb.lower()}_response"
        answers = wait_for(
            lambda verb=verb: (a := gather(srv.url, f"$SRV.{verb}.edgert")) and len(a) == 2 and a,
            10,
            f"two answers to $SRV.{verb}.edgert",
        )
        assert sorted(a["metadata"]["gateway"] for a in answers) == ["gw1", "gw2"]
        for a in answers:
            assert (a["type"], a["name"], a["version"]) == (kind, "edgert", __version__)
    info = {a["metadata"]["gateway"]: a for a in gather(srv.url, "$SRV.INFO.edgert")}
    assert [e["subject"] for e in info["gw1"]["endpoints"]] == [
        "edgert.gw1.svc.status",
        "edgert.gw1.svc.reload",
    ]
    # the service id narrows to one gateway, as `nats micro info edgert <id>` does
    one = gather(srv.url, f"$SRV.PING.edgert.{info['gw2']['id']}")
    assert [a["metadata"]["gateway"] for a in one] == ["gw2"]

    # svc.status: the status JSON, counted in STATS with its figures in `data`
    reply = json.loads(request(srv.url, "edgert.gw1.svc.status", b"").data)
    assert reply["gateway"] == "gw1"
    assert {a["name"] for a in reply["actors"]} == {"bridge", "gen"}
    gen = next(a for a in reply["actors"] if a["name"] == "gen")
    assert gen["pid"] == status(cfgs[0])["by_name"]["gen"]["pid"]
    assert "stats" in gen
    stats = {a["metadata"]["gateway"]: a for a in gather(srv.url, "$SRV.STATS.edgert")}
    ep = {e["name"]: e for e in stats["gw1"]["endpoints"]}
    assert ep["status"]["num_requests"] == 1 and ep["reload"]["num_requests"] == 0
    assert ep["status"]["data"]["actors"] == {"running": 2}
    assert stats["gw2"]["endpoints"][0]["num_requests"] == 0


def test_reload_over_nats_keeps_unchanged_drivers_and_refuses_a_broken_file(fleet) -> None:
    srv, cfgs = fleet
    cfg = cfgs[0]
    gen_pid = status(cfg)["by_name"]["gen"]["pid"]
    Path(cfg.path).write_text(Path(cfg.path).read_text() + EXTRA)
    reply = json.loads(request(srv.url, "edgert.gw1.svc.reload", b"", timeout=30).data)
    assert reply["ok"] is True and reply["error"] is None
    # gen2's node is a new route: the bridge restarts with it, and still answers
    assert sorted(reply["changed"]) == ["bridge", "gen2"] and reply["kept"] == ["gen"]
    wait_for(lambda: up(cfg, "gen", "gen2"), 20, "gen2 running")
    assert status(cfg)["by_name"]["gen"]["pid"] == gen_pid
    assert "gen2" not in status(cfgs[1])["by_name"]  # only gw1 was asked
    wait_for(  # the new bridge's service
        lambda: request(srv.url, "edgert.gw1.svc.status", b"", timeout=1).data, 20, "svc up"
    )

    pids = {n: a["pid"] for n, a in status(cfg)["by_name"].items()}
    Path(cfg.path).write_text(Path(cfg.path).read_text() + "\n[[driver]]\nname = 3\n")
    reply = json.loads(request(srv.url, "edgert.gw1.svc.reload", b"", timeout=30).data)
    assert reply["ok"] is False and "refused" in reply["error"]
    assert (reply["changed"], reply["kept"]) == ([], [])
    after = status(cfg)["by_name"]
    assert {n: a["pid"] for n, a in after.items()} == pids  # nothing restarted
    assert after["gen2"]["state"] == "running"
    stats = {a["metadata"]["gateway"]: a for a in gather(srv.url, "$SRV.STATS.edgert")}
    ep = {e["name"]: e for e in stats["gw1"]["endpoints"]}
    # counted by the bridge that runs now (the first reload restarted it)
    assert (ep["reload"]["num_requests"], ep["reload"]["num_errors"]) == (1, 1)
    assert ep["status"]["num_requests"] >= 1
    assert "refused" in ep["reload"]["last_error"]


def test_fleet_ls_and_status_from_the_command_line(fleet) -> None:
    srv, cfgs = fleet
    out = cli("fleet", "ls", "--nats", srv.url, "--json")
    assert out.returncode == 0, out.stderr
    lines = json.loads(out.stdout)
    assert [g["gateway"] for g in lines] == ["gw1", "gw2"]
    for g in lines:
        assert g["version"] == __version__
        assert g["actors"] == {"running": 2}
        assert g["dropped"] == 0 and g["uptime"] > 0
    table = cli("fleet", "ls", "--config", cfgs[0].path)  # NATS from the config's [nats]
    assert table.returncode == 0, table.stderr
    rows = table.stdout.splitlines()
    assert rows[0].split()[:3] == ["GATEWAY", "VERSION", "UPTIME"]
    assert [r.split()[0] for r in rows[1:]] == ["gw1", "gw2"]

    st = cli("fleet", "status", "gw2", "--nats", srv.url)
    assert st.returncode == 0, st.stderr
    assert st.stdout.splitlines()[0] == "gateway gw2"
    assert {r.split()[0] for r in st.stdout.splitlines()[2:]} == {"bridge", "gen"}

    bad = cli("fleet", "status", "nosuch", "--nats", srv.url, "--timeout", "0.5")
    assert bad.returncode == 1 and "'nosuch' did not answer" in bad.stderr


def test_a_stopped_gateway_is_absent_from_ls_not_an_error(short_dir: Path, make_config) -> None:
    with NatsProcess(short_dir / "nats") as srv:
        cfgs = [gateway(make_config, gw, srv.url) for gw in ("gw1", "gw2")]
        with running_gateway(cfgs[0]):
            wait_for(lambda: up(cfgs[0], "gen"), 20, "gw1 up")
            with running_gateway(cfgs[1]):
                wait_for(lambda: up(cfgs[1], "gen"), 20, "gw2 up")
                out = cli("fleet", "ls", "--nats", srv.url, "--json")
                assert [g["gateway"] for g in json.loads(out.stdout)] == ["gw1", "gw2"]
            out = cli("fleet", "ls", "--nats", srv.url, "--json")
            assert out.returncode == 0, out.stderr
            assert [g["gateway"] for g in json.loads(out.stdout)] == ["gw1"]
    down = cli("fleet", "ls", "--nats", srv.url)
    assert down.returncode == 1 and "cannot reach NATS" in down.stderr


def test_the_service_appears_when_nats_comes_up_and_again_after_a_restart(
    short_dir: Path, make_config
) -> None:
    srv = NatsProcess(short_dir / "nats")
    cfg = gateway(make_config, "gw1", srv.url)
    try:
        with running_gateway(cfg):
            wait_for(lambda: status(cfg)["by_name"]["gen"]["state"] == "running", 20, "gen up")
            srv.start()  # NATS comes up after the gateway
            first = wait_for(
                lambda: gather(srv.url, "$SRV.PING.edgert", 0.5), 20, "the service answers"
            )
            assert [a["metadata"]["gateway"] for a in first] == ["gw1"]
            srv.stop()
            srv.start()  # and comes back after an outage
            again = wait_for(
                lambda: gather(srv.url, "$SRV.PING.edgert", 0.5), 20, "the service answers again"
            )
            assert [a["id"] for a in again] == [first[0]["id"]]  # the same service, reconnected
            reply = json.loads(request(srv.url, "edgert.gw1.svc.status", b"").data)
            assert reply["gateway"] == "gw1"
    finally:
        srv.stop()
