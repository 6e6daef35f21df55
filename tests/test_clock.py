"""A gateway without a real-time clock: the clock's state in status, points read
before the sync held in the spool for it (`[gateway] clock_hold`), `Edgert-Clock`
headers while it is not synchronized, and times corrected when it steps into sync.

The gateway reads the clock's state through `[gateway] clock = "file:PATH"`, the
same interface as the kernel's (`adjtimex`), so a test can make it unsynchronized
and step it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgert.cli import cli
from edgert.clock import ClockReading, ClockWatch
from edgert.testing import running_gateway, status, wait_for
from edgert.testing.nats import LinkProxy, NatsProcess, Subscriber, decode

HOUR = 3600 * 10**9
GEN = '[[driver]]\nname = "gen"\ntype = "sim"\n[[driver.signal]]\nname = "n"\nshape = "counter"\nrate = 20.0\n'


def set_clock(path: Path, synced: bool, shift_ns: int = 0, boot_id: str | None = None) -> None:
    d: dict = {"synced": synced, "shift_ns": shift_ns}
    if boot_id is not None:
        d["boot_id"] = boot_id
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(d))
    tmp.replace(path)


def bridge(cfg) -> dict:
    return status(cfg)["by_name"]["bridge"]["stats"]


def config(make_config, short_dir: Path, url: str, hold: str = "2m"):
    clock = short_dir / "clock.json"
    set_clock(clock, synced=False)
    cfg = make_config(f'[nats]\nurl = "{url}"\nencoding = "json"\n' + GEN)
    gateway = f'id = "gw"\nclock = "file:{clock}"\nclock_hold = "{hold}"'
    text = Path(cfg.path).read_text().replace('id = "gw"', gateway)
    Path(cfg.path).write_text(text)
    from edgert.config import load

    return load(cfg.path), clock


def test_a_step_while_unsynchronized_corrects_only_what_was_stamped_before_it() -> None:
    boot = 1_000 * 10**9  # the wall clock at boot (monotonic 0), before the sync
    watch = ClockWatch(ClockReading(False, boot))
    mono = 5 * 10**9
    old_wall = boot + mono
    assert watch.update(ClockReading(False, boot), mono - 10**9) is None
    step = watch.update(ClockReading(True, boot + HOUR), mono)
    assert step is not None and step.delta_ns == HOUR and step.old_wall_ns == old_wall
    assert watch.synced and watch.state == "synchronized"
    before = [{"time": old_wall - 10**9}, {"time": old_wall - 1}, {"time": boot}]
    assert watch.fix(before) == 3 and watch.corrected == 3
    assert [m["time"] for m in before] == [
        old_wall - 10**9 + HOUR,
        old_wall - 1 + HOUR,
        boot + HOUR,
    ]
    after = [{"time": old_wall + HOUR + 5}]  # stamped after the step: left alone
    assert watch.fix(after) == 0 and after[0]["time"] == old_wall + HOUR + 5
    earlier_boot = [{"time": boot - 1}]  # stamped before this boot, on another clock
    assert watch.fix(earlier_boot) == 0 and earlier_boot[0]["time"] == boot - 1
    # a step of a clock already synchronized (someone set the date) is not "the sync"
    assert watch.update(ClockReading(True, boot + 2 * HOUR), mono) is None
    assert watch.steps == [step]


def test_a_backward_step_moves_no_point_stamped_after_it() -> None:
    boot = 10**12  # the wall clock at boot, 10 s fast
    watch = ClockWatch(ClockReading(False, boot))
    mono = 1_000 * 10**9
    step = watch.update(ClockReading(True, boot - 10 * 10**9), mono)
    assert step is not None and step.delta_ns == -10 * 10**9
    old_wall = boot + mono
    before = [{"time": old_wall - 2 * 10**9}]  # read at uptime 998 s, taken before the step
    assert watch.fix(before, 0) == 1 and before[0]["time"] == old_wall - 12 * 10**9
    # read at uptime 1005 s, on the corrected clock (995 s): in the step's range, but
    # taken after the step, so it is left alone
    after = [{"time": boot + 995 * 10**9}]
    assert watch.fix(after, 1) == 0 and after[0]["time"] == boot + 995 * 10**9
    # taken after the step but read before it, well before: still corrected
    early = [{"time": boot + 500 * 10**9}]
    assert watch.fix(early, 1) == 1 and early[0]["time"] == boot + 490 * 10**9
    assert watch.corrected == 2


def test_a_forward_step_still_corrects_points_taken_in_just_after_it() -> None:
    boot = 10**12
    watch = ClockWatch(ClockReading(False, boot))
    watch.update(ClockReading(True, boot + HOUR), 10 * 10**9)
    late = [{"time": boot + 9 * 10**9}]  # read before the step, taken in after it
    assert watch.fix(late, 1) == 1 and late[0]["time"] == boot + 9 * 10**9 + HOUR


def test_unsynchronized_points_carry_the_header_and_status_says_so(
    make_config, short_dir: Path, nats_server: NatsProcess
) -> None:
    cfg, clock = config(make_config, short_dir, nats_server.url, hold="0")  # no hold
    with Subscriber(nats_server.url, "edgert.gw.p.gen") as sub, running_gateway(cfg):
        wait_for(lambda: bridge(cfg).get("clock_unsynced_out", 0) > 0, 20, "unsynced sent")
        assert bridge(cfg)["clock"] == "unsynchronized"
        wait_for(lambda: sub.messages, 10, "points on NATS")
        assert all(m.headers.get("Edgert-Clock") == "unsynced" for m in sub.messages)
        r = CliRunner().invoke(cli, ["status", "--runtime-dir", str(cfg.runtime_dir)])
        assert "clock unsynchronized" in r.output  # the bridge's NOW column
        set_clock(clock, synced=True)  # synchronized, no step: headers stop
        wait_for(lambda: bridge(cfg)["clock"] == "synchronized", 10, "synchronized")
        n = len(sub.messages)
        wait_for(lambda: len(sub.messages) > n + 3, 10, "more points")
        assert "Edgert-Clock" not in sub.messages[-1].headers


def test_points_spooled_before_the_sync_leave_with_corrected_times(
    make_config, short_dir: Path, nats_server: NatsProcess
) -> None:
    # The subscriber listens before the link opens, so the spool's first publish is seen.
    with LinkProxy(nats_server.port) as link, Subscriber(nats_server.url, "edgert.gw.p.gen") as sub:
        link.cut()  # no uplink yet
        cfg, clock = config(make_config, short_dir, f"nats://127.0.0.1:{link.port}")
        t0 = time.time_ns()
        with running_gateway(cfg):
            wait_for(lambda: status(cfg)["by_name"]["bridge"]["buffered"] > 20, 20, "spooled")
            # NTP arrives: the true time is an hour later than the clock said
            set_clock(clock, synced=True, shift_ns=HOUR)
            wait_for(lambda: bridge(cfg)["clock"] == "synchronized", 10, "synchronized")
            t_sync = time.time_ns()
            link.restore()
            wait_for(
                lambda: any("Edgert-Clock" not in m.headers for m in sub.messages),
                20,
                "the spool drained and new points came",
            )
            corrected = [m for m in sub.messages if m.headers.get("Edgert-Clock") == "corrected"]
            assert corrected, [m.headers for m in sub.messages[:3]]
            for m in corrected:
                for p in decode(m):
                    assert t0 + HOUR <= p["time"] <= t_sync + HOUR, p  # moved by the step
            for m in sub.messages:
                if "Edgert-Clock" not in m.headers:
                    assert all(p["time"] < t_sync + HOUR // 2 for p in decode(m))
            moved = sum(len(decode(m)) for m in corrected)
            wait_for(lambda: bridge(cfg)["clock_corrected"] >= moved, 10, "counted")


def test_points_spooled_in_an_earlier_boot_keep_their_times(
    make_config, short_dir: Path, nats_server: NatsProcess
) -> None:
    with LinkProxy(nats_server.port) as link, Subscriber(nats_server.url, "edgert.gw.p.gen") as sub:
        link.cut()  # no uplink in either boot: everything waits in the spool
        cfg, clock = config(make_config, short_dir, f"nats://127.0.0.1:{link.port}", hold="0")
        set_clock(clock, synced=False, boot_id="boot-1")
        with running_gateway(cfg):
            wait_for(lambda: status(cfg)["by_name"]["bridge"]["buffered"] > 10, 20, "spooled")
        t_reboot = time.time_ns()
        set_clock(clock, synced=False, boot_id="boot-2")  # a reboot, not synchronized yet
        with running_gateway(cfg):
            wait_for(lambda: bridge(cfg)["points_in"] > 10, 20, "points of this boot")
            set_clock(clock, synced=True, shift_ns=HOUR, boot_id="boot-2")
            wait_for(lambda: bridge(cfg)["clock"] == "synchronized", 10, "synchronized")
            link.restore()
            wait_for(
                lambda: (
                    any("Edgert-Clock" not in m.headers for m in sub.messages)
                    and any(m.headers.get("Edgert-Clock") == "corrected" for m in sub.messages)
                ),
                20,
                "both boots' points out",
            )
            earlier = [m for m in sub.messages if all(p["time"] < t_reboot for p in decode(m))]
            assert earlier  # the earlier boot's points, with the times they had...
            assert all("Edgert-Clock" not in m.headers for m in earlier)  # ...not "corrected"
            for m in sub.messages:  # and none moved by this boot's step
                assert all(
                    not t_reboot - HOUR // 2 < p["time"] - HOUR < t_reboot for p in decode(m)
                )


def values(messages) -> list[int]:
    return [p["value"] for m in messages for p in decode(m)]


def test_points_read_before_the_sync_wait_in_the_spool_with_nats_up_then_leave_corrected(
    make_config, short_dir: Path, nats_server: NatsProcess
) -> None:
    with Subscriber(nats_server.url, "edgert.gw.p.gen") as sub:
        cfg, clock = config(make_config, short_dir, nats_server.url, hold="10m")
        t0 = time.time_ns()
        with running_gateway(cfg):
            b = wait_for(  # held, and in the spool: one status shows both
                lambda: (
                    (b := bridge(cfg))["nats"] == "connected"
                    and b["clock_held"] > 20
                    and b["buffered"] > 0
                    and b
                ),
                20,
                "points held with NATS up",
            )
            assert b["clock_holding"]
            assert sub.messages == []  # NATS is up, yet nothing left
            # NTP arrives: the true time is an hour later than the clock said
            set_clock(clock, synced=True, shift_ns=HOUR)
            wait_for(lambda: bridge(cfg)["clock"] == "synchronized", 10, "synchronized")
            t_sync = time.time_ns()
            wait_for(
                lambda: any("Edgert-Clock" not in m.headers for m in sub.messages),
                20,
                "the held points out, then new ones",
            )
            held = bridge(cfg)["clock_held"]
            corrected = [m for m in sub.messages if m.headers.get("Edgert-Clock") == "corrected"]
            assert sum(len(decode(m)) for m in corrected) == held
            for m in corrected:
                for p in decode(m):
                    assert t0 + HOUR <= p["time"] <= t_sync + HOUR, p  # moved by the step
            assert all(m.headers.get("Edgert-Clock") != "unsynced" for m in sub.messages)
            got = values(sub.messages)
            assert got == list(range(len(got)))  # nothing lost, in order, none twice
            wait_for(  # the bridge's figures reach status with its next report
                lambda: (b := bridge(cfg))["clock_corrected"] == held and not b["clock_holding"],
                15,
                "the corrected points counted in status",
            )


def test_held_points_leave_unsynced_when_the_hold_expires(
    make_config, short_dir: Path, nats_server: NatsProcess, capfd: pytest.CaptureFixture[str]
) -> None:
    with Subscriber(nats_server.url, "edgert.gw.p.gen") as sub:
        # 5 s: time to see the points held with NATS up (a second or two under load), and
        # a hold that ends within the test
        cfg, clock = config(make_config, short_dir, nats_server.url, hold="5s")

        def held_and_nothing_out() -> bool:
            quiet = not sub.messages  # looked at first: nothing had come by then
            b = bridge(cfg)
            return b["nats"] == "connected" and b["clock_holding"] and b["clock_held"] > 0 and quiet

        with running_gateway(cfg):
            wait_for(held_and_nothing_out, 20, "points held with NATS up")
            wait_for(lambda: not bridge(cfg)["clock_holding"], 30, "the hold's end")
            wait_for(lambda: len(values(sub.messages)) > bridge(cfg)["clock_held"], 20, "out")
            b = bridge(cfg)
            assert b["clock"] == "unsynchronized" and b["clock_corrected"] == 0
            assert all(m.headers.get("Edgert-Clock") == "unsynced" for m in sub.messages)
            got = values(sub.messages)
            assert got == list(range(len(got)))  # nothing lost, in order, none twice
            wait_for(lambda: bridge(cfg)["clock_unsynced_out"] >= len(got), 10, "counted")
    said = [ln for ln in capfd.readouterr().err.splitlines() if "within clock_hold" in ln]
    assert len(said) == 1, said  # once, when the hold ran out


def test_a_part_taken_after_a_step_says_so_before_the_next_timed_reading(
    tmp_path: Path, short_dir: Path
) -> None:
    """Until the sync the bridge reads the clock at every turn of its bus: a part
    taken in after a step carries the step (its times are not corrected for it),
    though the timed reading is far off (an hour here)."""
    import zmq

    from edgert.bridge.actor import Bridge, BridgeConfig, _Run
    from edgert.bridge.forwarder import Forwarder
    from edgert.bus import p_frame
    from edgert.bus.outbox import pack_points
    from edgert.bus.ring import array_header
    from edgert.config import NatsSection
    from edgert.context import Context
    from edgert.point import Point

    clock = short_dir / "clock.json"
    set_clock(clock, synced=False)
    cfg = BridgeConfig("gw", str(short_dir), str(tmp_path), NatsSection(), clock=f"file:{clock}")
    cfg.clock_interval = 3600.0
    actor = Bridge(cfg, name="bridge")
    ctx = Context(actor, name="bridge", config=cfg)
    run = _Run(ctx)
    zctx = zmq.Context(1)
    try:
        run.router = zctx.socket(zmq.ROUTER)
        run.fwd = Forwarder(spooling=True)  # no NATS yet: parts wait in memory
        run.fwd.starting(time.monotonic(), 3600.0)

        def batch(seq: int) -> list[bytes]:
            maps = pack_points([Point("gen", "n", "0", seq, time.time_ns())], {})
            return [b"id", p_frame("e1", seq, 1, array_header(1) + b"".join(maps))]

        run.receive([batch(1)])
        set_clock(clock, synced=False, shift_ns=-HOUR)  # a step, not yet the sync
        run.receive([batch(2)])
        assert [p.steps for p in run.fwd.mem] == [0, 1]
        assert run.clock_watch.step_count == 1 and not run.clock_watch.synced
        set_clock(clock, synced=True, shift_ns=-HOUR)
        run.receive([batch(3)])  # the sync is seen at the turn too
        assert run.clock_watch.synced and run.clock_watch.step_count == 1
        run.receive([batch(4)])
        assert [p.steps for p in run.fwd.mem] == [0, 1, 1, 1]
    finally:
        run.router.close(0)
        zctx.term()
        ctx._close()
