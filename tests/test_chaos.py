"""Chaos: random crashes and outages, and then every counter value accounted for.

A gateway (`edgert run`, restarted half a second after it exits, as systemd's
`Restart=always` would) runs two `ChaosCounter` drivers into JetStream on a
real nats-server. For `EDGERT_CHAOS_SECONDS` (or `--chaos-seconds`; 60) faults
land one after another at random: SIGKILL of a driver, of the bridge, of
nats-server and of `edgert run` itself; SIGTERM of `edgert run` (a restart, at
any moment); SIGSTOP and SIGCONT of the bridge; NATS taken down for a few
seconds. Then everything is brought back, drained and stopped, and the stream
is read: per counter no value lost, none twice, none out of order, and the
drops the gateway reports (lost at stop, dropped) equal the values actually
missing. The seed and the faults done are in every failure's message
(`EDGERT_CHAOS_SEED` replays the choices, not the timing).

The variant is `EDGERT_CHAOS_VARIANT` (or `--chaos-variant`; comma-separated
for both): `full`, the one collected by default and so the one CI runs, or
`no_driver_kills`, which leaves out every fault that ends a driver before it
could hand its points over: the driver and `edgert run` SIGKILLs, and a
restart while the bridge is down (its restarts wait for the bridge to run).
What a driver's outbox held is lost with its process unless the outbox
survives it; at a stop it is at least counted (`lost_at_stop`).

On a 3-node nats-server cluster (a stream of 3 replicas), the node the gateway
is connected to, then the stream's leader, then the gateway's node again are
SIGKILLed under load, each restarted once the gateway delivers again: every counter value is stored once,
in order, and no message id twice (a point re-sent after the session's loss
must be re-sent under the id it had, for JetStream's dedupe to drop it).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from edgert.config import GatewayConfig, loads
from edgert.testing import status, wait_for
from edgert.testing.chaos import check_counter, counter_state
from edgert.testing.nats import NatsCluster, NatsProcess, decode, stream_messages

SECONDS = float(os.environ.get("EDGERT_CHAOS_SECONDS") or 60)
VARIANTS = (os.environ.get("EDGERT_CHAOS_VARIANT") or "full").split(",")
DRIVERS = ("c1", "c2")
RESTART_SEC = 0.5  # systemd's RestartSec for `edgert run`

GATEWAY = """
[gateway]
id = "gw"
runtime_dir = "{d}/run"
data_dir = "{d}/data"

[supervisor]
intensity = 10000
period = 1
backoff_min = 0.05
backoff_max = 0.5
heartbeat_timeout = 30
failed_retry = 1

[nats]
url = {url}
jetstream = true
"""

DRIVER = """
[[driver]]
name = "{name}"
type = "edgert.testing.chaos:ChaosCounter"
state = "{d}/{name}.state"
rate = 200.0
"""

FAULTS = {
    "full": ("kill_driver", "kill_bridge", "stop_bridge", "kill_nats", "nats_outage",
             "kill_run", "term_run"),
    "no_driver_kills": ("kill_bridge", "stop_bridge", "kill_nats", "nats_outage",
                        "restart_run"),
}  # fmt: skip


class Chaos:
    """The gateway under `edgert run`, its nats-server, and the faults done to them."""

    def __init__(self, d: Path, rng: random.Random, cluster: NatsCluster | None = None) -> None:
        self.d = d
        self.rng = rng
        self.srv = NatsProcess(d / "nats")  # on a cluster: not started, its faults not used
        urls: str | list[str] = cluster.urls if cluster is not None else self.srv.url
        text = GATEWAY.format(d=d, url=json.dumps(urls)) + "".join(
            DRIVER.format(d=d, name=n) for n in DRIVERS
        )
        self.path = d / "gw.toml"
        self.path.write_text(text)
        self.cfg: GatewayConfig = loads(text, str(self.path))
        self.run: subprocess.Popen[bytes] | None = None
        self.exited_at: float | None = None
        self.log = open(d / "run.log", "ab")  # noqa: SIM115 - closed in close()
        self.done: list[str] = []

    # -- edgert run, as systemd runs it -----------------------------------------------
    def start_run(self) -> None:
        self.run = subprocess.Popen(
            [sys.executable, "-m", "edgert", "run", str(self.path)],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )
        self.exited_at = None

    def systemd(self) -> None:
        """Restart=always, RestartSec=0.5: an exited `edgert run` is started again."""
        if self.run is not None and self.run.poll() is not None:
            if self.exited_at is None:
                self.exited_at = time.monotonic()
            elif time.monotonic() - self.exited_at >= RESTART_SEC:
                self.start_run()

    def hold(self, seconds: float) -> None:
        """Let the gateway run for `seconds` (the pace of the faults), restarting it as systemd."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.systemd()
            time.sleep(0.05)

    def actor_pid(self, name: str) -> int | None:
        try:
            return status(self.cfg, timeout=1.0)["by_name"][name]["pid"]
        except Exception:  # noqa: BLE001 - restarting: no pid to hit this time
            return None

    # -- the faults --------------------------------------------------------------------
    def fault(self, kind: str) -> None:
        rng = self.rng
        if kind in ("kill_driver", "kill_bridge", "stop_bridge"):
            name = rng.choice(DRIVERS) if kind == "kill_driver" else "bridge"
            pid = self.actor_pid(name)
            if pid is None:
                return
            if kind == "stop_bridge":
                os.kill(pid, signal.SIGSTOP)
                self.hold(rng.uniform(0.5, 3.0))
                os.kill(pid, signal.SIGCONT)
            else:
                os.kill(pid, signal.SIGKILL)
            self.done.append(f"{kind} {name}")
        elif kind in ("kill_nats", "nats_outage"):
            assert self.srv.proc is not None
            if kind == "kill_nats":
                os.kill(self.srv.proc.pid, signal.SIGKILL)
                self.srv.proc.wait()
                self.srv.proc = None
                self.hold(rng.uniform(0.1, 1.5))
            else:
                self.srv.stop()
                self.hold(rng.uniform(1.0, 5.0))
            self.srv.start()
            self.done.append(kind)
        elif kind in ("kill_run", "term_run", "restart_run"):
            if self.run is None or self.run.poll() is not None:
                return
            if kind == "restart_run" and not self.bridge_up(5.0):
                return
            self.run.send_signal(signal.SIGKILL if kind == "kill_run" else signal.SIGTERM)
            self.done.append(kind)

    def bridge_up(self, timeout: float) -> bool:
        """Wait up to `timeout` for the bridge to be running (NATS up or not)."""
        try:
            wait_for(
                lambda: status(self.cfg, timeout=1.0)["by_name"]["bridge"]["state"] == "running",
                timeout,
                "the bridge running",
            )
        except TimeoutError:
            return False
        return True

    # -- the end -----------------------------------------------------------------------
    def drained(self) -> dict[str, Any] | None:
        """The status when all runs, NATS is up and the spool is empty, else None.

        Asked while waiting, so it restarts an exited `edgert run` as systemd would.
        """
        self.systemd()
        snap = status(self.cfg, timeout=2.0)["by_name"]
        b = snap["bridge"]
        if b["state"] != "running" or b["stats"].get("nats") != "connected" or b["buffered"]:
            return None
        for n in DRIVERS:
            if snap[n]["state"] != "running" or not snap[n]["points_out"]:
                return None
        return snap

    def stop_run(self) -> int:
        assert self.run is not None
        self.run.send_signal(signal.SIGTERM)
        return self.run.wait(60)

    def close(self) -> None:
        if self.run is not None and self.run.poll() is None:
            self.run.kill()
            self.run.wait()
        self.srv.stop()
        self.log.close()


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + 240)
@pytest.mark.parametrize("variant", VARIANTS)
def test_chaos(short_dir: Path, variant: str) -> None:
    seed = int(os.environ.get("EDGERT_CHAOS_SEED") or time.time_ns() % 1_000_000)
    rng = random.Random(seed)
    chaos = Chaos(short_dir, rng)
    try:
        chaos.srv.start()
        chaos.start_run()
        wait_for(chaos.drained, 60, "the gateway running and delivering", interval=0.05)
        t0 = time.monotonic()
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            chaos.fault(rng.choice(FAULTS[variant]))
            chaos.hold(rng.uniform(0.3, 2.0))
        # everything back: drained, then a clean stop, then a start to read the counts
        t1 = time.monotonic()
        wait_for(chaos.drained, 90, f"drained after {chaos.done}", interval=0.05)
        t2 = time.monotonic()
        assert chaos.stop_run() == 0
        chaos.start_run()
        snap = wait_for(chaos.drained, 60, "the gateway back after the last stop", interval=0.05)
        reported = sum(a["lost_at_stop"] + (a["dropped"] or 0) for a in snap.values())
        assert chaos.stop_run() == 0
        t3 = time.monotonic()
        msgs = stream_messages(chaos.srv.url, "EDGERT_gw")
        print(
            f"chaos: {len(chaos.done)} faults in {t1 - t0:.0f} s, drained in {t2 - t1:.0f} s,"
            f" restart {t3 - t2:.0f} s, {len(msgs)} messages read in {time.monotonic() - t3:.0f} s"
        )
    finally:
        chaos.close()
    why = f"seed {seed}, faults {chaos.done}"
    lost = 0
    for name in DRIVERS:
        values = [p["value"] for m in msgs if m.subject == f"edgert.gw.p.{name}" for p in decode(m)]
        verdict = check_counter(values, counter_state(short_dir / f"{name}.state"))
        assert not verdict.duplicates, f"{name}: twice {verdict.duplicates[:20]}; {why}"
        assert not verdict.out_of_order, f"{name}: backwards {verdict.out_of_order[:20]}; {why}"
        assert not verdict.unknown, f"{name}: never published {verdict.unknown[:20]}; {why}"
        assert len(values) > 1000, name
        lost += len(verdict.lost)
        assert not verdict.lost, (
            f"{name}: {len(verdict.lost)} values lost (e.g. {verdict.lost[:10]}), "
            f"{reported} reported dropped; {why}"
        )
    assert reported == lost, why


async def _js(urls: list[str], what: str) -> Any:
    """One JetStream look at the cluster: "create" the gateway's R3 stream, "info" of it."""
    import nats

    nc = await nats.connect(urls, connect_timeout=1, max_reconnect_attempts=1)
    try:
        js = nc.jetstream(timeout=5)
        if what == "create":
            subjects = ["edgert.gw.p.>", "edgert.gw.status"]
            return await js.add_stream(name="EDGERT_gw", subjects=subjects, num_replicas=3)
        return await js.stream_info("EDGERT_gw")
    finally:
        await nc.close()


async def _status_server(urls: list[str]) -> str:
    """The URL of the node the gateway is connected to, from its next status message."""
    import nats

    nc = await nats.connect(urls, connect_timeout=1, max_reconnect_attempts=1)
    try:
        sub = await nc.subscribe("edgert.gw.status")
        msg = await sub.next_msg(timeout=10)
        return decode(msg)["nats"]["server"]
    finally:
        await nc.close()


def _whole(urls: list[str]) -> bool:
    """The stream has a leader and both other replicas, current (a node may die again)."""
    c = asyncio.run(_js(urls, "info")).cluster
    return bool(
        c.leader
        and len(c.replicas or []) == 2
        and all(r.current and not r.offline for r in c.replicas)
    )


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_cluster_node_kills_store_every_point_once(short_dir: Path) -> None:
    with NatsCluster(short_dir / "nats", 3) as cluster:
        urls = cluster.urls
        asyncio.run(_js(urls, "create"))
        chaos = Chaos(short_dir, random.Random(0), cluster)
        try:
            chaos.start_run()
            wait_for(lambda: chaos.drained(), 60, "the gateway running and delivering")
            for target in ("the gateway's node", "the stream's leader", "the gateway's node"):
                if target == "the gateway's node":
                    url = asyncio.run(_status_server(urls))
                    victim = next(n for n in cluster.nodes if n.url == url)
                else:
                    leader = asyncio.run(_js(urls, "info")).cluster.leader
                    victim = next(n for n in cluster.nodes if n.name == leader)
                live = [u for u in urls if u != victim.url]
                attempts = _attempts(chaos)
                before = asyncio.run(_js(live, "info")).state.last_seq
                victim.kill()
                chaos.done.append(f"SIGKILL {target} ({victim.name})")
                # under load through the loss: delivering again, by itself
                wait_for(
                    lambda b=before, live=live: (
                        asyncio.run(_js(live, "info")).state.last_seq > b + 50
                    ),
                    90,
                    f"points stored again after {chaos.done[-1]}",
                    interval=0.5,
                )
                chaos.hold(1.0)
                if target == "the gateway's node":  # (its figures come with heartbeats)
                    wait_for(
                        lambda a=attempts: _attempts(chaos) > a, 10, "a new session of the gateway"
                    )
                victim.start()
                wait_for(lambda: _whole(urls), 90, "every replica current", interval=0.5)
            wait_for(lambda: chaos.drained(), 90, f"drained after {chaos.done}")
            assert chaos.stop_run() == 0
            chaos.start_run()  # hands over what the outboxes held at the stop
            wait_for(lambda: chaos.drained(), 60, "the gateway back after the stop")
            assert chaos.stop_run() == 0
            msgs = stream_messages(urls[0], "EDGERT_gw")
        finally:
            chaos.close()
    why = f"faults {chaos.done}"
    points = [m for m in msgs if ".p." in m.subject]
    ids = Counter(m.headers.get("Nats-Msg-Id") for m in points)
    twice = sorted(i for i, n in ids.items() if n > 1)
    assert not twice, f"message ids stored twice: {twice[:10]}; {why}"
    for name in DRIVERS:
        values = [
            p["value"] for m in points if m.subject == f"edgert.gw.p.{name}" for p in decode(m)
        ]
        verdict = check_counter(values, counter_state(short_dir / f"{name}.state"))
        assert not verdict.duplicates, f"{name}: twice {verdict.duplicates[:20]}; {why}"
        assert not verdict.out_of_order, f"{name}: backwards {verdict.out_of_order[:20]}; {why}"
        assert not verdict.lost, f"{name}: lost {verdict.lost[:20]}; {why}"
        assert not verdict.unknown, f"{name}: never published {verdict.unknown[:20]}; {why}"
        assert len(values) > 1000, name


def _attempts(chaos: Chaos) -> int:
    return status(chaos.cfg, timeout=2.0)["by_name"]["bridge"]["stats"]["nats_connect_attempts"]
