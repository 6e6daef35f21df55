"""`Waker`: wakes a loop that waits on file descriptors, from any thread.

The loop's `run` creates it, polls `fileno()`, calls `clear()` after waking and
`close()` on the way out. `wake()` may come from another thread at any time,
before the loop made it or after it closed it: a closed Waker ignores it, so a
late wake never writes into a descriptor number the process has reused since.
"""

from __future__ import annotations

import os
import threading

__all__ = ["Waker"]


class Waker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
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
            os.close(self._r)
            os.close(self._w)
            self._r = self._w = -1
