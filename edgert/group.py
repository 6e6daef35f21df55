"""A Run/Stop group with oklog/run semantics.

`add(run, stop)` adds an actor: `run()` blocks until it is done, `stop(err)`
makes it return and returns at once. `Group.run()` starts every actor at once,
each in its own thread, with no order between them. The first actor to return
stops all the others (each `stop` is given the first error, or None); `run()`
waits for all to return and raises the first error, or returns None when the
first actor returned cleanly. `Group.stop()` stops them all from outside, at any
time, even before `run()`. Anything with Run/Stop fits, including a whole
gateway of actor processes (`Runtime.run`, `Runtime.stop`); inside a gateway the
`Supervisor` runs the processes in one loop of its own.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

__all__ = ["Group"]

RunFn = Callable[[], None]
StopFn = Callable[[BaseException | None], None]


class Group:
    def __init__(self) -> None:
        self._actors: list[tuple[RunFn, StopFn]] = []
        self._stopped = threading.Event()

    def add(self, run: RunFn, stop: StopFn) -> None:
        """Add an actor; must be called before `run()`."""
        self._actors.append((run, stop))

    def stop(self, err: BaseException | None = None) -> None:
        """Stop every actor; returns at once. Harmless before, during and after `run()`."""
        self._stopped.set()
        for _, stop in self._actors:
            stop(err)

    def run(self) -> None:
        if not self._actors:
            return
        done: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()

        def wrap(run: RunFn) -> None:
            try:
                run()
            except BaseException as e:  # noqa: BLE001 - handed to the group's caller
                done.put(e)
            else:
                done.put(None)

        threads = [
            threading.Thread(target=wrap, args=(run,), name=f"group-{i}", daemon=True)
            for i, (run, _) in enumerate(self._actors)
        ]
        for t in threads:
            t.start()
        if self._stopped.is_set():  # stop() before run(): stop again now they exist
            for _, stop in self._actors:
                stop(None)
        first = done.get()
        for _, stop in self._actors:
            stop(first)
        for _ in range(len(threads) - 1):
            done.get()
        for t in threads:
            t.join()
        if first is not None:
            raise first
