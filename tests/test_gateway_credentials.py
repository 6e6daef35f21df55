"""Each gateway its own NATS user, made from deploy/nats-gateway-user.conf.in.

A real nats-server enforces the template's permissions for gw1 and gw2 (and an
unrestricted user for the fleet's operator). gw1 runs with its own user and
works fully: points and status land in its JetStream stream, the fleet finds
it (`$SRV`), its `svc.status`, `svc.reload` and `cmd` requests are answered,
and it reads its own key of the desired-config bucket (a direct get and a
filtered watch) and writes its own applied report. Managed (`[fleet] enabled`)
with nothing but its own user, it takes a config `edgert fleet push` puts into a
bucket the push creates, applies it and reports it. With gw1's credentials the
server refuses everything of gw2's: publishing its points, taking its commands
or service requests, reading its desired config (by any API: a direct get, a
consumer, a message get), writing its report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgert.config import GatewayConfig
from edgert.fleet.kv import KeyWatch, watch_name
from edgert.testing import await_for, running_gateway, status, wait_for
from edgert.testing.configs import keys, nats_section, sim_driver, supervisor
from edgert.testing.nats import NatsProcess, decode, request, stream_messages

TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "nats-gateway-user.conf.in"
ADMIN = {"user": "fleet", "password": "fleet-secret"}


def user_entry(gateway: str, password: str) -> str:
    """The template's user entry for one gateway, as the deploy instructions make it."""
    text = TEMPLATE.read_text()
    entry = text[text.index("\n{") + 1 :]
    for old, new in (("@ID@", gateway), ("@PREFIX@", "edgert"), ("@PASSWORD@", password)):
        assert old in entry
        entry = entry.replace(old, new)
    return entry


def users() -> str:
    """gw1's and gw2's entries from the template, and the fleet operator's (unrestricted)."""
    entries = "\n".join(
        [
            user_entry("gw1", "gw1-secret"),
            user_entry("gw2", "gw2-secret"),
            '{ user: "fleet", password: "fleet-secret" }',
        ]
    )
    return f"authorization {{ users = [\n{entries}\n] }}"


@pytest.fixture
def bare_server(short_dir: Path) -> Any:
    """A nats-server with those users, and no bucket yet."""
    with NatsProcess(short_dir / "nats", config=users()) as s:
        yield s


@pytest.fixture
def server(bare_server: NatsProcess) -> NatsProcess:
    """The same, with the fleet's buckets and a desired config for each gateway."""
    asyncio.run(buckets(bare_server.url))
    return bare_server


async def buckets(url: str) -> None:
    """The fleet's KV buckets, with a desired config for each gateway."""
    import nats

    nc = await nats.connect(url, **ADMIN)
    try:
        js = nc.jetstream()
        kv = await js.create_key_value(bucket="edgert-config", direct=True)
        await js.create_key_value(bucket="edgert-applied", direct=True)
        await kv.put("gw1", b"# gw1's desired config\n")
        await kv.put("gw2", b"# gw2's desired config\n")
    finally:
        await nc.close()


def gateway(make_config, url: str, extra: str = "") -> GatewayConfig:
    nats = nats_section(url, user="gw1", password="gw1-secret", jetstream=True, stream="EDGERT_gw1")
    return make_config(supervisor() + nats + sim_driver(rate=10.0) + extra, "gw1", subdir="gw1")


async def as_gw1(url: str, *attempts: tuple[str, str]) -> list[str]:
    """Try each (action, subject) with gw1's credentials; the server's refusals, in order."""
    import nats

    refusals: list[str] = []

    async def errors(e: Exception) -> None:
        refusals.append(str(e))

    nc = await nats.connect(url, user="gw1", password="gw1-secret", error_cb=errors)
    try:
        for action, subject in attempts:
            before = len(refusals)
            if action == "pub":
                await nc.publish(subject, b"[]")
            elif action == "sub":
                await nc.subscribe(subject)
            else:  # "req": a JetStream API request
                with pytest.raises(nats.errors.TimeoutError):
                    await nc.request(subject, b"{}", timeout=0.5)
            await nc.flush()
            await await_for(
                lambda before=before: len(refusals) > before, 5, f"a refusal of {subject}"
            )
    finally:
        await nc.close()
    return refusals


async def own_config(url: str) -> tuple[bytes, bytes]:
    """gw1's desired config by a direct get and by the gateway's watch (`KeyWatch`, a
    filtered consumer); its report."""
    import nats

    nc = await nats.connect(url, user="gw1", password="gw1-secret")
    try:
        js = nc.jetstream()
        got = (await (await js.key_value("edgert-config")).get("gw1")).value
        watch = KeyWatch(nc, "edgert-config", "gw1")
        try:
            await watch.start()
            entry = await watch.next(5.0)
        finally:
            await watch.stop()
        assert entry is not None
        applied = await js.key_value("edgert-applied")
        await applied.put("gw1", json.dumps({"revision": 1, "state": "applied"}).encode())
        return got, entry.value
    finally:
        await nc.close()


def test_a_gateway_works_fully_with_its_own_user(server: NatsProcess, make_config) -> None:
    cfg = gateway(make_config, server.url)
    with running_gateway(cfg):
        wait_for(
            lambda: status(cfg)["by_name"]["bridge"]["stats"].get("nats") == "connected",
            20,
            "the bridge connected as gw1",
        )
        # points and status land in its own stream
        wait_for(
            lambda: (
                len(
                    [
                        m
                        for m in stream_messages(server.url, "EDGERT_gw1", **ADMIN)
                        if ".p." in m.subject
                    ]
                )
                >= 3
            ),
            20,
            "gw1's points in its stream",
        )
        # the fleet finds it and asks it
        ping = wait_for(
            lambda: request(server.url, "$SRV.PING.edgert", b"", timeout=2, **ADMIN), 20, "ping"
        )
        assert json.loads(ping.data)["metadata"] == {"gateway": "gw1"}
        reply = json.loads(request(server.url, "edgert.gw1.svc.status", b"", **ADMIN).data)
        assert reply["gateway"] == "gw1"
        reply = json.loads(
            request(server.url, "edgert.gw1.svc.reload", b"", timeout=30, **ADMIN).data
        )
        assert reply["ok"] is True, reply
        # a command is taken and answered (the sim refuses writes, in its reply)
        body = json.dumps([{"type": "n", "value": 1}]).encode()
        answer = request(
            server.url,
            "edgert.gw1.cmd.gen",
            body,
            {"Content-Type": "application/json"},
            **ADMIN,
        )
        assert set(decode(answer)) == {"ok", "error"}
        assert status(cfg)["by_name"]["bridge"]["stats"].get("nats") == "connected"
    statuses = [m for m in stream_messages(server.url, "EDGERT_gw1", **ADMIN)]
    assert any(m.subject == "edgert.gw1.status" for m in statuses)
    # its own key of the desired config, and its own report
    got, watched = asyncio.run(own_config(server.url))
    assert got == watched == b"# gw1's desired config\n"


def test_the_server_refuses_gw1_everything_of_gw2(server: NatsProcess) -> None:
    attempts = [
        ("pub", "edgert.gw2.p.gen"),  # another gateway's points
        ("pub", "edgert.gw2.status"),
        ("pub", "edgert.other.p.gen"),
        ("sub", "edgert.gw2.cmd.>"),  # another gateway's commands
        ("sub", "edgert.gw2.svc.>"),  # and service requests
        ("sub", "edgert.>"),  # everybody's points
        ("sub", "$KV.edgert-config.gw2"),  # another gateway's desired config
        ("req", "$JS.API.DIRECT.GET.KV_edgert-config.$KV.edgert-config.gw2"),
        ("req", "$JS.API.CONSUMER.CREATE.KV_edgert-config"),  # an unfiltered watch
        ("req", "$JS.API.CONSUMER.CREATE.KV_edgert-config.edgert-watch-gw2.$KV.edgert-config.gw2"),
        ("req", "$JS.API.CONSUMER.DELETE.KV_edgert-config.edgert-watch-gw2"),  # gw2's watch
        ("req", "$JS.API.STREAM.MSG.GET.KV_edgert-config"),  # a message get: any key
        ("req", "$JS.API.STREAM.INFO.EDGERT_gw2"),  # another gateway's stream
        ("pub", "$KV.edgert-applied.gw2"),  # another gateway's report
    ]
    refusals = asyncio.run(as_gw1(server.url, *attempts))
    assert len(refusals) == len(attempts)
    for (action, subject), refusal in zip(attempts, refusals, strict=True):
        kind = "subscription" if action == "sub" else "publish"
        said = refusal.lower()  # nats-py lowers the server's -ERR text
        assert f'permissions violation for {kind} to "{subject.lower()}"' in said, refusal


PUSHED = sim_driver(rate=10.0) + sim_driver("gen2", "level", "sine", rate=5.0)


def test_a_push_reaches_a_gateway_that_has_only_its_own_user(
    bare_server: NatsProcess, short_dir: Path, make_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the fleet actor judges the push on the supervisor's status snapshots: every 0.5 s
    monkeypatch.setenv("EDGERT_STATUS_EVERY", "0.5")
    url = bare_server.url
    cfg = gateway(make_config, url, "\n[fleet]\n" + keys(enabled=True, health_timeout=20.0))
    with running_gateway(cfg):
        wait_for(
            lambda: status(cfg)["by_name"]["fleet"]["state"] == "running", 20, "the fleet actor"
        )
        # the push creates the buckets (the gateway may not), puts, and waits for the report
        pushed = short_dir / "pushed.toml"
        pushed.write_text(PUSHED)
        out = subprocess.run(
            [sys.executable, "-m", "edgert", "fleet", "push", "gw1", str(pushed)]
            + ["--nats", url, "--user", "fleet", "--password", "fleet-secret", "--timeout", "60"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0 and "applied" in out.stdout, out.stdout + out.stderr
        snap = status(cfg)
        assert snap["by_name"]["gen2"]["state"] == "running", snap["by_name"]
        assert snap["config_revision"] == 1, snap.get("config_revision")
    assert asyncio.run(allows_direct(url, "edgert-config"))
    # an operator's bucket without direct gets is given them by the next push
    asyncio.run(drop_direct(url, "edgert-config"))
    out = subprocess.run(
        [sys.executable, "-m", "edgert", "fleet", "push", "gw1", str(pushed), "--timeout", "1"]
        + ["--nats", url, "--user", "fleet", "--password", "fleet-secret"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stdout + out.stderr  # no gateway runs to report
    assert asyncio.run(allows_direct(url, "edgert-config"))


async def allows_direct(url: str, name: str) -> bool:
    import nats

    nc = await nats.connect(url, **ADMIN)
    try:
        return bool((await nc.jetstream().stream_info(f"KV_{name}")).config.allow_direct)
    finally:
        await nc.close()


async def drop_direct(url: str, name: str) -> None:
    import nats

    nc = await nats.connect(url, **ADMIN)
    try:
        js = nc.jetstream()
        info = await js.stream_info(f"KV_{name}")
        info.config.allow_direct = False
        await js.update_stream(info.config)
    finally:
        await nc.close()


async def gw2_config_as_gw1(url: str) -> list[bytes]:
    """Every way gw1's user might read gw2's desired config that the server lets it ask
    (on gw1's own subjects, with gw2's key in the request): what came back."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    admin = await nats.connect(url, **ADMIN)
    try:
        kv = await admin.jetstream().key_value("edgert-config")
        secret = b"# gw2's secret desired config\n"
        rev = await kv.put("gw2", secret)
        await kv.put("gw1", b"# gw1's\n")
    finally:
        await admin.close()
    got: list[bytes] = []
    nc = await nats.connect(url, user="gw1", password="gw1-secret", error_cb=_ignore)
    try:
        own = "$JS.API.DIRECT.GET.KV_edgert-config.$KV.edgert-config.gw1"
        for body in (
            json.dumps({"seq": rev}),
            json.dumps({"last_by_subj": "$KV.edgert-config.gw2"}),
        ):
            try:
                got.append((await nc.request(own, body.encode(), timeout=1)).data)
            except nats.errors.TimeoutError:
                pass
        # gw1's own consumer name and filter in the subject, gw2's key in its config
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        cfg = ConsumerConfig(
            name=watch_name("gw1"),
            filter_subject="$KV.edgert-config.gw2",
            deliver_subject=inbox,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=AckPolicy.NONE,
        ).as_dict()
        create = f"$JS.API.CONSUMER.CREATE.KV_edgert-config.{watch_name('gw1')}"
        create += ".$KV.edgert-config.gw1"
        body = json.dumps({"stream_name": "KV_edgert-config", "config": cfg}).encode()
        try:
            got.append((await nc.request(create, body, timeout=1)).data)
        except nats.errors.TimeoutError:
            pass
        with contextlib.suppress(nats.errors.TimeoutError):
            while True:
                got.append((await sub.next_msg(timeout=1)).data)
    finally:
        await nc.close()
    return [g for g in got if b"secret" in g]


async def _ignore(e: Exception) -> None:
    pass


def test_gw1_cannot_read_gw2s_desired_config_by_any_allowed_request(server: NatsProcess) -> None:
    assert asyncio.run(gw2_config_as_gw1(server.url)) == []
