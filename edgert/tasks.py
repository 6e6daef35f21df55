"""Ending the asyncio tasks of a runtime actor (bridge, fleet) at Stop, for sure.

`Task.cancel` only asks: code the cancellation lands in may swallow it (on
Python 3.11 `asyncio.wait_for` returns a result that came at the same moment
as the cancellation; the NATS client catches CancelledError in places), and a
task that did runs on, so the actor never returns from Stop and is killed.
`cancel_all` asks again until every task has ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_all", "RECANCEL"]

RECANCEL = 0.1  # seconds between cancellations of a task that has not ended


async def cancel_all(
    tasks: Iterable[asyncio.Task[Any]],
    every: float = RECANCEL,
    log: logging.Logger | None = None,
) -> None:
    """Cancel `tasks` and return once every one has ended, cancelling again every
    `every` seconds those that have not (logged at DEBUG)."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=every)
        if pending and log is not None:
            names = ", ".join(sorted(_name(t) for t in pending))
            log.debug("stop: %s swallowed its cancellation; cancelling again", names)


def _name(task: asyncio.Task[Any]) -> str:
    """What the task runs (its coroutine's name), for the log."""
    return getattr(task.get_coro(), "__qualname__", task.get_name())
