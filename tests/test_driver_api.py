"""The driver API: typed actors, `every`, bounds and docs on config fields, `report(now=...)`.

A driver declared as `Actor[Config]` gets its table decoded into `Config` and
runs in a real gateway; `every` keeps its slots on `start + k * interval` and
counts the ones a late loop skipped (a fake clock, no sleeps); a bound refuses
an out-of-range value naming file, table and key, and a typo in a driver's
field metadata is refused naming the field; `edgert drivers --keys` prints
each key's type, default and doc; a note from `ctx.report(now=...)` shows in
`edgert status`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import edgert
from edgert import Actor, Context, Invalid, Point, every
from edgert.actor import Readable, Status, Stop
from edgert.cli import cli
from edgert.config import ConfigError, check_fields, decode
from edgert.context import statuses
from edgert.control import format_status
from edgert.testing import wait_for
from edgert.timers import grid_after
from edgert_drivers.sim import SimConfig, SimDriver

# --- Actor[C] ----------------------------------------------------------------------


@dataclass
class MeterConfig:
    interval: float = field(default=1.0, metadata={"gt": 0, "doc": "seconds between reads"})
    unit: int = field(default=1, metadata={"min": 0, "max": 247})


def test_actor_of_a_config_class_decodes_its_table_into_that_class() -> None:
    class Meter(Actor[MeterConfig]):
        pass

    class Subclass(Meter):
        pass

    assert Meter.Config is MeterConfig and Subclass.Config is MeterConfig
    cfg = decode(Meter.Config, {"interval": 0.5}, "[[driver]] 'm'")
    assert cfg == MeterConfig(interval=0.5, unit=1)
    assert Meter(cfg, "m").config is cfg


def test_a_config_class_given_twice_must_be_the_same_one() -> None:
    class Same(Actor[MeterConfig]):
        Config = MeterConfig

    assert Same.Config is MeterConfig

    @dataclass
    class Other:
        x: int = 0

    with pytest.raises(TypeError, match=r"Config = .*Other but the class is Actor\[MeterConfig\]"):

        class Mixed(Actor[MeterConfig]):
            Config = Other


def test_the_config_class_must_be_a_dataclass() -> None:
    class NotData:
        pass

    with pytest.raises(
        TypeError, match=r"Actor\[.*NotData\]: the config class must be a dataclass"
    ):

        class Bad(Actor[NotData]):
            pass


def test_nodes_is_the_actors_name_unless_the_driver_says_otherwise(make_config) -> None:
    assert Actor.nodes("gen", None) == ["gen"]
    cfg = make_config(
        '[[driver]]\nname = "rs485"\ntype = "modbus"\nport = "/dev/null"\n'
        '[[driver.device]]\nname = "meter1"\nunit = 1\n'
        '[[driver.device]]\nname = "meter2"\nunit = 2\n'
    )
    from edgert.config import driver_nodes

    assert driver_nodes(cfg.drivers[0]) == ["meter1", "meter2"]


def test_the_package_gives_a_driver_its_names_without_loading_the_runtime() -> None:
    assert {"Actor", "Context", "Point", "Stop", "Command", "Status", "Readable"} <= set(
        edgert.__all__
    )
    assert edgert.Invalid is Invalid and edgert.every is every
    probe = "import json, sys, edgert; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert not loaded & {"asyncio", "sqlite3", "nats"}
    assert not loaded & {"edgert.runtime", "edgert.supervisor", "edgert.bridge", "edgert.spool"}
    assert edgert.Runtime.__module__ == "edgert.runtime"  # still importable, on first use


# --- a typed driver in a real gateway ----------------------------------------------------

TINY = '''
from dataclasses import dataclass, field

from edgert import Actor, Context, Point, Stop, every


@dataclass
class TinyConfig:
    interval: float = field(default=1.0, metadata={"gt": 0})
    label: str = "tiny"


class Tiny(Actor[TinyConfig]):
    """Counts every `interval` seconds."""

    def run(self, ctx: Context[TinyConfig]) -> None:
        cfg = ctx.config
        assert type(cfg) is TinyConfig and cfg is self.config
        ctx.report(now=f"{cfg.label} every {cfg.interval}s")
        tick = every(cfg.interval)
        n = 0
        while not isinstance(ctx.receive(timeout=ctx.until(tick.next)), Stop):
            if tick.due():
                ctx.publish(Point(ctx.name, "n", value=n))
                n += 1
'''


def test_a_typed_driver_runs_in_a_real_gateway_and_its_note_shows_in_status(
    short_dir: Path,
) -> None:
    (short_dir / "tiny_driver.py").write_text(TINY)
    gw = short_dir / "gw.toml"
    gw.write_text(
        f'[gateway]\nid = "gw"\nruntime_dir = "{short_dir}/run"\ndata_dir = "{short_dir}/data"\n'
        "[nats]\nenabled = false\n"
        '[[driver]]\nname = "t"\ntype = "tiny_driver:Tiny"\ninterval = 0.02\nlabel = "hello"\n'
    )
    env = dict(os.environ, PYTHONPATH=str(short_dir))
    edgert_cmd = [sys.executable, "-m", "edgert"]
    gateway = subprocess.Popen(
        [*edgert_cmd, "run", str(gw)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:

        def status_json() -> dict[str, Any] | None:
            r = subprocess.run(
                [*edgert_cmd, "status", "--config", str(gw), "--json"],
                env=env,
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                return None
            a = {x["name"]: x for x in json.loads(r.stdout)["actors"]}["t"]
            return a if a["state"] == "running" and a["points_out"] >= 5 else None

        a = wait_for(status_json, 30, "the typed driver running and publishing")
        assert a["restarts"] == 0 and a["stats"]["now"] == "hello every 0.02s"
        table = subprocess.run(
            [*edgert_cmd, "status", "--config", str(gw)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        row = next(line for line in table.splitlines() if line.startswith("t "))
        assert "hello every 0.02s" in row
    finally:
        gateway.send_signal(signal.SIGTERM)
        try:
            _, err = gateway.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            gateway.kill()
            _, err = gateway.communicate()
    assert gateway.returncode == 0, err.decode()


def test_the_now_note_leads_the_now_column() -> None:
    actor = {
        "name": "t",
        "pid": 1,
        "state": "running",
        "restarts": 0,
        "uptime": 3.0,
        "points_out": 0,
        "buffered": 0,
        "dropped": 2,
        "stats": {"now": "polling 3 devices"},
    }
    row = format_status({"gateway": "gw", "actors": [actor]}).splitlines()[2]
    assert "polling 3 devices; dropped 2" in row


# --- every --------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_every_fires_on_each_slot_and_starts_now_by_default() -> None:
    clock = FakeClock(100.0)
    tick = every(0.5, clock=clock)
    assert tick.next == 100.0 and tick.due()  # the first slot is now
    assert not tick.due() and tick.next == 100.5
    clock.t = 100.49
    assert not tick.due()
    clock.t = 100.5
    assert tick.due() and tick.next == 101.0 and tick.skipped == 0


def test_every_skips_the_slots_a_late_loop_missed_and_counts_them() -> None:
    clock = FakeClock(0.0)
    tick = every(1.0, start=1.0, clock=clock)  # the first slot one interval from now
    assert not tick.due()
    clock.t = 4.5  # slots 1, 2, 3 and 4 came: one poll, three skipped
    assert tick.due()
    assert tick.skipped == 3 and tick.taken == 4 and tick.next == 5.0
    assert not tick.due()
    clock.t = 5.0
    assert tick.due() and tick.skipped == 3


def test_every_does_not_drift() -> None:
    """Slots are start + k * interval: 100,000 of them later, not a summed error."""
    clock = FakeClock(1000.0)
    tick = every(0.1, clock=clock)
    summed = 1000.0
    for _ in range(100_000):
        clock.t = tick.next
        assert tick.due()
        summed += 0.1
    assert tick.next == 1000.0 + 100_000 * 0.1
    assert abs(summed - tick.next) > 1e-9  # what adding up the interval would have done
    assert tick.skipped == 0


def test_every_take_hands_out_every_slot_that_came_with_a_limit() -> None:
    clock = FakeClock(0.0)
    gen = every(0.25, clock=clock)
    clock.t = 1.0  # slots 0, 0.25, 0.5, 0.75 and 1.0
    assert gen.take(limit=2) == 2 and gen.next == 0.5
    assert gen.take() == 3 and gen.next == 1.25
    assert gen.take() == 0 and gen.skipped == 0


def test_every_fires_on_a_slot_that_division_would_round_down() -> None:
    clock = FakeClock(1000.0)
    tick = every(0.1, clock=clock)
    assert (tick.at(3) - tick.start) / 0.1 < 3  # 2.99999999999954...: floor() says slot 2
    clock.t = tick.at(3)
    assert tick.take() == 4 and tick.next == tick.at(4)  # slots 0, 1, 2 and 3
    clock.t = tick.at(4)
    assert tick.due() and tick.skipped == 0


def test_every_puts_its_slots_on_the_grid_of_its_interval() -> None:
    """Made at any moment, a timer's slots are the multiples of its interval: the
    newest one has come (the first poll is now), the next is the following multiple."""
    clock = FakeClock(100.3)
    tick = every(0.5, clock=clock)
    assert tick.start == 100.0 and tick.due() and tick.skipped == 0
    assert not tick.due() and tick.next == 100.5
    clock.t = 7.0  # exactly on a multiple: that slot is the first
    tick = every(0.25, clock=clock)
    assert tick.start == 7.0 and tick.take() == 1 and tick.next == 7.25


def test_every_shares_its_grid_with_the_timers_of_other_processes() -> None:
    """Timers of one interval made in two processes at different moments fall on the
    same instants (the monotonic clock is the host's), so their actors wake together."""
    code = "from edgert import every; print(repr(every(0.25).next))"
    theirs = float(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
    )
    ours = every(0.25)
    k = round((ours.next - theirs) / 0.25)
    assert k >= 0 and abs(ours.next - (theirs + k * 0.25)) < 1e-6


def test_grid_after_is_the_next_multiple_of_the_interval() -> None:
    """Periodic work of the runtime (the bridge's clock readings) wakes on the same
    grid as the actors' timers: the next multiple of its interval, never now."""
    assert grid_after(100.3, 0.5) == 100.5
    assert grid_after(100.0, 0.5) == 100.5  # on a multiple: the next one
    assert grid_after(7.0, 10.0) == 10.0
    tick = every(2.0, clock=FakeClock(41.0))
    assert tick.due() and grid_after(41.0, 2.0) == tick.next  # the slot after the first


def test_every_refuses_an_interval_that_is_not_positive() -> None:
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="interval must be a positive number"):
            every(bad)


def test_every_sets_the_timeout_of_receive() -> None:
    ctx = Context(Actor(), name="t")
    try:
        tick = every(0.2, start=ctx.now() + 0.2)
        left = ctx.until(tick.next)
        assert left is not None and 0 < left <= 0.2
        assert ctx.receive(timeout=ctx.until(tick.next)) is None
        assert tick.due()
    finally:
        ctx._close()


def test_statuses_yields_the_snapshots_until_stop() -> None:
    """The inbox of an asyncio runtime actor (bridge, fleet): each Status's snapshot,
    nothing else, and the iteration ends when the actor is stopped."""
    actor = Actor()
    ctx = Context(actor, name="t")
    ctx._queue.extend([Status({"n": 1}), Readable(0), Status({"n": 2})])

    async def take() -> list[dict]:
        got = []
        async for snapshot in statuses(ctx):
            got.append(snapshot)
            if len(got) == 2:
                actor.stop()  # from the loop, as the runtime's signal would
        return got

    try:
        assert asyncio.run(asyncio.wait_for(take(), 10)) == [{"n": 1}, {"n": 2}]
    finally:
        ctx._close()


# --- bounds and metadata ------------------------------------------------------------------


def test_bounds_refuse_values_out_of_range_naming_file_table_and_key(make_config) -> None:
    cases = [
        ("rate = 2000000.0", "key 'rate' must be <= 1000000, got 2000000.0"),
        ("rate = 0", "key 'rate' must be > 0, got 0.0"),
        ("period = -1", "key 'period' must be > 0"),
    ]
    for line, message in cases:
        with pytest.raises(ConfigError) as e:
            make_config(
                f'[[driver]]\nname = "gen"\ntype = "sim"\n[[driver.signal]]\nname = "x"\n{line}\n'
            )
        assert "gw.toml: [[driver]] 'gen'" in str(e.value)
        assert message in str(e.value)


def test_all_four_bounds_and_name_are_checked() -> None:
    @dataclass
    class C:
        a: int = field(default=0, metadata={"min": 0})
        b: float = field(default=0.5, metadata={"lt": 1})
        c: int | None = field(default=None, metadata={"max": 9})
        d: str = field(default="x", metadata={"name": True})

    assert decode(C, {"a": 0, "b": 0.9, "c": None}, "t") == C(0, 0.9, None, "x")
    for key, value, message in [
        ("a", -1, "key 'a' must be >= 0, got -1"),
        ("b", 1, "key 'b' must be < 1, got 1.0"),
        ("c", 10, "key 'c' must be <= 9, got 10"),
        ("d", "a.b", "key 'd' value 'a.b' may contain only letters"),
    ]:
        with pytest.raises(ConfigError, match=f"^t: {message}"):
            decode(C, {key: value}, "t")


def test_an_unknown_metadata_key_is_refused_naming_the_field() -> None:
    @dataclass
    class Typo:
        rate: float = field(default=1.0, metadata={"mx": 10})

    with pytest.raises(TypeError, match=r"Typo\.rate: unknown field metadata key 'mx' \(known: "):
        check_fields(Typo)
    with pytest.raises(TypeError, match="unknown field metadata key 'mx'"):
        decode(Typo, {}, "t")
    with pytest.raises(TypeError, match=r"Typo\.rate: unknown field metadata key 'mx'"):

        class Driver(Actor[Typo]):
            pass


@dataclass
class Item:
    name: str = field(metadata={"nmae": True})


@dataclass
class Outer:
    item: list[Item] = field(default_factory=list)


def test_a_typo_in_a_nested_table_is_found_when_the_driver_is_defined() -> None:
    with pytest.raises(TypeError, match=r"Item\.name: unknown field metadata key 'nmae'"):

        class Driver(Actor[Outer]):
            pass


def test_bounds_must_be_numbers_on_number_fields() -> None:
    @dataclass
    class StrBound:
        x: int = field(default=0, metadata={"min": "0"})

    @dataclass
    class BoundOnStr:
        s: str = field(default="", metadata={"max": 3})

    @dataclass
    class NameOnInt:
        n: int = field(default=0, metadata={"name": True})

    @dataclass
    class DocNotStr:
        n: int = field(default=0, metadata={"doc": 3})

    with pytest.raises(TypeError, match=r"StrBound\.x: metadata 'min' must be a number, got '0'"):
        check_fields(StrBound)
    with pytest.raises(TypeError, match=r"BoundOnStr\.s: metadata 'max' needs a number field"):
        check_fields(BoundOnStr)
    with pytest.raises(TypeError, match=r"NameOnInt\.n: metadata 'name' must be True"):
        check_fields(NameOnInt)
    with pytest.raises(TypeError, match=r"DocNotStr\.n: metadata 'doc' must be a string"):
        check_fields(DocNotStr)


BROKEN = """
from dataclasses import dataclass, field
from edgert import Actor

@dataclass
class Cfg:
    rate: float = field(default=1.0, metadata={"minimum": 0})

class Broken(Actor[Cfg]):
    pass
"""


def test_a_driver_with_a_metadata_typo_is_a_config_error_naming_the_driver(
    make_config, short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (short_dir / "broken_driver.py").write_text(BROKEN)
    monkeypatch.syspath_prepend(str(short_dir))
    with pytest.raises(ConfigError) as e:
        make_config('[[driver]]\nname = "b"\ntype = "broken_driver:Broken"\n')
    msg = str(e.value)
    assert "gw.toml: [[driver]] 'b': key 'type'" in msg
    assert "Cfg.rate: unknown field metadata key 'minimum'" in msg


def test_a_check_raises_invalid_from_edgert() -> None:
    @dataclass
    class Pair:
        low: int = 0
        high: int = 1

        def check(self) -> None:
            if self.high < self.low:
                raise Invalid("high", f"must be >= low ({self.low})")

    with pytest.raises(ConfigError, match=r"^t: key 'high': must be >= low \(5\)$"):
        decode(Pair, {"low": 5, "high": 1}, "t")


# --- edgert drivers --keys ----------------------------------------------------------------


def test_drivers_keys_prints_types_bounds_defaults_and_docs() -> None:
    r = CliRunner().invoke(cli, ["drivers", "--keys", "sim"])
    assert r.exit_code == 0, r.output
    out = r.output.splitlines()
    assert out[0].startswith("sim: edgert_drivers.sim:SimDriver")
    assert '[[driver]]  (type = "sim"; also name, type, restart' in r.output
    assert "  signal = array of tables [[driver.signal]], default []" in out
    i = out.index("[[driver.signal]]")
    keys = [line.split(" = ")[0].strip() for line in out[i + 1 :] if not line.startswith("    ")]
    assert keys == ["name", "shape", "min", "max", "period", "rate", "writable"]
    assert "  name = string (letters, digits, _ and -), required" in out
    assert '  shape = "sine" | "ramp" | "random" | "counter", default "sine"' in out
    j = out.index("  rate = number (> 0, <= 1000000), default 1.0")
    assert out[j + 1].strip() == "points per second (1,000,000: as fast as the gateway takes them)"
    assert "  writable = boolean, default false" in out


@pytest.mark.parametrize("type_name", ["gpio", "modbus"])
def test_drivers_keys_works_for_every_shipped_driver(type_name: str) -> None:
    r = CliRunner().invoke(cli, ["drivers", "--keys", type_name])
    assert r.exit_code == 0, r.output
    assert f'[[driver]]  (type = "{type_name}"' in r.output


def test_drivers_keys_of_an_unknown_type_is_a_usage_error() -> None:
    r = CliRunner().invoke(cli, ["drivers", "--keys", "nope"])
    assert r.exit_code == 2
    assert "unknown driver type 'nope'" in r.output


# --- the sim driver -----------------------------------------------------------------------


class CountingContext(Context[SimConfig]):
    """Counts wake-ups (receive returning None) and publish calls; keeps the points."""

    def __init__(self, actor: SimDriver, config: SimConfig) -> None:
        super().__init__(actor, name="gen", config=config)
        self.points: list[Point] = []
        self.calls = 0
        self.wakes = 0

    def publish(self, points: list[Point] | Point) -> None:
        self.calls += 1
        self.points.extend([points] if isinstance(points, Point) else points)

    def receive(self, timeout: float | None = None) -> Any:
        msg = super().receive(timeout)
        if msg is None:
            self.wakes += 1
        return msg


def test_sim_publishes_each_point_alone_without_waking_per_point_and_never_skips() -> None:
    cfg = decode(
        SimConfig,
        {"signal": [{"name": "c", "shape": "counter", "rate": 2000.0}]},
        "[[driver]] 'gen'",
    )
    actor = SimDriver(cfg, "gen")
    ctx = CountingContext(actor, cfg)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            actor.run(ctx)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    thread = threading.Thread(target=target)
    t0 = ctx.now()
    thread.start()
    try:
        wait_for(lambda: len(ctx.points) >= 600, 30, "600 points")
    finally:
        actor.stop()
        thread.join(30)
        elapsed = ctx.now() - t0
        ctx._close()
    assert not errors and not thread.is_alive()
    values = [p.value for p in ctx.points]
    assert values == list(range(len(values)))  # a counter never skips
    assert ctx.calls == len(ctx.points)  # one publish call per point
    assert ctx.wakes <= elapsed / 0.01 + 2  # never more than one wake-up per 10 ms
    times = [p.time for p in ctx.points]
    assert times == sorted(times) and len(set(times)) == len(times)  # each its own slot time


def test_beat_sends_a_heartbeat_due_soon_and_moves_the_wait_for_it() -> None:
    """An asyncio runtime actor awake in another task (the bridge taking batches)
    sends its heartbeat when it is due soon, and the inbox's wait is moved to the
    next one: the loop does not wake again for the one just sent."""
    from edgert.context import HB_PHASE
    from edgert.proc.link import Link, decode_link

    ours, theirs = Link.pair()
    actor = Actor()
    ctx = Context(actor, name="t", link=ours, heartbeat_interval=2.0)

    def beats() -> int:
        n = 0
        while theirs.poll(0):
            n += decode_link(theirs.recv_bytes())[0] == "hb"
        return n

    async def run() -> None:
        waiting = asyncio.create_task(ctx.areceive())
        await asyncio.sleep(0)
        assert beats() == 1  # the first, at once
        assert ctx._atimeout is not None
        assert ctx._atimeout.when() == pytest.approx(ctx._next_hb, abs=0.01)
        ctx.beat()  # not due soon: nothing
        assert beats() == 0
        ctx._next_hb = time.monotonic() + 0.2  # now it is
        ctx.beat()
        assert beats() == 1
        nxt = ctx._next_hb
        now = time.monotonic()
        assert now + 0.5 - 0.01 <= nxt <= now + 2.5  # not due soon again: a later one
        assert round((nxt - HB_PHASE) / 2.0, 6).is_integer()  # on the grid, HB_PHASE after
        assert ctx._atimeout.when() == nxt  # the wait moved on with it
        actor.stop()
        ctx._wake()
        assert isinstance(await asyncio.wait_for(waiting, 10), Stop)

    try:
        asyncio.run(run())
    finally:
        ctx._close()
        ours.close()
        theirs.close()


def test_a_full_speed_signal_makes_what_the_credit_allows_with_times_spread_to_now() -> None:
    """Not one point a microsecond slot: a burst of n points whatever the time since the
    last, their times evenly spread over it, increasing across bursts, never past
    the newest by more than the burst's own nanoseconds; a counter counts on."""
    from edgert_drivers.sim.driver import FULL_SPEED, Signal, _Gen

    g = _Gen(Signal("n", shape="counter", rate=FULL_SPEED))
    wall = 1_700_000_000 * 10**9
    v1, t1 = g.burst(5_000, 1.0, wall)  # the first: 1 ns apart, ending at now
    assert list(v1) == list(range(5_000)) and t1[-1] == wall + 10**9 and t1.step == 1
    v2, t2 = g.burst(4, 1.002, wall)  # 2 ms later, 4 points (fewer than the 2,000 slots)
    assert list(v2) == [5_000, 5_001, 5_002, 5_003]
    assert t2[0] > t1[-1] and t2[-1] == wall + int(1.002 * 1e9) and t2.step == 500_000
    v3, t3 = g.burst(20_000, 1.002001, wall)  # 1 µs later, 20,000: more than one a ns
    assert t3[0] == t2[-1] + 1 and list(t3) == sorted(set(t3)) and len(v3) == 20_000
    s = _Gen(Signal("s", shape="sine", min=0.0, max=1.0, rate=FULL_SPEED))
    vals, times = s.burst(3, 2.0, wall)
    assert len(vals) == 3 and all(0.0 <= v <= 1.0 for v in vals)
