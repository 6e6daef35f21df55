"""The `modbus` driver: one bus (RTU or ASCII serial, TCP, UDP, RTU over TCP or UDP), many devices.

Each `[[driver.device]]` is a unit id with its own register map; its values
become points with node = the device's name and type = the register's name,
next to its status points `online`, `errors_timeout`, `errors_crc` and
`errors_exception`. Commands to `writable` registers and coils are checked as
a whole, encoded with the register's type, order, scale and offset, written
(FC 5, 6, 15, 16), answered, and read back at once.

The loop waits on its inbox and on every open connection at once (one epoll
set, see `poller`): devices at different network addresses are polled side
by side, each connection and the serial line carrying one request at a time.
A stop waits for nothing; a command waits only for the request in flight on
the lines it writes to. Ports are opened in `run` and released when `run`
returns, whatever the reason.
"""

from __future__ import annotations

import contextlib
import ctypes

from edgert import Actor, Command, Context, Readable, Stop

from .config import ModbusConfig
from .poller import Poller

__all__ = ["ModbusDriver"]


class ModbusDriver(Actor[ModbusConfig]):
    """Modbus RTU/ASCII/TCP master: polls register maps, publishes points, writes commands."""

    @classmethod
    def nodes(cls, name: str, config: ModbusConfig | None) -> list[str]:
        """Its devices are the nodes it owns (commands to them come here)."""
        if config is None:
            return [name]
        return [d.name for d in config.device]

    def run(self, ctx: Context[ModbusConfig]) -> None:
        _tight_timers()
        poller = Poller(ctx.config, ctx)
        ctx.watch(poller.fd)
        try:
            while True:
                msg = ctx.receive(timeout=ctx.until(poller.next_wake()))
                match msg:
                    case Stop():
                        return
                    case Command():
                        ctx.reply(msg, poller.write(msg.points))
                    case Readable():
                        poller.readable()
                if poller.next_wake() <= ctx.now():  # answers never hold back what is due
                    poller.step()
        finally:
            ctx.unwatch(poller.fd)
            poller.close()


PR_SET_TIMERSLACK = 29


def _tight_timers() -> None:
    """Let this thread's sleeps end within microseconds of their time (Linux timer slack
    is 50 us by default): the inter-frame silence is 1.75 ms, so that would add 3 %."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)
