"""The supervisor: runs actor processes and restarts them by OTP's rules.

Policy is data (`ChildSpec`): a restart type — `permanent` (always restarted),
`transient` (restarted only after an error), `temporary` (never) — and a tier
for the order of shutdown. A failed child is restarted after an exponential
backoff with jitter, from `backoff_min` doubling to `backoff_max`, reset once it
has run for `healthy_after` seconds. More than `intensity` restarts within
`period` seconds (a sliding window on the monotonic clock) tears the whole group
down, and `run()` raises `GroupFailed` naming the child and its error. A child
that sends no heartbeat for `heartbeat_timeout` is judged hung, killed and
restarted. `stop()` stops children tier by tier, highest first (drivers, then
the bridge, then the embedded server), each given `shutdown_timeout` before
SIGKILL.

One loop in `run()` owns all state. It waits on the children's links and exit
sentinels, the control socket and the stop signal, with a timeout set by the
next timer; `stop()` only writes to a pipe. The control socket answers `status`
requests with the snapshot of `edgert status --json`.
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack
import zmq

from .config import SupervisorSection
from .point import unpack_limited
from .process import ActorProcess, ActorSpec, mp_context
from .systemd import Notifier

__all__ = ["Supervisor", "ChildSpec", "GroupFailed"]

log = logging.getLogger("edgert.supervisor")

Restart = Literal["permanent", "transient", "temporary"]
STATUS_EVERY = 2.0


class GroupFailed(Exception):
    """The group was torn down because a child failed too often."""

    def __init__(self, name: str, restarts: int, period: float, error: str | None) -> None:
        last = (error or "exited").strip().splitlines()[-1] if error else "exited"
        super().__init__(
            f"actor {name!r} failed {restarts} times within {period:g}s "
            f"(more than the supervisor's intensity): {last}"
        )
        self.name = name
        self.error = error


@dataclass
class ChildSpec:
    spec: ActorSpec
    restart: Restart = "permanent"
    tier: int = 2
    kind: str = "driver"


@dataclass
class Child:
    """The supervisor's record of one child; owned by the supervisor's loop."""

    cs: ChildSpec
    proc: ActorProcess | None = None
    state: str = "starting"
    restarts: int = 0
    last_error: str = ""
    started: float = 0.0
    running_since: float = 0.0
    last_hb: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    failures: int = 0  # consecutive, for backoff
    next_start: float = 0.0
    kill_at: float | None = None
    hung: bool = False
    points_base: int = 0  # points published by earlier runs of this child
    retiring: bool = False  # stopped by a reload: replaced by `successor`, or removed
    successor: ChildSpec | None = None

    @property
    def name(self) -> str:
        return self.cs.spec.name


class Supervisor:
    def __init__(
        self,
        children: list[ChildSpec],
        policy: SupervisorSection,
        *,
        gateway_id: str = "",
        control_path: str | None = None,
        preload: list[str] = (),  # type: ignore[assignment]
        reload: Callable[[], tuple[list[ChildSpec], SupervisorSection]] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self._notifier = notifier or Notifier({})
        self.policy = policy
        self._reload = reload
        self._reload_requested = False
        self.gateway_id = gateway_id
        self.control_path = control_path
        self._children = [Child(cs) for cs in children]
        self._preload = list(preload)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stop_requested = False
        self._closed = False

    # -- Run/Stop ------------------------------------------------------------------
    def stop(self, err: BaseException | None = None) -> None:
        """Ask `run` to stop every child and return; returns at once."""
        self._stop_requested = True
        self._wake()

    def reload(self) -> None:
        """Ask `run` to re-read the config (SIGHUP); returns at once. See `_apply_reload`."""
        self._reload_requested = True
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass

    def run(self) -> None:
        """Run and supervise the children until stopped; raise GroupFailed on too many failures."""
        self._mpctx = mp_context(self._preload)
        from multiprocessing import forkserver

        forkserver.ensure_running()  # before this process holds a ZeroMQ context
        zctx = zmq.Context(1)
        control = None
        self._failure: GroupFailed | None = None
        self._shutting_down = False
        self._restart_times: deque[float] = deque()
        self._next_status = 0.0
        self._status_dirty = True
        try:
            if self.control_path:
                control = zctx.socket(zmq.ROUTER)
                control.setsockopt(zmq.LINGER, 0)
                if os.path.exists(self.control_path):
                    os.unlink(self.control_path)
                control.bind(f"ipc://{self.control_path}")
            if self._stop_requested:
                return
            for c in self._children:
                self._start(c)
            self._loop(control)
        finally:
            for c in self._children:  # whatever is left (only on an internal error)
                if c.proc is not None:
                    c.proc.kill(signal.SIGKILL)
                    c.proc.reap()
                    c.proc = None
            if control is not None:
                control.close(0)
                if self.control_path and os.path.exists(self.control_path):
                    os.unlink(self.control_path)
            zctx.term()
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._closed = True
        if self._failure is not None:
            raise self._failure

    # -- the loop ------------------------------------------------------------------
    def _loop(self, control: zmq.Socket | None) -> None:
        p = self.policy
        while True:
            if self._stop_requested and not self._shutting_down:
                self._begin_shutdown()
            if self._shutting_down:
                if all(c.proc is None for c in self._children):
                    return
                self._stop_tier()
            poller = zmq.Poller()
            poller.register(self._wake_r, zmq.POLLIN)
            if control is not None:
                poller.register(control, zmq.POLLIN)
            for c in self._children:
                if c.proc is not None:
                    poller.register(c.proc.link.fileno(), zmq.POLLIN)
                    poller.register(c.proc.sentinel, zmq.POLLIN)
            timeout = self._next_timer() - time.monotonic()
            poller.poll(max(0, int(timeout * 1000) + 1))
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass
            if self._reload_requested and not self._shutting_down:
                self._reload_requested = False
                self._try_reload()
            now = time.monotonic()
            for c in list(self._children):
                if c.proc is None:
                    continue
                self._read_link(c, now)
                if not c.proc.alive():
                    self._on_exit(c, now)
            if control is not None:
                self._serve_control(control)
            now = time.monotonic()
            self._notify(now)
            for c in self._children:
                if c.proc is not None:
                    if c.kill_at is not None and now >= c.kill_at:
                        log.warning("%s: did not stop in time: SIGKILL", c.name)
                        c.proc.kill(signal.SIGKILL)
                        c.kill_at = math.inf
                    elif (
                        c.state in ("starting", "running")
                        and not self._shutting_down
                        and not c.hung
                        and now - c.last_hb > p.heartbeat_timeout
                    ):
                        log.error(
                            "%s: no heartbeat for %.1fs: killing it", c.name, p.heartbeat_timeout
                        )
                        c.hung = True
                        c.proc.kill(signal.SIGKILL)
                elif c.state == "backing_off" and now >= c.next_start and not self._shutting_down:
                    self._start(c)
            if now >= self._next_status or self._status_dirty:
                self._push_status()

    def _notify(self, now: float) -> None:
        """Tell systemd (when it runs us): ready once all actors ran, alive, their states."""
        n = self._notifier
        if not n.active:
            return
        n.tick(now)
        states: dict[str, int] = {}
        for c in self._children:
            states[c.state] = states.get(c.state, 0) + 1
        text = ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
        if states.get("running", 0) == len(self._children):
            n.ready(f"actors: {text}")
        n.status(f"actors: {text}")

    def _next_timer(self) -> float:
        now = time.monotonic()
        t = min(now + 1.0, self._next_status)
        wd = self._notifier.next_due
        if wd is not None:
            t = min(t, wd)
        for c in self._children:
            if c.proc is not None:
                if c.kill_at is not None:
                    t = min(t, c.kill_at)
                if c.state in ("starting", "running") and not c.hung:
                    t = min(t, c.last_hb + self.policy.heartbeat_timeout)
            elif c.state == "backing_off":
                t = min(t, c.next_start)
        return t

    def _start(self, c: Child) -> None:
        c.proc = ActorProcess(self._mpctx, c.cs.spec)
        c.state = "starting"
        c.hung = False
        c.kill_at = None
        now = time.monotonic()
        try:
            c.proc.start()
        except OSError as e:
            c.proc.close()
            c.proc = None
            self._after_failure(c, now, f"could not start process: {e}")
            return
        c.started = c.last_hb = now
        c.stats = {}
        self._status_dirty = True
        log.info("%s: started, pid %d", c.name, c.proc.pid)

    def _read_link(self, c: Child, now: float) -> None:
        assert c.proc is not None
        for kind, data in c.proc.messages():
            if kind == "running":
                c.state = "stopping" if self._shutting_down else "running"
                c.running_since = now
                c.last_hb = now
                self._status_dirty = True
            elif kind == "hb":
                c.last_hb = now
                if isinstance(data, dict):
                    c.stats = data
            elif kind == "exit":
                c.proc.exit_error = data

    def _on_exit(self, c: Child, now: float) -> None:
        assert c.proc is not None
        proc = c.proc
        code = proc.reap()
        c.points_base += int(c.stats.get("points_out", 0) or 0)
        c.stats = {k: v for k, v in c.stats.items() if k != "points_out"}
        c.proc = None
        self._status_dirty = True
        if self._shutting_down:
            c.state = "stopped"
            log.info("%s: stopped (exit code %s)", c.name, code)
            return
        if c.retiring:
            self._retire(c)
            return
        if c.hung:
            error = f"hung: no heartbeat for {self.policy.heartbeat_timeout:g}s, killed"
        elif proc.exit_error:
            error = proc.exit_error
        elif code < 0:
            error = f"killed by signal {signal.Signals(-code).name}"
        elif code != 0:
            error = f"exited with code {code}"
        else:
            error = None
        if error:
            c.last_error = error
            log.error("%s: failed: %s", c.name, error.strip().splitlines()[-1])
        restart = c.cs.restart
        if restart == "temporary" or (restart == "transient" and error is None):
            c.state = "failed" if error else "stopped"
            log.info("%s: %s, not restarted (%s)", c.name, c.state, restart)
            return
        self._after_failure(c, now, error)

    def _after_failure(self, c: Child, now: float, error: str | None) -> None:
        p = self.policy
        if error:
            c.last_error = error
        window = self._restart_times
        window.append(now)
        while window and window[0] < now - p.period:
            window.popleft()
        if len(window) > p.intensity:
            c.state = "failed"
            self._failure = GroupFailed(c.name, len(window), p.period, c.last_error or error)
            log.error("%s", self._failure)
            self._begin_shutdown()
            return
        if c.running_since and now - c.running_since >= p.healthy_after:
            c.failures = 0
        delay = min(p.backoff_max, p.backoff_min * (2 ** min(c.failures, 40)))
        delay *= random.uniform(0.8, 1.2)
        c.failures += 1
        c.restarts += 1
        c.running_since = 0.0
        c.state = "backing_off"
        c.next_start = now + min(delay, p.backoff_max)
        log.info("%s: restart %d in %.3fs", c.name, c.restarts, c.next_start - now)

    def _begin_shutdown(self) -> None:
        self._shutting_down = True
        self._notifier.stopping()
        for c in self._children:
            if c.proc is None and c.state in ("backing_off", "starting"):
                c.state = "stopped"
        self._stop_tier()

    def _stop_tier(self) -> None:
        """Send stop to the live children of the highest tier that still has any."""
        live = [c for c in self._children if c.proc is not None]
        if not live:
            return
        top = max(c.cs.tier for c in live)
        now = time.monotonic()
        for c in live:
            if c.cs.tier == top and c.kill_at is None:
                self._ask_stop(c, now)

    def _ask_stop(self, c: Child, now: float) -> None:
        """Send stop to a live child; SIGKILL follows after `shutdown_timeout`."""
        assert c.proc is not None
        c.state = "stopping"
        c.proc.send("stop")
        c.kill_at = now + self.policy.shutdown_timeout

    # -- reload --------------------------------------------------------------------
    def _try_reload(self) -> dict[str, Any]:
        """Reload, or refuse with the reason (a broken config is not fatal); the control reply."""
        try:
            return {"ok": True, "changes": self._apply_reload()}
        except Exception as e:  # noqa: BLE001 - refused, with the reason
            log.error("reload refused, nothing changed: %s", e)
            return {"ok": False, "error": f"reload refused, nothing changed: {e}"}

    def _apply_reload(self) -> dict[str, list[str]]:
        """Compare the re-read config with the running children and act on the difference.

        Unchanged children keep running (same pid). A changed one is stopped and
        its successor started once it has exited; a removed one is stopped; a new
        one is started. Raises (changing nothing) when the config is broken.
        """
        if self._reload is None:
            raise RuntimeError("this supervisor has no config to reload")
        specs, policy = self._reload()
        self.policy = policy
        wanted = {cs.spec.name: cs for cs in specs}
        changes: dict[str, list[str]] = {"added": [], "changed": [], "removed": [], "kept": []}
        for c in list(self._children):
            cs = wanted.pop(c.name, None)
            current = c.successor if c.retiring else c.cs  # what it will be running
            if cs is None:
                changes["removed"].append(c.name)
                self._retire_later(c, None)
            elif cs != current:
                changes["changed"].append(c.name)
                self._retire_later(c, cs)
            else:
                changes["kept"].append(c.name)
        for cs in wanted.values():
            changes["added"].append(cs.spec.name)
            c = Child(cs)
            self._children.append(c)
            self._start(c)
        log.info(
            "reloaded: %s",
            "; ".join(f"{k} {', '.join(v)}" for k, v in changes.items() if v) or "nothing",
        )
        self._status_dirty = True
        return changes

    def _retire_later(self, c: Child, successor: ChildSpec | None) -> None:
        c.retiring = True
        c.successor = successor
        if c.proc is None:
            self._retire(c)
        elif c.kill_at is None:
            self._ask_stop(c, time.monotonic())

    def _retire(self, c: Child) -> None:
        """A retiring child has exited: start its successor in its place, or drop it."""
        i = self._children.index(c)
        if c.successor is None:
            del self._children[i]
            log.info("%s: removed", c.name)
            return
        fresh = Child(c.successor)
        self._children[i] = fresh
        self._start(fresh)

    # -- status and control --------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        actors = []
        for c in self._children:
            s = c.stats
            actors.append(
                {
                    "name": c.name,
                    "kind": c.cs.kind,
                    "pid": c.proc.pid if c.proc is not None else None,
                    "state": c.state,
                    "restarts": c.restarts,
                    "last_error": c.last_error,
                    "uptime": round(now - c.running_since, 3)
                    if c.running_since and c.proc
                    else 0.0,
                    "points_out": c.points_base + int(s.get("points_out", 0) or 0),
                    "buffered": int(s.get("buffered", 0) or 0),
                    "dropped": int(s.get("dropped", 0) or 0),
                    "stats": s,
                }
            )
        return {"gateway": self.gateway_id, "actors": actors}

    def _push_status(self) -> None:
        snap = None
        for c in self._children:
            if c.proc is not None and getattr(c.cs.spec.cls, "wants_status", False):
                snap = snap or self.snapshot()
                c.proc.send("status", snap)
        self._next_status = time.monotonic() + STATUS_EVERY
        self._status_dirty = False

    def _serve_control(self, sock: zmq.Socket) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) < 2:
                continue
            ident, body = frames[0], frames[-1]
            try:
                req = unpack_limited(body)
                op = req.get("op") if isinstance(req, dict) else None
            except Exception:  # noqa: BLE001 - any garbage gets an error reply
                op = None
            if op == "status":
                reply: dict[str, Any] = {"ok": True, "status": self.snapshot()}
            elif op == "reload" and not self._shutting_down:
                reply = self._try_reload()
            else:
                reply = {
                    "ok": False,
                    "error": f"unknown control request {op!r} (known: status, reload)",
                }
            try:
                sock.send_multipart([ident, msgpack.packb(reply, use_bin_type=True)], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
