"""A round trip to the NATS server that a timeout or a cancellation cannot break.

`nc.flush(timeout)` sends a PING and waits for its PONG. In nats-py (2.16 and
earlier) a flush that times out, or whose caller is cancelled, cancels the
future the PONG is to complete; when that PONG arrives, `set_result` on the
cancelled future raises `InvalidStateError` in the client's reader, which logs
it with a traceback and ends: the connection stays open but reads nothing
more, and nats-py does not reconnect it (nats-io/nats.py#624). A command
connection whose lag probe timed out during a flood went deaf that way.

`round_trip` starts the flush in a task of its own, with no timeout of its
own, and waits for that task (shielded) up to `timeout`. A late PONG then
completes a future that is still waiting, and the reader goes on. The task
ends when the PONG comes, or when the connection closes; an error it ends
with is read, never left to the loop's "exception never retrieved".

It also keeps the order a round trip is for. nats-py's `flush` writes its PING
straight to the socket, while a SUB or PUB made just before it still waits in
the client's buffer for the flusher task: the PONG can then come back before
the server has the subscription (a subscribe-then-flush lost the first message
of another connection in 6 tries of 100). The flush here runs in a task started
after the flusher was woken, so the flusher writes what waits first.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["round_trip"]

_NO_TIMEOUT = 365 * 86400.0  # nats-py requires one; the PONG or the close ends it first


async def round_trip(nc: Any, timeout: float) -> bool:
    """True when the server answered a PING within `timeout` seconds, False when not
    (yet). Raises what `nc.flush` raises at once (a closed connection)."""
    task = asyncio.ensure_future(nc.flush(timeout=_NO_TIMEOUT))
    task.add_done_callback(_read_outcome)
    try:
        async with asyncio.timeout(timeout):
            await asyncio.shield(task)
    except TimeoutError:
        return False
    return True


def _read_outcome(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()
