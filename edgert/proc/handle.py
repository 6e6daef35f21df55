"""The supervisor's handle on one actor process: start, talk, signal, reap.

The process is the supervisor's own child (see `edgert.proc.zygote`), held by a
pidfd: signals go through it (no PID reuse races), it becomes readable when
the process exits, and `waitid(P_PIDFD, WNOHANG)` collects the exit status
without ever blocking. Messages to the child never block either: `stop` and
other commands wait in order in a queue, and `status` snapshots are
latest-wins (a full link keeps only the newest for later); `flush()` sends
what it can when the link is writable again.
"""

from __future__ import annotations

import os
import pickle
import signal
from collections import deque
from typing import Any

from .link import Link, decode_link, encode_link
from .spec import ActorSpec
from .zygote import Zygote

__all__ = ["ActorProcess", "reap_group"]

LATEST_WINS = ("status",)


class ActorProcess:
    def __init__(self, spec: ActorSpec) -> None:
        self.spec = spec
        self.pid = 0
        self.pidfd = -1
        self.link: Link | None = None
        self.exit_error: str | None = None
        self.lost_at_stop = 0  # points its outbox could not hand over when it stopped
        self.exitcode: int | None = None
        self._queue: deque[bytes] = deque()
        self._latest: dict[str, bytes] = {}

    def start(self, zygote: Zygote) -> None:
        """Have `zygote` fork the process; raises ZygoteError or OSError."""
        ours, theirs = Link.pair()
        try:
            self.pid = zygote.spawn(pickle.dumps(self.spec), theirs.fileno())
            self.pidfd = os.pidfd_open(self.pid)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.sock.setblocking(False)
        self.link = ours

    # -- the link -------------------------------------------------------------------
    def messages(self) -> list[list[Any]]:
        """Every link message waiting now (non-blocking). EOF yields nothing."""
        out: list[list[Any]] = []
        if self.link is None:
            return out
        while True:
            try:
                data = self.link.recv_nowait()
            except (EOFError, OSError):
                return out
            if data is None:
                return out
            try:
                msg = decode_link(data)
            except ValueError:
                continue
            if msg[0] == "lost" and isinstance(msg[1], int) and msg[1] > 0:
                self.lost_at_stop += msg[1]  # kept here: it comes right before "exit"
            out.append(msg)

    def send(self, kind: str, data: Any = None) -> None:
        """Queue a message for the child and send what the link takes now."""
        msg = encode_link(kind, data)
        if kind in LATEST_WINS:
            self._latest[kind] = msg
        else:
            self._queue.append(msg)
        self.flush()

    @property
    def pending(self) -> bool:
        """Messages wait for room on the link (poll it for writing)."""
        return bool(self._queue or self._latest)

    def flush(self) -> None:
        if self.link is None:
            self._queue.clear()
            self._latest.clear()
            return
        try:
            while self._queue:
                if not self.link.try_send(self._queue[0]):
                    return
                self._queue.popleft()
            for kind in list(self._latest):
                if not self.link.try_send(self._latest[kind]):
                    return
                del self._latest[kind]
        except OSError:  # the child is gone; its exit comes through the pidfd
            self._queue.clear()
            self._latest.clear()

    # -- signals and exit --------------------------------------------------------------
    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the actor and its process group (its own subprocesses too)."""
        if self.pidfd < 0 or self.exitcode is not None:
            return
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
        except ProcessLookupError:
            pass
        try:  # the pid is ours until reaped, so the group id cannot have been reused
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def poll_exit(self) -> int | None:
        """The exit code once the process has exited (negative: killed by that signal), else
        None. Never blocks. Reaps the process, kills what is left of its group, reads the
        last messages and closes the handle."""
        if self.exitcode is not None:
            return self.exitcode
        try:  # WNOWAIT: the pid stays ours while we kill what is left of its group
            res = os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # not ours to reap (never expected): trust the pidfd
            if not _readable(self.pidfd):
                return None
            code = -1
        else:
            if res is None or res.si_pid == 0:
                return None
            code = res.si_status if res.si_code == os.CLD_EXITED else -res.si_status
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | os.WNOHANG)
        for kind, data in self.messages():
            if kind == "exit" and data:
                self.exit_error = data
        self.exitcode = code
        self.close()
        return code

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        self._queue.clear()
        self._latest.clear()


def _readable(fd: int) -> bool:
    import select

    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(0))


def reap_group(pgid: int) -> bool:
    """Reap the dead members of process group `pgid` that were re-parented to us (a
    driver's own subprocesses, killed with it). True when none of ours is left in it."""
    while True:
        try:
            res = os.waitid(os.P_PGID, pgid, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            return True
        if res is None or res.si_pid == 0:
            return False
