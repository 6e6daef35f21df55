"""The Run/Stop group: oklog/run semantics, with threads and with a gateway of processes."""

from __future__ import annotations

import threading

import pytest

from edgert.group import Group


class Blocker:
    """Blocks in run until stop; records the error it was stopped with."""

    def __init__(self) -> None:
        self.ev = threading.Event()
        self.stopped_with: list[BaseException | None] = []
        self.returned = False

    def run(self) -> None:
        self.timed_out = not self.ev.wait(10)
        self.returned = True

    def stop(self, err: BaseException | None = None) -> None:
        self.stopped_with.append(err)
        self.ev.set()


def test_first_return_stops_all() -> None:
    g = Group()
    a, b = Blocker(), Blocker()
    g.add(a.run, a.stop)
    g.add(b.run, b.stop)
    g.add(lambda: None, lambda err: None)  # returns at once
    g.run()
    assert a.returned and b.returned
    assert a.stopped_with and a.stopped_with[0] is None


def test_first_error_is_returned_and_given_to_the_others() -> None:
    g = Group()
    a = Blocker()
    boom = ValueError("boom")

    def fail() -> None:
        raise boom

    g.add(a.run, a.stop)
    g.add(fail, lambda err: None)
    with pytest.raises(ValueError, match="boom"):
        g.run()
    assert a.returned and a.stopped_with[0] is boom


def test_stop_before_run() -> None:
    g = Group()
    a = Blocker()
    g.add(a.run, a.stop)
    g.stop()
    g.run()  # returns at once instead of blocking
    assert a.returned and not a.timed_out


def test_stop_twice_and_after_run() -> None:
    g = Group()
    a = Blocker()
    g.add(a.run, a.stop)
    t = threading.Thread(target=g.run)
    t.start()
    g.stop()
    g.stop()
    t.join(10)
    assert not t.is_alive() and a.returned
    g.stop()  # after run returned: harmless


def test_empty_group_returns() -> None:
    Group().run()


def test_a_gateway_of_processes_runs_in_a_group_beside_a_thread(make_config) -> None:
    """Runtime.run/stop are a Run/Stop pair: an actor that fails stops the whole gateway."""
    from edgert.runtime import Runtime
    from edgert.testing import pid_alive, status, wait_for

    cfg = make_config(
        '[nats]\nenabled = false\n[[driver]]\nname = "gen"\ntype = "sim"\n'
        '[[driver.signal]]\nname = "n"\nrate = 20.0\n'
    )
    rt = Runtime(cfg)
    watcher = Blocker()
    seen: list[int] = []

    def watch() -> None:  # fails once the driver has published
        a = wait_for(lambda: (a := status(cfg)["by_name"]["gen"])["points_out"] >= 5 and a, 20, "")
        seen.append(a["pid"])
        raise RuntimeError("watcher saw enough")

    g = Group()
    g.add(rt.run, rt.stop)
    g.add(watch, watcher.stop)
    with pytest.raises(RuntimeError, match="watcher saw enough"):
        g.run()
    assert seen and not pid_alive(seen[0])
    assert not (cfg.runtime_dir / "control.sock").exists()
