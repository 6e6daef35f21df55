"""Desired config from the fleet's KV bucket: validate, apply, roll back, report, push.

A real gateway with `[fleet] enabled = true` on a real nats-server with
JetStream: a pushed config that is valid is applied through the reload path
(unchanged drivers keep their pids) and reported `applied`; one naming a driver
that is not installed is `refused`; one whose `[nats] url` does not connect, or
whose new driver crashes at start, is `rolled_back`; the gateway delivers every
point of its counter throughout. A gateway that boots without NATS runs the last
applied config and says which revision. `edgert fleet push` exits 0 only on
`applied`.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgert.config import ConfigError, load, loads, overlay
from edgert.fleet.actor import judge
from edgert.fleet.store import Desired, Store
from edgert.testing import running_gateway, status, wait_for
from edgert.testing.configs import (
    fault_driver,
    gateway_toml,
    keys,
    nats_section,
    sim_driver,
    supervisor,
)
from edgert.testing.nats import NatsProcess, Subscriber, free_port, request

GEN = sim_driver("gen", "n", rate=20.0)
GEN2 = sim_driver("gen2", "level", "sine", rate=5.0)
# A push that is rolled back waits out the whole health_timeout: where the test expects
# rollbacks, a shorter one (still ample for a good config: running 1 s after a reload,
# judged on snapshots every 0.5 s; these tests passed three copies at once at load 6).
ROLLBACK_HEALTH = 5.0


@pytest.fixture(autouse=True)
def quick_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fleet actor learns that the restarted bridge is on NATS from the supervisor's
    next status snapshot: every 0.5 s rather than 5 s, so a good push is judged about a
    second after its reload instead of up to five."""
    monkeypatch.setenv("EDGERT_STATUS_EVERY", "0.5")


def local(url: str, health: float = 20.0, **supervisor_keys: object) -> str:
    """The local file of gateway gw1, managed, but for its [gateway] table."""
    fleet = "\n[fleet]\n" + keys(enabled=True, health_timeout=health)
    return supervisor(**supervisor_keys) + nats_section(url) + fleet + GEN


def cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgert", *args], capture_output=True, text=True, timeout=timeout
    )


def push(srv: NatsProcess, path: Path, text: str, *opts: str) -> subprocess.CompletedProcess:
    """`edgert fleet push gw1 FILE` (`push --all FILE` when opts has --all)."""
    path.write_text(text)
    to = [] if "--all" in opts else ["gw1"]
    return cli("fleet", "push", *to, str(path), "--nats", srv.url, *opts)


def healthy(cfg, *names: str) -> dict | None:
    snap = status(cfg)
    a = snap["by_name"]
    ok = all(a.get(n, {}).get("state") == "running" for n in ("bridge", "fleet", *names))
    return snap if ok and a["bridge"]["stats"].get("nats") == "connected" else None


@pytest.fixture
def managed(nats_server: NatsProcess, make_config) -> tuple[NatsProcess, Path]:
    """A nats-server, and the local file of gateway gw1 (managed) using it."""
    return nats_server, Path(make_config(local(nats_server.url), gateway_id="gw1").path)


# -- the pieces, without processes -----------------------------------------------------


def test_overlay_takes_every_section_but_gateway_and_fleet_from_the_desired_config(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(gateway_toml(tmp_path, local("nats://127.0.0.1:4222", 10.0), "gw1"))
    mine = load(path)
    path.unlink()  # the overlay reads the local file no more: `load` did
    desired = '[gateway]\nid = "other"\n[fleet]\nenabled = false\n[nats]\nurl = "nats://h:1"\n'
    cfg = overlay(mine, desired + GEN + GEN2, "KV rev 3")
    assert cfg.gateway.id == "gw1" and cfg.fleet.enabled  # the local file's, always
    assert cfg.nats.url == "nats://h:1"
    assert [d.name for d in cfg.drivers] == ["gen", "gen2"]
    assert cfg.supervisor.backoff_max == 0.5  # a section left out stays the local file's
    assert cfg.path == f"{path} + KV rev 3"
    assert overlay(mine, "driver = []\n", "KV").drivers == []
    assert mine.nats.url == "nats://127.0.0.1:4222" and len(mine.drivers) == 1  # untouched
    with pytest.raises(ConfigError, match=r"KV rev 3: unknown table or key 'drivers'"):
        overlay(mine, "[[drivers]]\n", "KV rev 3")
    with pytest.raises(
        ConfigError, match=r"^KV: \[\[driver\]\] 'x': key 'type'.*driver type 'nope'"
    ):
        overlay(mine, '[[driver]]\nname = "x"\ntype = "nope"\n', "KV")
    with pytest.raises(ConfigError, match=r"gw.toml \+ KV: \[fleet\] key 'enabled': .* needs NATS"):
        overlay(mine, "[nats]\nenabled = false\n", "KV")  # checks across sections: both named


def test_fleet_section_is_validated() -> None:
    base = '[gateway]\nid = "g"\n'
    assert loads(base).fleet.enabled is False
    assert loads(base + "[fleet]\nenabled = true\n").fleet.bucket == "edgert-config"
    for bad, msg in [
        ("health_timeout = 0", r"\[fleet\]: key 'health_timeout' must be > 0"),
        ('bucket = "a.b"', r"\[fleet\]: key 'bucket'"),
        ("enabled = 1", r"\[fleet\]: key 'enabled' must be true or false"),
        ("interval = 3", r"\[fleet\]: unknown key 'interval'"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            loads(f"{base}[fleet]\n{bad}\n")
    with pytest.raises(ConfigError, match=r"needs NATS"):
        loads(base + "[nats]\nenabled = false\n[fleet]\nenabled = true\n")
    with pytest.raises(ConfigError, match=r"'fleet' is the name of the runtime's fleet actor"):
        loads(base + '[fleet]\nenabled = true\n[[driver]]\nname = "fleet"\ntype = "sim"\n')
    loads(base + '[[driver]]\nname = "fleet"\ntype = "sim"\n')  # unmanaged: still a driver name


def test_store_keeps_private_files_and_rolls_back_a_revision_pending_at_boot(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path)
    assert store.current() is None and store.boot() is None
    store.try_(Desired(3, "x = 1"))
    assert store.current() == Desired(3, "x = 1")
    store.accept(Desired(3, "x = 1"))
    assert store.pending() is None and store.applied() == Desired(3, "x = 1")
    store.try_(Desired(4, "y = 2"))
    assert store.current().revision == 4
    out = store.boot()
    assert (out.revision, out.state) == (4, "rolled_back") and "restarted" in out.error
    assert store.current().revision == 3 and store.outcome() == out
    for f in (tmp_path / "fleet").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_judge_wants_every_actor_running_steadily_and_the_bridge_publishing_on_nats() -> None:
    def actor(name: str, state: str = "running", uptime: float = 5.0, **kw) -> dict:
        return {"name": name, "kind": kw.pop("kind", "sim"), "state": state, "uptime": uptime} | kw

    bridge = actor("bridge", kind="bridge", stats={"nats": "connected"})
    snap = {"config_revision": 7, "actors": [bridge, actor("gen"), actor("gen2", uptime=0.25)]}
    assert judge(snap, 7, 1.0) == ("", 0.75)
    assert judge(snap, 8, 1.0)[0] == "the supervisor does not run revision 8 yet"
    snap["actors"][2] = actor("gen2", "backing_off", last_error="Traceback\nRuntimeError: boom")
    assert judge(snap, 7, 1.0)[0] == "gen2 backing_off (RuntimeError: boom)"
    assert judge(snap, 7, 1.0, frozenset({"gen2"})) == ("", 0.0)  # kept, down before too
    snap["actors"][:] = [actor("bridge", kind="bridge", stats={"nats": "down: refused"})]
    assert judge(snap, 7, 1.0)[0] == "bridge: nats down: refused"
    # the command connection alone down: points flow, healthy unless the push moved [nats]
    cmd_down = "connected; commands down: refused"
    snap["actors"][:] = [actor("bridge", kind="bridge", stats={"nats": cmd_down})]
    assert judge(snap, 7, 1.0) == ("", 0.0)
    assert judge(snap, 7, 1.0, commands=True)[0] == f"bridge: nats {cmd_down}"


# -- a real gateway on a real nats-server ---------------------------------------------


def test_a_valid_push_is_applied_with_unchanged_drivers_kept_and_reported_everywhere(
    managed, short_dir: Path
) -> None:
    srv, path = managed
    cfg = load(path)
    with running_gateway(cfg):
        before = wait_for(lambda: healthy(cfg, "gen"), 30, "gateway up")["by_name"]
        assert before["fleet"]["kind"] == "fleet"

        # new routes (gen2): the bridge restarts, gen keeps its process
        out = push(srv, short_dir / "want.toml", GEN + GEN2)
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.startswith("gw1: applied revision ")
        rev = int(out.stdout.split("revision ")[1].split()[0])
        snap = wait_for(lambda: healthy(cfg, "gen", "gen2"), 20, "gen2 running")
        a = snap["by_name"]
        assert snap["config_revision"] == rev
        assert a["gen"]["pid"] == before["gen"]["pid"]
        assert a["bridge"]["pid"] != before["bridge"]["pid"]
        assert a["fleet"]["pid"] == before["fleet"]["pid"]

        # the revision in `edgert status`, svc.status and `edgert fleet ls`
        shown = cli("status", "--config", str(path))
        assert f"gateway gw1, config revision {rev}" in shown.stdout
        svc = json.loads(request(srv.url, "edgert.gw1.svc.status", b"").data)
        assert svc["config_revision"] == rev
        ls = cli("fleet", "ls", "--nats", srv.url, "--json")
        assert [(g["gateway"], g["config_revision"]) for g in json.loads(ls.stdout)] == [
            ("gw1", rev)
        ]

        # a shorter shutdown_timeout changes every actor's spec (its drain time): the
        # reload restarts the fleet actor itself mid-apply; the revision it left pending
        # is judged by its successor and still reported
        want = "[supervisor]\nshutdown_timeout = 4.0\n" + GEN + GEN2
        out = push(srv, short_dir / "want.toml", want)
        assert out.returncode == 0, out.stdout + out.stderr
        a = wait_for(lambda: healthy(cfg, "gen", "gen2"), 20, "up again")["by_name"]
        assert a["fleet"]["pid"] != before["fleet"]["pid"]
        applied = Store(cfg.data_dir).applied()
        assert "shutdown_timeout = 4.0" in applied.toml and Store(cfg.data_dir).pending() is None
        assert stat.S_IMODE((cfg.data_dir / "fleet" / "applied.json").stat().st_mode) == 0o600

        # exit codes: a file broken here is never put (2); a gateway that never reports (1)
        out = push(srv, short_dir / "bad.toml", "[supervisor]\nintensity = -1\n")
        assert out.returncode == 2 and "intensity" in out.stderr
        out = cli(
            "fleet", "push", "nobody", str(short_dir / "want.toml"), "--nats", srv.url,
            "--timeout", "1",
        )  # fmt: skip
        assert out.returncode == 1 and "nobody: no report" in out.stdout
        assert Store(cfg.data_dir).applied() == applied


def test_broken_pushes_are_refused_or_rolled_back_while_points_keep_flowing(
    nats_server: NatsProcess, make_config, short_dir: Path
) -> None:
    srv = nats_server
    cfg = make_config(local(srv.url, health=ROLLBACK_HEALTH), gateway_id="gw1")
    want = short_dir / "want.toml"
    with Subscriber(srv.url, "edgert.gw1.p.gen") as sub, running_gateway(cfg):
        gen = wait_for(lambda: healthy(cfg, "gen"), 30, "gateway up")["by_name"]["gen"]["pid"]

        def flowing(what: str) -> None:
            n = len(sub.points("gen"))
            wait_for(lambda: len(sub.points("gen")) > n + 5, 20, f"points after {what}")

        # 1. a driver type that is not installed: refused; nothing restarts
        out = push(
            srv, want, GEN + '[[driver]]\nname = "x"\ntype = "not_installed"\n', "--no-check"
        )
        assert out.returncode == 1 and out.stdout.startswith("gw1: refused revision "), out.stdout
        assert "driver type 'not_installed'" in out.stdout
        flowing("the refusal")

        # 2. a [nats] url that does not connect: the bridge cannot publish, rolled back
        dead = f"nats://127.0.0.1:{free_port()}"
        out = push(srv, want, f'[nats]\nurl = "{dead}"\n' + GEN)
        assert out.returncode == 1 and "rolled_back" in out.stdout, out.stdout
        assert "bridge: nats down" in out.stdout
        wait_for(lambda: healthy(cfg, "gen"), 20, "the bridge back on NATS")
        flowing("the [nats] rollback")

        # 3. a driver that crashes at start: rolled back, the crashing driver removed
        crash = '[[driver]]\nname = "bad"\ntype = "edgert.testing:FaultActor"\nmode = "crash"\n'
        out = push(srv, want, GEN + crash)
        assert out.returncode == 1 and "rolled_back" in out.stdout, out.stdout
        assert "bad " in out.stdout
        snap = wait_for(lambda: healthy(cfg, "gen"), 20, "back to the last good config")
        assert "bad" not in snap["by_name"] and snap["config_revision"] is None
        assert snap["by_name"]["gen"]["pid"] == gen  # one process for gen throughout
        flowing("the driver rollback")

        # every counter value arrived, in order, none missing
        values = [int(p["value"]) for p in sub.points("gen")]
        first = values[0]
        seen = sorted(set(values))
        assert seen == list(range(first, first + len(seen))), "a gap in the counter"


def test_a_gateway_that_boots_without_nats_runs_the_last_applied_config(
    managed, short_dir: Path
) -> None:
    srv, path = managed
    cfg = load(path)
    with running_gateway(cfg):
        wait_for(lambda: healthy(cfg, "gen"), 30, "gateway up")
        out = push(srv, short_dir / "want.toml", GEN + GEN2)
        assert out.returncode == 0, out.stdout + out.stderr
        rev = int(out.stdout.split("revision ")[1].split()[0])
    srv.stop()
    with running_gateway(cfg):
        snap = wait_for(
            lambda: (s := status(cfg))["by_name"].get("gen2", {}).get("state") == "running" and s,
            30,
            "gen2 running without NATS",
        )
        assert snap["config_revision"] == rev
        assert snap["by_name"]["bridge"]["stats"].get("nats") != "connected"
        shown = cli("status", "--config", str(path), "--json")
        assert json.loads(shown.stdout)["config_revision"] == rev


def test_a_revision_pending_when_the_gateway_stopped_is_rolled_back_and_reported(
    managed, short_dir: Path
) -> None:
    """It may be what stopped the gateway: not tried again; the outcome is kept in the
    data directory and put into edgert-applied once NATS takes it."""
    srv, path = managed
    cfg = load(path)
    store = Store(cfg.data_dir)
    store.try_(Desired(41, GEN + GEN2))  # left pending by a gateway that then stopped
    with running_gateway(cfg):
        snap = wait_for(lambda: healthy(cfg, "gen"), 30, "gateway up")
        assert "gen2" not in snap["by_name"]  # the pending revision was not run again

        async def report() -> dict:
            import nats

            nc = await nats.connect(srv.url)
            try:
                kv = await nc.jetstream().key_value("edgert-applied")
                return json.loads((await kv.get("gw1")).value)
            finally:
                await nc.close()

        rep = wait_for(lambda: asyncio.run(report()), 20, "the report in edgert-applied")
        assert (rep["revision"], rep["state"]) == (41, "rolled_back")
        assert "restarted while revision 41" in rep["error"] and rep["time"].endswith("Z")
        wait_for(lambda: store.outcome().reported, 10, "the outcome marked reported")
    assert os.path.exists(cfg.data_dir / "fleet" / "outcome.json")


def test_a_push_after_a_nats_restart_is_still_applied(managed, short_dir: Path) -> None:
    """The watch on the KV key outlives a restart of the server (same storage)."""
    srv, path = managed
    cfg = load(path)
    with running_gateway(cfg):
        wait_for(lambda: healthy(cfg, "gen"), 30, "gateway up")
        srv.stop()
        wait_for(lambda: status(cfg)["by_name"]["bridge"]["stats"].get("nats") != "connected", 10)
        srv.start()
        wait_for(lambda: healthy(cfg, "gen"), 30, "back on NATS")
        out = push(srv, short_dir / "want.toml", GEN + GEN2, "--all", "--timeout", "25")
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.startswith("gw1: applied revision ")
        assert "gen2" in status(cfg)["by_name"]


def test_a_driver_given_up_on_before_the_push_and_left_alone_does_not_roll_it_back(
    short_dir: Path, make_config
) -> None:
    """A dead meter must not block every later push (the fix for it included)."""
    bad = fault_driver("bad", mode="crash")
    with NatsProcess(short_dir / "nats") as srv:
        cfg = make_config(local(srv.url, ROLLBACK_HEALTH, intensity=1) + bad, gateway_id="gw1")
        with running_gateway(cfg):
            wait_for(lambda: healthy(cfg, "gen"), 30, "gateway up")
            wait_for(lambda: status(cfg)["by_name"]["bad"]["state"] == "failed", 30, "bad failed")
            out = push(srv, short_dir / "want.toml", GEN + GEN2 + bad)
            assert out.returncode == 0, out.stdout + out.stderr
            assert status(cfg)["by_name"]["gen2"]["state"] == "running"
            # the push that changes it is judged on it: still crashing, rolled back
            out = push(srv, short_dir / "want.toml", GEN + GEN2 + bad + "rate = 5.0\n")
            assert out.returncode == 1 and "rolled_back" in out.stdout and "bad " in out.stdout


def test_a_key_watch_sees_each_revision_and_knows_when_its_consumer_is_gone(
    nats_server: NatsProcess,
) -> None:
    import nats

    from edgert.fleet.kv import KeyWatch, WatchLost, bucket, watch_name

    async def go() -> list:
        nc = await nats.connect(nats_server.url)
        seen: list = []
        try:
            kv = await bucket(nc.jetstream(), "edgert-config")
            await kv.put("gw1", b"one")
            await kv.put("gw2", b"not mine")
            w = KeyWatch(nc, "edgert-config", "gw1", heartbeat=0.5)
            try:
                await w.start()
                first = await w.next(5.0)
                await kv.put("gw2", b"still not mine")
                await kv.put("gw1", b"two")
                second = await w.next(5.0)
                seen += [(first.revision, first.value), (second.revision, second.value)]
                assert await w.next(1.0) is None  # quiet: nothing, heartbeats only
                await nc.jetstream().delete_consumer("KV_edgert-config", watch_name("gw1"))
                with pytest.raises(WatchLost):
                    await w.next(30.0)
            finally:
                await w.stop()
            again = KeyWatch(nc, "edgert-config", "gw1", heartbeat=0.5)
            try:
                await again.start()  # a new watch: the last revision first
                last = await again.next(5.0)
                seen.append((last.revision, last.value))
            finally:
                await again.stop()
            info = await nc.jetstream().stream_info("KV_edgert-config")
            assert info.config.allow_direct
        finally:
            await nc.close()
        return seen

    assert asyncio.run(go()) == [(1, b"one"), (4, b"two"), (4, b"two")]


# gw may not subscribe to its command subjects, gw2 neither; the CLI connects as admin
NO_COMMANDS = """
no_auth_user: "admin"
authorization { users = [
  { user: "admin", password: "admin-secret" }
  { user: "gw", password: "gw-secret", permissions: { subscribe: { deny: ["edgert.gw1.cmd.>"] } } }
  { user: "gw2", password: "gw2-secret", permissions: { subscribe: { deny: ["edgert.gw1.cmd.>"] } } }
] }
"""


def test_a_command_connection_down_rolls_back_only_a_push_that_moves_nats(
    short_dir: Path, make_config
) -> None:
    """Points flowing, commands refused: a push of drivers is applied (the command
    connection is reported, not held against it); a push that changes the bridge's
    [nats] credentials must connect both, so it is rolled back."""
    with NatsProcess(short_dir / "nats", config=NO_COMMANDS) as srv:
        creds = keys(user="gw", password="gw-secret")
        fleet = "\n[fleet]\n" + keys(enabled=True, health_timeout=ROLLBACK_HEALTH)
        body = supervisor() + nats_section(srv.url) + creds + fleet + GEN
        cfg = make_config(body, gateway_id="gw1")

        def points_up(*names: str) -> dict | None:
            snap = status(cfg)
            a = snap["by_name"]
            nats = a["bridge"]["stats"].get("nats", "")
            ok = all(a.get(n, {}).get("state") == "running" for n in ("bridge", "fleet", *names))
            return snap if ok and nats.startswith("connected; commands down: ") else None

        with running_gateway(cfg):
            wait_for(lambda: points_up("gen"), 30, "points up, commands refused")
            out = push(srv, short_dir / "want.toml", GEN + GEN2)
            assert out.returncode == 0, out.stdout + out.stderr
            assert out.stdout.startswith("gw1: applied revision ")
            snap = wait_for(lambda: points_up("gen", "gen2"), 20, "gen2 running")
            applied = snap["config_revision"]
            assert applied is not None

            moved = nats_section(srv.url) + keys(user="gw2", password="gw2-secret")
            out = push(srv, short_dir / "want.toml", moved + GEN + GEN2)
            assert out.returncode == 1 and "rolled_back" in out.stdout, out.stdout
            assert "commands down" in out.stdout and "edgert.gw1.cmd.>" in out.stdout
            snap = wait_for(lambda: points_up("gen", "gen2"), 20, "back to the last good")
            assert snap["config_revision"] == applied
