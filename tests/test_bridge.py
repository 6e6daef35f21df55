"""The point path, end to end: sim driver -> bus -> spool -> bridge -> a real nats-server.

Each test runs a real gateway (actors in their own processes) against a real
nats-server on a free port, and waits for conditions with deadlines. The
promise under test is docs/design.md section 6, "No loss": every counter value a
driver published arrives, in order per node, through a NATS outage, bridge
crashes and a gateway restart; what the spool cap drops is counted and reported.
"""

from __future__ import annotations

import json
import os
import signal
import ssl

import pytest
from click.testing import CliRunner

from edgert.bus.outbox import WINDOW
from edgert.cli import cli
from edgert.testing import running_gateway, status, wait_for
from edgert.testing.nats import (
    Message,
    NatsProcess,
    Subscriber,
    decode,
    make_certificates,
    stream_messages,
)

FAST = """
[supervisor]
backoff_min = 0.1
backoff_max = 0.5
intensity = 50
period = 30
shutdown_timeout = 5
"""


def nats_section(url: str, **keys: object) -> str:
    lines = ["[nats]", f'url = "{url}"']
    for k, v in keys.items():
        lines.append(
            f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}".replace("'", '"')
        )
    return "\n".join(lines) + "\n"


def counter(name: str = "gen", rate: float = 100.0) -> str:
    return f"""
[[driver]]
name = "{name}"
type = "sim"
[[driver.signal]]
name = "n"
shape = "counter"
rate = {rate}
"""


def values(points: list[dict], node: str = "gen") -> list[int]:
    return [p["value"] for p in points if p["node"] == node and p["type"] == "n"]


def stream_values(srv: NatsProcess, node: str = "gen") -> list[int]:
    return values(
        [p for m in stream_messages(srv.url, "EDGERT_gw") if ".p." in m.subject for p in decode(m)],
        node,
    )


def bridge(cfg) -> dict:
    return wait_for(lambda: status(cfg), 10, "the gateway's status")["by_name"]["bridge"]


@pytest.mark.parametrize(("encoding", "jetstream"), [("msgpack", False), ("json", True)])
def test_counter_points_arrive_in_order_with_subject_and_headers(
    make_config, nats_server, encoding, jetstream
) -> None:
    cfg = make_config(
        FAST + nats_section(nats_server.url, encoding=encoding, jetstream=jetstream) + counter()
    )
    with Subscriber(nats_server.url, "edgert.gw.p.>") as sub, running_gateway(cfg):
        wait_for(lambda: len(sub.points()) >= 150, 15, "150 points on NATS")
    msg: Message = sub.messages[0]
    assert msg.subject == "edgert.gw.p.gen"
    assert msg.headers["Content-Type"] == f"application/{encoding}"
    ids = [m.headers["Nats-Msg-Id"] for m in sub.messages]
    assert len(set(ids)) == len(ids)  # unique per batch
    pts = sub.points()
    assert values(pts) == list(range(len(pts)))  # every value, in order, once
    p = pts[0]
    assert set(p) == {"node", "type", "key", "value", "time", "origin"}
    assert (p["node"], p["type"], p["key"], p["origin"]) == ("gen", "n", "0", "")
    assert isinstance(p["time"], int) and p["time"] > 1_600_000_000 * 10**9
    if jetstream:
        assert stream_values(nats_server)[: len(pts)] == values(pts)


def test_a_full_speed_sim_driver_waits_for_credit_instead_of_dropping(
    make_config, nats_server
) -> None:
    cfg = make_config(FAST + nats_section(nats_server.url) + counter(rate=1_000_000))
    with Subscriber(nats_server.url, "edgert.gw.p.>") as sub, running_gateway(cfg):
        gen = wait_for(
            lambda: (
                (g := status(cfg)["by_name"]["gen"])["stats"].get("skipped", 0) > 0
                and g["stats"].get("points_out", 0) >= 20_000
                and g
            ),
            30,
            "the driver at full speed, passing over slots",
        )
        assert gen["stats"]["dropped"] == 0  # it made no point it could not send
        assert gen["stats"]["buffered"] <= WINDOW + 1_000  # the window and one batch ahead
        # The first 5,000 are enough to see a gap: with msgpack's pure-Python fallback
        # (the lower-bounds run) the bridge forwards only a few thousand points a second.
        first = wait_for(
            lambda: p if len(p := sub.points()) >= 5_000 else None, 60, "points on NATS"
        )
    got = values(first)
    assert got == list(range(len(got)))  # the counter skips no value, in order


def test_nats_outage_loses_nothing_and_jetstream_keeps_no_duplicate(
    make_config, nats_server
) -> None:
    cfg = make_config(FAST + nats_section(nats_server.url, jetstream=True) + counter(rate=200.0))
    with running_gateway(cfg):
        wait_for(lambda: bridge(cfg)["points_out"] >= 100, 15, "points flowing")
        nats_server.stop()
        buffered = wait_for(
            lambda: bridge(cfg)["buffered"] >= 600, 15, "points spooled in the outage"
        )
        assert "down" in bridge(cfg)["stats"]["nats"]
        nats_server.start()
        wait_for(lambda: bridge(cfg)["stats"]["nats"] == "connected", 15, "bridge back on NATS")
        wait_for(lambda: bridge(cfg)["buffered"] < 50, 15, "spool drained")
        assert buffered
    got = stream_values(nats_server)
    assert got == list(range(len(got)))  # none lost, none twice, in order
    assert len(got) >= 500


def test_bridge_killed_mid_stream_loses_nothing(make_config, nats_server) -> None:
    cfg = make_config(FAST + nats_section(nats_server.url, jetstream=True) + counter(rate=200.0))
    with running_gateway(cfg):
        for i in range(3):
            before = bridge(cfg)["points_out"]
            b = wait_for(
                lambda before=before: (
                    (b := bridge(cfg))["state"] == "running"
                    and b["points_out"] >= before + 50
                    and b["stats"].get("fast_batches", 0) > 0  # killed mid fast path
                    and b
                ),
                15,
                f"bridge running and publishing (round {i})",
            )
            os.kill(b["pid"], signal.SIGKILL)
            wait_for(lambda b=b: bridge(cfg)["pid"] not in (None, b["pid"]), 15, "bridge restarted")
        published = status(cfg)["by_name"]["gen"]["points_out"]
        wait_for(
            lambda: len(stream_values(nats_server)) >= published, 15, "every point in the stream"
        )
        assert bridge(cfg)["restarts"] == 3
        assert status(cfg)["by_name"]["gen"]["restarts"] == 0
    got = stream_values(nats_server)
    assert got == list(range(len(got)))  # none lost, none twice, in order
    assert len(got) >= published >= 150


def test_gateway_restart_delivers_spooled_points(make_config, short_dir) -> None:
    srv = NatsProcess(short_dir / "nats")  # not started: NATS is down during the first run
    cfg = make_config(FAST + nats_section(srv.url, jetstream=True) + counter(rate=200.0))
    with running_gateway(cfg):
        wait_for(lambda: bridge(cfg)["buffered"] >= 200, 15, "points spooled")
        published = status(cfg)["by_name"]["gen"]["points_out"]
    with srv, running_gateway(cfg):

        def first_run() -> list[int]:
            msgs = [m for m in stream_messages(srv.url, "EDGERT_gw") if ".p." in m.subject]
            epoch = msgs[0].headers["Nats-Msg-Id"].rsplit(":", 2)[0]
            return values(
                [
                    p
                    for m in msgs
                    if m.headers["Nats-Msg-Id"].startswith(epoch + ":")
                    for p in decode(m)
                ]
            )

        got = wait_for(
            lambda: (v := first_run()) and len(v) >= published and v, 15, "spooled points"
        )
    assert got == list(range(len(got)))


def test_spool_cap_drops_oldest_counts_and_reports_them(make_config, short_dir) -> None:
    srv = NatsProcess(short_dir / "nats")
    cfg = make_config(
        # 1,000 points/s: the 16 KiB spool fills and drops 200 in about a second
        FAST + nats_section(srv.url, jetstream=True, spool_max_bytes=16384) + counter(rate=1000.0)
    )
    with running_gateway(cfg):
        b = wait_for(lambda: (b := bridge(cfg))["dropped"] >= 200 and b, 20, "spool drops")
        assert b["stats"]["spool_bytes"] <= 16384
        out = CliRunner().invoke(cli, ["status", "--runtime-dir", str(cfg.runtime_dir), "--json"])
        shown = {a["name"]: a for a in json.loads(out.output)["actors"]}
        assert shown["bridge"]["dropped"] >= 200  # `edgert status` shows the drops
        with srv, Subscriber(srv.url, "edgert.gw.status") as sub:
            wait_for(lambda: bridge(cfg)["stats"]["nats"] == "connected", 15, "bridge on NATS")
            wait_for(lambda: bridge(cfg)["buffered"] < 50, 15, "spool drained")
            st = wait_for(
                lambda: [s for m in sub.messages if (s := decode(m))["spool"]["dropped"] > 0],
                15,
                "a status message with the drop count",
            )[-1]
            dropped = bridge(cfg)["dropped"]
            assert {a["name"] for a in st["actors"]} == {"bridge", "gen"}
            got = stream_values(srv)
            assert got == sorted(got) and len(set(got)) == len(got)
            assert got[0] > 0  # the oldest were dropped ...
            missing = set(range(got[-1] + 1)) - set(got)
            # the oldest were dropped and counted (a batch dropped while NATS was
            # taking it may arrive all the same); everything newer arrived
            assert 0 < len(missing) <= dropped
            assert max(missing) < got[0]


@pytest.mark.parametrize(
    ("server", "wrong", "right"),
    [
        ({"token": "s3cret"}, {"token": "guess"}, {"token": "s3cret"}),
        (
            {"user": "edge", "password": "pw"},
            {"user": "edge", "password": "nope"},
            {"user": "edge", "password": "pw"},
        ),
    ],
    ids=["token", "user-password"],
)
def test_wrong_credentials_are_a_clear_error_and_a_retry_not_a_crash(
    make_config, short_dir, server, wrong, right
) -> None:
    with NatsProcess(short_dir / "nats", **server) as srv:
        cfg = make_config(FAST + nats_section(srv.url, **wrong) + counter())
        with running_gateway(cfg):
            b = wait_for(
                lambda: (
                    (b := bridge(cfg))["stats"].get("nats_connect_attempts", 0) >= 3
                    and b["buffered"] > 0
                    and b
                ),
                15,
                "several connection attempts, with the points spooled meanwhile",
            )
            assert "refused our credentials" in b["stats"]["nats"]
            assert "Authorization Violation" in b["stats"]["nats"]
            assert b["state"] == "running" and b["restarts"] == 0
            assert b["buffered"] > 0  # the points wait in the spool
        cfg = make_config(FAST + nats_section(srv.url, **right) + counter())
        with Subscriber(srv.url, "edgert.gw.p.gen", **right) as sub, running_gateway(cfg):
            wait_for(lambda: len(sub.points()) >= 50, 15, "points with the right credentials")


def test_mutual_tls_with_a_client_certificate(make_config, short_dir) -> None:
    c = make_certificates(short_dir / "certs")
    server_tls = {"cert": c["server_cert"], "key": c["server_key"], "ca": c["ca"]}
    with NatsProcess(short_dir / "nats", tls=server_tls) as srv:
        # no client certificate: the server refuses; a clear error and a retry, not a crash
        cfg = make_config(FAST + nats_section(srv.url, tls_ca=c["ca"]) + counter())
        with running_gateway(cfg):
            b = wait_for(
                lambda: (b := bridge(cfg))["stats"].get("nats_connect_attempts", 0) >= 2 and b,
                15,
                "connection attempts without a client certificate",
            )
            assert b["state"] == "running" and b["restarts"] == 0
            assert b["stats"]["nats"].startswith("down"), b["stats"]["nats"]
        keys = {"tls_ca": c["ca"], "tls_cert": c["client_cert"], "tls_key": c["client_key"]}
        cfg = make_config(FAST + nats_section(srv.url, **keys) + counter())
        client = ssl.create_default_context(cafile=c["ca"])
        client.load_cert_chain(c["client_cert"], c["client_key"])
        with Subscriber(srv.url, "edgert.gw.p.gen", tls=client) as sub, running_gateway(cfg):
            wait_for(lambda: len(sub.points()) >= 50, 15, "points over mutual TLS")
        # what the first gateway spooled while refused comes first, then the second's count
        runs: list[list[int]] = []
        for v in (p["value"] for p in sub.points()):
            if not runs or v != runs[-1][-1] + 1:
                runs.append([])
            runs[-1].append(v)
        assert len(runs) <= 2 and all(r[0] == 0 for r in runs), [(r[0], r[-1]) for r in runs]
