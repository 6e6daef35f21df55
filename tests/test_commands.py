"""Commands down: NATS request -> bridge -> the driver that owns the node -> reply.

A command for a writable sim signal is applied and answered ok; anything wrong
(an unknown node, a read-only signal, a malformed payload, a point for another
node, a driver that is not running) gets a clear error reply, and the driver
keeps running.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from edgert.testing import running_gateway, status, wait_for
from edgert.testing.configs import gateway_config
from edgert.testing.nats import NatsProcess, Subscriber, decode, request

GATEWAY = """
[supervisor]
backoff_min = 0.1
backoff_max = 0.5
[nats]
url = "{url}"

[[driver]]
name = "gen"
type = "sim"
[[driver.signal]]
name = "setpoint"
shape = "sine"
rate = 5.0
writable = true
[[driver.signal]]
name = "temp"
shape = "sine"
rate = 5.0

[[driver]]
name = "dead"
type = "edgert.testing:FaultActor"
restart = "temporary"
mode = "crash"
after = 0.0
"""

MSGPACK = {"Content-Type": "application/msgpack"}


@pytest.fixture(scope="module")
def gateway(module_dir: Path) -> Iterator[tuple[NatsProcess, object]]:
    """One gateway for the module (starting one is most of each test's time): every test
    sends its commands to the same driver, and each checks that it was never restarted."""
    with NatsProcess(module_dir / "nats") as srv:
        cfg = gateway_config(module_dir, GATEWAY.format(url=srv.url))
        with running_gateway(cfg):
            wait_for(
                lambda: (
                    (a := status(cfg)["by_name"])["gen"]["state"] == "running"
                    and a["dead"]["state"] == "failed"
                    and a["bridge"]["stats"].get("nats") == "connected"
                ),
                15,
                "gen running, dead failed, bridge on NATS",
            )
            yield srv, cfg


def point(node: str, type_: str, value: object) -> dict:
    return {"node": node, "type": type_, "key": "0", "value": value, "time": 0, "origin": "test"}


def command(srv: NatsProcess, node: str, data: bytes, headers: dict | None = None) -> dict:
    return decode(request(srv.url, f"edgert.gw.cmd.{node}", data, headers or MSGPACK))


def test_command_to_a_writable_point_is_applied_and_answered_ok(gateway) -> None:
    srv, cfg = gateway
    with Subscriber(srv.url, "edgert.gw.p.gen") as sub:
        body = msgpack.packb([point("gen", "setpoint", 42.5)])
        assert command(srv, "gen", body) == {"ok": True}
        written = wait_for(  # other tests of the module write 1.0: not that one
            lambda: [p for p in sub.points("gen") if p["origin"] == "test" and p["value"] != 1.0],
            10,
            "the written point",
        )
        assert written[0]["type"] == "setpoint" and written[0]["value"] == 42.5
        # JSON in, JSON out
        body = json.dumps([point("gen", "setpoint", 7)]).encode()
        reply = request(srv.url, "edgert.gw.cmd.gen", body, {"Content-Type": "application/json"})
        assert reply.headers["Content-Type"] == "application/json"
        assert json.loads(reply.data) == {"ok": True}


@pytest.mark.parametrize(
    ("node", "data", "error"),
    [
        ("nowhere", msgpack.packb([point("nowhere", "x", 1)]), "unknown node 'nowhere'"),
        ("gen", msgpack.packb([point("gen", "temp", 1.0)]), "not writable"),
        ("gen", msgpack.packb([point("gen", "setpoint", "high")]), "takes a number"),
        ("gen", b"\xc1\x00garbage", "malformed command payload"),
        ("gen", msgpack.packb({"not": "a list"}), "malformed command payload"),
        ("gen", msgpack.packb([{"node": "gen"}]), "malformed command payload"),
        ("gen", msgpack.packb([]), "holds no points"),
        ("gen", msgpack.packb([point("other", "setpoint", 1)]), "subject names node 'gen'"),
        (
            "dead",
            msgpack.packb([point("dead", "count", 1)]),
            "driver 'dead' of node 'dead' is not running",
        ),
    ],
    ids=[
        "unknown-node",
        "read-only",
        "bad-value",
        "garbage",
        "not-a-list",
        "bad-point",
        "empty",
        "wrong-node",
        "driver-down",
    ],
)
def test_a_bad_command_gets_a_clear_error_and_the_driver_keeps_running(
    gateway, node: str, data: bytes, error: str
) -> None:
    srv, cfg = gateway
    reply = command(srv, node, data)
    assert reply["ok"] is False
    assert error in reply["error"]
    gen = status(cfg)["by_name"]["gen"]
    assert gen["state"] == "running" and gen["restarts"] == 0
    # and the driver still answers
    assert command(srv, "gen", msgpack.packb([point("gen", "setpoint", 1.0)])) == {"ok": True}


def test_a_driver_that_does_not_answer_gets_a_timeout_error(tmp_path: Path) -> None:
    import asyncio
    from dataclasses import dataclass

    import zmq

    from edgert.bridge.actor import Bridge, BridgeConfig, _Run
    from edgert.config import NatsSection
    from edgert.context import Context

    @dataclass
    class Request:  # what the bridge reads of a NATS message
        subject: str
        data: bytes
        reply: str = "_INBOX.1"
        headers: dict | None = None

    cfg = BridgeConfig(
        "gw", str(tmp_path), str(tmp_path), NatsSection(), {"gen": "gen"}, command_timeout=0.3
    )
    ctx = Context(Bridge(cfg, name="bridge"), name="bridge", config=cfg)
    run = _Run(ctx)
    zctx = zmq.Context(1)
    run.router = zctx.socket(zmq.ROUTER)
    silent = zctx.socket(zmq.DEALER)
    try:
        run.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        run.router.bind(f"ipc://{tmp_path}/bus.sock")
        silent.setsockopt(zmq.ROUTING_ID, b"gen")
        silent.connect(f"ipc://{tmp_path}/bus.sock")
        silent.send(b"hello")  # the ROUTER knows the peer once it has heard from it
        assert run.router.poll(2000)
        run.router.recv_multipart()
        body = msgpack.packb([point("gen", "setpoint", 1.0)])
        error = asyncio.run(run.commands.apply(Request("edgert.gw.cmd.gen", body)))
        assert error == "driver 'gen' did not answer within 0.3s"
        assert silent.poll(1000)  # the command did reach the driver
    finally:
        silent.close(0)
        run.router.close(0)
        zctx.term()
        ctx._close()


def test_edgert_cmd_writes_and_reports_refusals(gateway) -> None:
    _, cfg = gateway
    run = [sys.executable, "-m", "edgert", "cmd", "--config", cfg.path]
    ok = subprocess.run([*run, "gen", "setpoint=42.5"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and ok.stdout.strip() == "ok", ok.stderr
    refused = subprocess.run([*run, "gen", "temp=1"], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and "not writable" in refused.stderr, refused.stderr
    unknown = subprocess.run([*run, "nobody", "x=1"], capture_output=True, text=True, timeout=30)
    assert unknown.returncode == 1 and "nobody" in unknown.stderr, unknown.stderr
    bad = subprocess.run([*run, "gen", "no equals"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "TYPE=VALUE" in bad.stderr
    assert status(cfg)["by_name"]["gen"]["state"] == "running"
