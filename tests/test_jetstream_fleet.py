"""JetStream for a fleet: a stream per gateway, with limits, on one shared server.

Two gateways with `jetstream = true` on one real nats-server each get their own
stream (`EDGERT_<id>`), created with the configured limits, and both gateways'
points are read back from JetStream. A stream that exists but does not take the
gateway's subjects is one clear error (status, status subject, log once), and
the points wait in the spool until the stream is fixed. A JetStream domain (a
leaf node's JetStream) is used for the stream's API. A config that names the
stream keeps it; a stream of an earlier version's default name that already
takes the gateway's subjects is used, not fought over.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats
import pytest

from edgert.bridge.stream import _limit, covers, default_stream
from edgert.config import GatewayConfig
from edgert.testing import running_gateway, status, wait_for
from edgert.testing.configs import sim_driver, supervisor
from edgert.testing.nats import NatsProcess, Subscriber, decode, stream_messages


def gateway(make_config, gw: str, nats_keys: str) -> GatewayConfig:
    body = supervisor() + f"\n[nats]\n{nats_keys}\n" + sim_driver(rate=100.0)
    return make_config(body, gateway_id=gw, subdir=gw)


def counters(url: str, stream: str, gw: str, domain: str | None = None) -> list[int]:
    return [
        p["value"]
        for m in stream_messages(url, stream, domain=domain)
        if m.subject == f"edgert.{gw}.p.gen"
        for p in decode(m)
    ]


def stream_config(url: str, stream: str) -> Any:
    async def ask() -> Any:
        nc = await nats.connect(url)
        try:
            return (await nc.jetstream().stream_info(stream)).config
        finally:
            await nc.close()

    return asyncio.run(ask())


def add_stream(url: str, name: str, subjects: list[str], update: bool = False) -> None:
    async def add() -> None:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            if update:
                await js.update_stream(name=name, subjects=subjects)
            else:
                await js.add_stream(name=name, subjects=subjects)
        finally:
            await nc.close()

    asyncio.run(add())


def test_subject_coverage() -> None:
    assert covers("edgert.gw.p.>", "edgert.gw.p.>")
    assert covers("edgert.>", "edgert.gw.p.>")
    assert covers("edgert.*.p.>", "edgert.gw.p.>")
    assert covers(">", "edgert.gw.p.>")
    assert not covers("edgert.gw.p.*", "edgert.gw.p.>")  # one token only
    assert not covers("edgert.other.p.>", "edgert.gw.p.>")
    assert not covers("edgert.gw.status", "edgert.gw.p.>")
    assert not covers("edgert.gw.p.>", "edgert.gw.p")
    assert covers("a.*", "a.b") and not covers("a.b", "a.*")
    assert default_stream("gw-1_a") == "EDGERT_gw-1_a"


def test_stream_limits_are_logged_in_units_a_person_reads() -> None:
    assert _limit("max_bytes", 256 * 1024 * 1024) == "max_bytes 256 MiB"
    assert _limit("max_bytes", 1536) == "max_bytes 1.5 KiB"
    assert _limit("max_bytes", 100) == "max_bytes 100 B"
    assert _limit("max_age", 7 * 86400.0) == "max_age 7 d"
    assert _limit("max_age", 30.0) == "max_age 30 s"


def test_two_gateways_share_one_server_each_in_its_own_stream(
    nats_server: NatsProcess, make_config
) -> None:
    keys = f'url = "{nats_server.url}"\njetstream = true\n'
    one = gateway(make_config, "gw1", keys + "stream_max_bytes = 1048576\nstream_max_age = 3600\n")
    two = gateway(make_config, "gw2", keys)
    with running_gateway(one), running_gateway(two):
        for gw in ("gw1", "gw2"):
            wait_for(
                lambda gw=gw: len(counters(nats_server.url, f"EDGERT_{gw}", gw)) >= 100,
                30,
                f"{gw}'s points in its stream",
            )
    for gw in ("gw1", "gw2"):
        got = counters(nats_server.url, f"EDGERT_{gw}", gw)
        assert got == list(range(len(got))), gw  # none lost, none twice, in order
        conf = stream_config(nats_server.url, f"EDGERT_{gw}")
        assert conf.subjects == [f"edgert.{gw}.p.>", f"edgert.{gw}.status"]
    one_conf = stream_config(nats_server.url, "EDGERT_gw1")
    assert (one_conf.max_bytes, one_conf.max_age) == (1048576, 3600)
    two_conf = stream_config(nats_server.url, "EDGERT_gw2")  # the defaults: SD-card sized
    assert (two_conf.max_bytes, two_conf.max_age) == (256 * 1024 * 1024, 7 * 24 * 3600)


def test_a_stream_without_the_gateways_subjects_is_one_clear_error(
    nats_server: NatsProcess,
    make_config,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the bridge looks at the refused stream again every second, not every 10 s: the test
    # waits for one more look, and for the look that finds the stream fixed
    monkeypatch.setenv("EDGERT_STREAM_RETRY", "1.0")
    add_stream(nats_server.url, "PLANT", ["plant.>"])
    cfg = gateway(
        make_config, "gw", f'url = "{nats_server.url}"\njetstream = true\nstream = "PLANT"'
    )
    with Subscriber(nats_server.url, "edgert.gw.status") as sub, running_gateway(cfg):
        b = wait_for(
            lambda: (
                "PLANT" in (b := status(cfg)["by_name"]["bridge"])["stats"].get("nats", "") and b
            ),
            30,
            "the stream error in status",
        )
        said = b["stats"]["nats"]
        assert "stream PLANT does not take" in said and "edgert.gw.p.>" in said, said
        assert "plant.>" in said, said
        on_subject = wait_for(
            lambda: [m for m in sub.messages if decode(m)["nats"].get("error")],
            15,
            "the error on the status subject",
        )
        assert "PLANT" in decode(on_subject[0])["nats"]["error"]
        wait_for(lambda: status(cfg)["by_name"]["bridge"]["buffered"] > 50, 20, "spooled")
        attempts = status(cfg)["by_name"]["bridge"]["stats"]["nats_connect_attempts"]
        wait_for(  # looked at again, refused again: not logged again
            lambda: status(cfg)["by_name"]["bridge"]["stats"]["nats_connect_attempts"] > attempts,
            30,
            "another look at the stream",
        )
        logged = capfd.readouterr().err.count("stream PLANT does not take")
        assert logged == 1, logged
        # the operator fixes the stream: the gateway finds it by itself and delivers
        add_stream(nats_server.url, "PLANT", ["plant.>", "edgert.gw.p.>"], update=True)
        wait_for(lambda: len(counters(nats_server.url, "PLANT", "gw")) >= 100, 40, "delivered")
    got = counters(nats_server.url, "PLANT", "gw")
    assert got == list(range(len(got)))


def test_a_named_stream_is_kept_and_an_old_default_stream_is_used(
    nats_server: NatsProcess, make_config
) -> None:
    url = nats_server.url
    named = gateway(make_config, "gw1", f'url = "{url}"\njetstream = true\nstream = "EDGERT"')
    add_stream(url, "OLD", ["edgert.gw2.p.>", "edgert.gw2.status"])  # an earlier version's
    old = gateway(make_config, "gw2", f'url = "{url}"\njetstream = true')
    with running_gateway(named), running_gateway(old):
        wait_for(lambda: len(counters(url, "EDGERT", "gw1")) >= 50, 30, "gw1 in EDGERT")
        wait_for(lambda: len(counters(url, "OLD", "gw2")) >= 50, 30, "gw2 in its old stream")
    assert stream_config(url, "EDGERT").subjects == ["edgert.gw1.p.>", "edgert.gw1.status"]
    with pytest.raises(nats.js.errors.NotFoundError):
        stream_config(url, "EDGERT_gw2")


def test_a_jetstream_domain_is_used(short_dir: Path, make_config) -> None:
    with NatsProcess(short_dir / "leaf", jetstream_domain="leaf") as srv:
        cfg = gateway(
            make_config, "gw", f'url = "{srv.url}"\njetstream = true\njetstream_domain = "leaf"'
        )
        with running_gateway(cfg):
            wait_for(
                lambda: len(counters(srv.url, "EDGERT_gw", "gw", domain="leaf")) >= 50,
                30,
                "points in the leaf's stream",
            )
        got = counters(srv.url, "EDGERT_gw", "gw", domain="leaf")
        assert got == list(range(len(got)))
        wrong = gateway(
            make_config, "gw2", f'url = "{srv.url}"\njetstream = true\njetstream_domain = "hub"'
        )
        with running_gateway(wrong):
            said = wait_for(
                lambda: (
                    "no answer" in (n := status(wrong)["by_name"]["bridge"]["stats"]["nats"]) and n
                ),
                30,
                "the wrong domain said",
            )
            assert "JetStream domain 'hub'" in said, said
