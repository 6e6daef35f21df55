"""The Run/Stop group: oklog/run semantics with threads."""

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
        self.ev.wait(10)
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
    assert a.returned


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
