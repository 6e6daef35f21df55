"""Points a driver could not hand over when it stopped are counted, not only logged.

The bridge is frozen (SIGSTOP), so nothing the driver publishes is
acknowledged; the driver is then stopped (SIGTERM). Without the crash-safe
outbox (`crash_safe_outbox = false`), what its outbox still held shows as
`lost_at_stop` for that actor in the status and in `edgert status`, and stays
counted after its restart, after a restart of the gateway and after a reload
that restarts it with a new config. With it (the default), nothing is lost:
the next process of the driver sends what the stopped one held.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from edgert.bus.outbox import pack_points
from edgert.bus.ring import Ring, ring_path
from edgert.config import load
from edgert.point import Point
from edgert.supervisor.control import format_status
from edgert.supervisor.tally import load_losses
from edgert.testing import running_gateway, status, wait_for
from edgert.testing.nats import free_port

GATEWAY = """
[supervisor]
backoff_min = 0.1
backoff_max = 0.5
heartbeat_timeout = 60
# a stopped driver tries to hand its outbox over for half of this: the frozen bridge
# never takes it, so each stop here waits that half out (2.5 s with the default 5 s)
shutdown_timeout = 2.0
[nats]
url = "nats://127.0.0.1:{port}"

[[driver]]
name = "gen"
type = "edgert.testing:FaultActor"
mode = "run"
rate = 500.0
"""


def without_ring(cfg):
    path = Path(cfg.path)
    path.write_text(path.read_text().replace('id = "gw"', 'id = "gw"\ncrash_safe_outbox = false'))
    return load(cfg.path)


def stop_gen_while_the_bridge_is_frozen(cfg) -> dict:
    """SIGTERM to gen while the bridge cannot acknowledge; gen's status once restarted."""
    a = wait_for(
        lambda: (
            (a := status(cfg)["by_name"])["gen"]["state"] == "running"
            and a["bridge"]["state"] == "running"
            and a
        ),
        15,
        "gen and bridge running",
    )
    assert a["gen"]["lost_at_stop"] == 0
    bridge, gen = a["bridge"]["pid"], a["gen"]["pid"]
    os.kill(bridge, signal.SIGSTOP)
    try:
        wait_for(lambda: status(cfg)["by_name"]["gen"]["buffered"] > 100, 15, "unacked")
        os.kill(gen, signal.SIGTERM)
        return wait_for(
            lambda: (g := status(cfg)["by_name"]["gen"])["pid"] not in (None, gen) and g,
            30,
            "gen restarted",
        )
    finally:
        os.kill(bridge, signal.SIGCONT)


def test_with_the_ring_a_stop_the_bridge_cannot_acknowledge_loses_nothing(make_config) -> None:
    cfg = make_config(GATEWAY.format(port=free_port()))
    with running_gateway(cfg):
        g = stop_gen_while_the_bridge_is_frozen(cfg)
        assert g["lost_at_stop"] == 0 and g["restarts"] >= 1
        ring = Path(cfg.runtime_dir) / "outbox" / "gen.ring"
        assert ring.exists()  # the next process took it over
        # the bridge takes the kept points (spooled: no NATS here), so the outbox empties
        wait_for(lambda: status(cfg)["by_name"]["bridge"]["buffered"] > 100, 30, "handed over")
        assert status(cfg)["by_name"]["gen"]["lost_at_stop"] == 0


def test_points_unacknowledged_at_a_stop_are_counted(make_config) -> None:
    cfg = without_ring(make_config(GATEWAY.format(port=free_port())))
    with running_gateway(cfg):
        g = stop_gen_while_the_bridge_is_frozen(cfg)
        assert g["lost_at_stop"] > 100, g
        assert g["restarts"] >= 1
    # the gateway's own stop may lose a few more on a loaded machine (its drain is
    # bounded): what the next run must show is what this one saved
    lost = load_losses(Path(cfg.data_dir) / "losses.json")["gen"]
    assert lost >= g["lost_at_stop"]
    with running_gateway(cfg) as rt:  # a new run of the gateway: the count is still there
        snap = wait_for(lambda: status(cfg), 15, "status")
        assert snap["by_name"]["gen"]["lost_at_stop"] == lost
        assert f"lost at stop {lost}" in format_status(snap)
        # a reload that restarts gen with a new config: the count is the actor's
        pid = wait_for(lambda: status(cfg)["by_name"]["gen"]["pid"], 15, "gen running")
        path = Path(cfg.path)
        path.write_text(path.read_text().replace("rate = 500.0", "rate = 400.0"))
        rt.reload()
        g = wait_for(
            lambda: (g := status(cfg)["by_name"]["gen"])["pid"] not in (None, pid) and g,
            30,
            "gen restarted by the reload",
        )
        assert g["lost_at_stop"] >= lost, g


def test_points_kept_for_an_actor_a_reload_removes_are_counted(make_config) -> None:
    """The stopped driver's kept outbox has no next process to send it once a reload
    removed the driver: what it held is lost, counted under its name in the status
    (its row is gone) and in `edgert status`, and still counted after a restart."""
    keeper = '\n[[driver]]\nname = "keep"\ntype = "edgert.testing:FaultActor"\nrate = 1.0\n'
    cfg = make_config(GATEWAY.format(port=free_port()) + keeper)
    path = Path(cfg.path)
    with running_gateway(cfg) as rt:

        def all_running() -> dict | None:
            actors = status(cfg)["by_name"]
            return actors if all(x["state"] == "running" for x in actors.values()) else None

        a = wait_for(all_running, 15, "gen, keep and bridge running")
        assert status(cfg)["removed_lost_at_stop"] == {}
        bridge = a["bridge"]["pid"]
        os.kill(bridge, signal.SIGSTOP)
        try:
            held = wait_for(
                lambda: (n := status(cfg)["by_name"]["gen"]["buffered"]) > 100 and n,
                15,
                "unacknowledged points",
            )
            path.write_text(path.read_text().split("[[driver]]")[0] + keeper)
            rt.reload()
            snap = wait_for(
                lambda: "gen" not in (s := status(cfg))["by_name"] and s, 30, "gen removed"
            )
        finally:
            os.kill(bridge, signal.SIGCONT)
        lost = snap["removed_lost_at_stop"]["gen"]
        assert lost >= held, (lost, held)
        assert not (Path(cfg.runtime_dir) / "outbox" / "gen.ring").exists()
        assert f"lost at stop by removed actors: gen {lost}" in format_status(snap)
    with running_gateway(load(cfg.path)):  # a new run of the gateway: still counted
        snap = wait_for(lambda: status(cfg), 15, "status")
        assert snap["removed_lost_at_stop"] == {"gen": lost}


def test_points_left_by_an_actor_no_longer_configured_are_counted_at_start(make_config) -> None:
    """A ring file whose actor left the config while the gateway was down: dropped at
    start, its points counted under the actor's name like any loss at stop."""
    cfg = make_config(GATEWAY.format(port=free_port()))
    path = ring_path(cfg.runtime_dir, "gone")
    ring = Ring.open(path, "gone.1.a", 1 << 20)
    assert ring.append(
        b"".join(pack_points([Point("gone", "n", "0", i) for i in range(42)], {})), 42
    )
    ring.close()  # as a process that died left it
    with running_gateway(cfg):
        snap = wait_for(lambda: status(cfg), 15, "status")
        assert snap["removed_lost_at_stop"] == {"gone": 42}
        assert not path.exists()
