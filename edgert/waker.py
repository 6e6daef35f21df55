"""`Waker`: wakes a loop that waits on file descriptors, from any thread.

The loop's `run` creates it, polls `fileno()`, calls `clear()` after waking and
`close()` on the way out. `wake()` may come from another thread at any time,
before the loop made it or after it closed it: a closed Waker ignores it, so a
late wake never writes into a descriptor number the process has reused since.
It may also come from a signal handler that interrupted a `wake()` or `close()`
in the same thread (a second SIGTERM while the first one's handler wakes the
loop): the lock is reentrant, and `close()` forgets the descriptors before it
closes them.
"""

from __future__ import annotations

import os
import threading

__all__ = ["Waker"]


class Waker:
    def __init__(self) -> None:
        self._lock = threading.RLock()  # a signal handler may wake inside a wake
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def fileno(self) -> int:
        return self._r

    def wake(self) -> None:
        with self._lock:
            if self._w < 0:
                return
            try:
                os.write(self._w, b"\0")
            except BlockingIOError:  # full: the loop has been woken already
                pass

    def clear(self) -> None:
        try:
            while os.read(self._r, 512):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        with self._lock:
            if self._w < 0:
                return
            r, w = self._r, self._w
            self._r = self._w = -1  # first: a wake from a signal handler in between ignores it
            os.close(r)
            os.close(w)
