"""Telling systemd how the gateway is: readiness, liveness, stopping (sd_notify).

With `Type=notify` and `WatchdogSec=` in the unit, systemd passes
`NOTIFY_SOCKET` (and `WATCHDOG_USEC`) in the environment. The supervisor's own
loop then sends `READY=1` once every actor has reached `run`, `WATCHDOG=1` at
half the watchdog interval while the loop turns (so a wedged supervisor, which
no child can detect, is killed and restarted by systemd), a one-line `STATUS=`
when the actors' states change, and `STOPPING=1` on the way out. Without
`NOTIFY_SOCKET` every call does nothing. The protocol is one datagram per
message on a unix socket; no library is needed for it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier"]


class Notifier:
    """The systemd notification socket, or nothing when not run by systemd.

    Owned by the loop of the one who opened it (`Runtime.run`), which closes it.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._sock: socket.socket | None = None
        self._addr = ""
        self.watchdog_interval: float | None = None  # seconds between WATCHDOG=1
        self._next_watchdog = 0.0
        self._last_status = ""
        self._ready = False
        addr = env.get("NOTIFY_SOCKET", "")
        if not addr or addr[0] not in "/@":
            return
        self._addr = "\0" + addr[1:] if addr[0] == "@" else addr
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)  # a reader that stalls must never stall the supervisor
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2

    @property
    def active(self) -> bool:
        return self._sock is not None

    def send(self, message: str) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto(message.encode(), self._addr)
        except OSError:  # systemd went away or the socket is full: nothing to do about it
            pass

    def ready(self, status: str = "") -> None:
        """READY=1, the first time only: systemd reads it once."""
        if not self._ready:
            self._ready = True
            self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self.send(f"STATUS={text}")

    def tick(self, now: float) -> None:
        """Send WATCHDOG=1 when it is due (call it from the loop that must stay alive)."""
        if self.watchdog_interval is not None and now >= self._next_watchdog:
            self.send("WATCHDOG=1")
            self._next_watchdog = now + self.watchdog_interval

    @property
    def next_due(self) -> float | None:
        """Monotonic time by which `tick` must be called again; None without a watchdog."""
        return None if self.watchdog_interval is None else self._next_watchdog

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
