"""Running a driver inside the test's process, with what it publishes captured.

`run_driver(cls, table)` decodes the driver's config from a dict (the keys of a
`[[driver]]` table), runs `cls.run` in a thread with a `CapturedContext` for
the length of a `with` block, and stops it after (re-raising what `run`
raised). The `DriverRun` it yields shows the points published (`values`,
`latest`), the figures reported (`stats`), and sends commands (`command`),
waiting for their replies with a deadline.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

from edgert import Actor, Command, Context, Point
from edgert.config import decode

__all__ = ["CapturedContext", "DriverRun", "run_driver", "run_actor"]


class CapturedContext(Context):
    """A Context whose publish and reply land in lists instead of on a bus."""

    def __init__(self, actor: Actor, *, name: str, config: Any = None) -> None:
        super().__init__(actor, name=name, config=config)
        self.points: list[Point] = []
        self.replies: dict[int, str | None] = {}

    def publish(self, points: list[Point] | Point) -> None:
        self.points.extend([points] if isinstance(points, Point) else points)

    def reply(self, cmd: Command, error: str | None = None) -> None:
        self.replies[cmd.id] = error

    def send(self, cmd: Command) -> None:
        """Queue a command for the actor (from another thread) and wake it."""
        self._queue.append(cmd)
        self._wake()


class DriverRun:
    """A driver running in a thread; what it published so far."""

    def __init__(self, actor: Actor, ctx: CapturedContext, thread: threading.Thread) -> None:
        self.actor = actor
        self.ctx = ctx
        self.thread = thread
        self._ids = itertools.count(1)

    def points(self, node: str | None = None, type: str | None = None) -> list[Point]:
        return [
            p
            for p in list(self.ctx.points)
            if (node is None or p.node == node) and (type is None or p.type == type)
        ]

    def values(self, node: str, type: str) -> list[Any]:
        return [p.value for p in self.points(node, type)]

    def latest(self, node: str, type: str, default: Any = None) -> Any:
        v = self.values(node, type)
        return v[-1] if v else default

    def stats(self) -> dict[str, Any]:
        return dict(self.ctx._extra)

    def command(self, points: list[Point], timeout: float = 10.0) -> str | None:
        """Send a command; its reply (None: applied), or TimeoutError at the deadline."""
        cmd = Command(next(self._ids), points)
        self.ctx.send(cmd)
        deadline = time.monotonic() + timeout
        while cmd.id not in self.ctx.replies:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise TimeoutError(f"no reply to command {cmd.id} within {timeout:g} s")
            time.sleep(0.005)
        return self.ctx.replies[cmd.id]


@contextlib.contextmanager
def run_driver(cls: type[Actor], table: dict[str, Any], name: str = "bus") -> Iterator[DriverRun]:
    """Run driver `cls` configured by `table` in a thread for the block."""
    config = decode(cls.Config, table, f"[[driver]] {name!r}") if cls.Config else None
    with run_actor(cls(config, name), config, name) as run:
        yield run


@contextlib.contextmanager
def run_actor(actor: Actor, config: Any, name: str = "bus") -> Iterator[DriverRun]:
    """Run an actor made from a config already decoded in a thread for the block; an
    exception of its `run` is raised here at the end, and one that does not stop is an error."""
    ctx = CapturedContext(actor, name=name, config=config)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            actor.run(ctx)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)

    thread = threading.Thread(target=target, name=f"driver-{name}")
    thread.start()
    try:
        yield DriverRun(actor, ctx, thread)
    finally:
        actor.stop()
        thread.join(30)
        if thread.is_alive():
            raise TimeoutError(f"driver {name!r} did not stop")
        ctx._close()
    if errors:
        raise errors[0]
