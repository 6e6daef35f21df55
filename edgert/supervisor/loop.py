"""The supervisor's loop: runs actor processes and acts on the restart policy.

`Supervisor(children, section).run()` starts its zygote (`edgert.proc`), binds
the control socket, starts every child and then waits, in one loop that owns
all state, on the children's links and pidfds, the zygote, the control socket
and its `Waker`, with a timeout set by the next timer. Everything it opens is
opened in `run` and closed there; `stop()` and `reload()` only set a flag and
wake the loop, and do nothing once `run` has returned.

When a child exits, `Policy.exited` (`policy.py`) says what to do: restart it
after a backoff, give up on it (state `failed`, retried after `failed_retry`),
leave it stopped, or, for a critical child (the bridge, the embedded NATS
server, a driver with `critical = true`), tear the whole group down: `run`
then raises `GroupFailed`. Other children are never touched by one child's
failures. A child that sends no heartbeat for `heartbeat_timeout` is killed and
treated as failed; before its first heartbeat it has `start_timeout` (a slow
start, such as imports on a small CPU under emulation, is not a hang). A
child that is a plain program (`ProgramSpec`: the embedded nats-server) is
running from its start until it exits, sends nothing and has no heartbeat; it
is asked to stop with SIGTERM, and any exit it was not asked for is a failure.
`stop()` stops children tier by tier, highest first (drivers, then the bridge,
then the embedded server), each given `shutdown_timeout` before SIGKILL.
Nothing in the loop blocks on a child: messages to children are queued
(status snapshots latest-wins), exits are collected from pidfds without
waiting, and the control socket is served without blocking (`control.py`).
The one wait is for a zygote to preload (at the start of
`run`, when a start finds it gone, and on a reload that brings new driver
code); the running actors are not its children and are never touched by it.
Actors that want the status snapshot (the bridge, the fleet actor) get it on
each change of state and every `STATUS_EVERY` seconds; the environment
variable `EDGERT_STATUS_EVERY` shortens that for tests that wait on it.
"""

from __future__ import annotations

import logging
import math
import pickle
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..bus.ring import discard, ring_path
from ..envtime import env_seconds
from ..proc import ActorProcess, ActorSpec, ProgramSpec, Zygote, ZygoteError, reap_group
from ..proc.zygote import make_subreaper
from ..systemd import Notifier
from ..waker import Waker
from . import control
from .policy import History, Policy, Restart
from .reload import diff
from .tally import load_losses, save_losses

__all__ = ["Supervisor", "ChildSpec", "GroupFailed"]

log = logging.getLogger("edgert.supervisor")

STATUS_EVERY = 5.0  # seconds between snapshots pushed to the actors that want them
# (the bridge's status messages, the fleet actor's health of a pushed config); a change
# of state is pushed at once, a change of an actor's stats only with the next push
STATUS_EARLY = 0.25  # awake anyway within this fraction of STATUS_EVERY: push now
IDLE_TICK = 5.0  # the longest the loop sleeps with nothing due (every deadline is exact)


def status_every(default: float = STATUS_EVERY) -> float:
    """Seconds between status snapshots pushed to the actors that want them: `default`,
    or EDGERT_STATUS_EVERY (for tests that wait on a stat the snapshot carries, such as
    the fleet actor's "bridge connected") when it is a number from 0.1 to 60; anything
    else there is ignored. Read by each `Supervisor` when it is made."""
    return env_seconds("EDGERT_STATUS_EVERY", default, 0.1, 60)


class GroupFailed(Exception):
    """The group was torn down because a critical child failed too often."""

    def __init__(self, name: str, restarts: int, period: float, error: str | None) -> None:
        last = (error or "exited").strip().splitlines()[-1] if error else "exited"
        super().__init__(
            f"critical actor {name!r} failed {restarts} times within {period:g}s "
            f"(more than the supervisor's intensity): {last}"
        )
        self.name = name
        self.error = error


@dataclass
class ChildSpec:
    spec: ActorSpec | ProgramSpec
    restart: Restart = "permanent"
    tier: int = 2
    kind: str = "driver"
    critical: bool = False
    code: tuple[Any, ...] = ()  # the fingerprint of its code: a change restarts it
    wants_status: bool = False  # sent the status snapshot (its class says so too)
    # Its module is imported by the zygote, before the fork, so the actors share it.
    # False for an actor whose imports no other actor needs (the bridge: asyncio, nats,
    # sqlite3): shared, every process would copy the pages of them it touches, and the
    # supervisor must stay lean; the actor imports them after its fork.
    preload: bool = True


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
    beating: bool = False  # a heartbeat came since this run started
    stats: dict[str, Any] = field(default_factory=dict)
    history: History = field(default_factory=History)
    next_start: float | None = None  # backing off or failed: when to start again
    kill_at: float | None = None
    hung: bool = False
    points_base: int = 0  # points published by earlier runs of this child
    retiring: bool = False  # stopped by a reload: replaced by `successor`, or removed
    successor: ChildSpec | None = None

    @property
    def name(self) -> str:
        return self.cs.spec.name

    @property
    def program(self) -> bool:
        """A plain program (the embedded nats-server): no link traffic, no heartbeat."""
        return isinstance(self.cs.spec, ProgramSpec)


class Supervisor:
    def __init__(
        self,
        children: list[ChildSpec],
        policy: Any,
        *,
        gateway_id: str = "",
        control_path: str | None = None,
        preload: list[str] = (),  # type: ignore[assignment]
        reload: Callable[[], tuple[list[ChildSpec], Any, Any]] | None = None,
        notifier: Notifier | None = None,
        losses_path: str | None = None,
        config_revision: int | None = None,
        fork_zygote: bool = False,
    ) -> None:
        self._losses_path = losses_path  # lost_at_stop per actor name, kept across restarts
        self._notifier = notifier or Notifier({})
        self.section = policy
        self.policy = Policy.of(policy)
        self._reload = reload
        self.gateway_id = gateway_id
        # the revision of the fleet's desired config running (None: the local file alone);
        # shown in status, updated by each reload
        self.config_revision = config_revision
        self.control_path = control_path
        self._specs = list(children)
        self._preload = list(preload)
        self._fork_zygote = fork_zygote  # this process may be its own zygote (edgert run)
        self._waker: Waker | None = None
        self._control: control.ControlServer | None = None  # its counts go in the status
        self._stop_requested = False
        self._reload_requested = False
        self._status_every = status_every()

    @property
    def children(self) -> list[ChildSpec]:
        return list(self._specs)

    # -- Run/Stop ------------------------------------------------------------------
    def stop(self, err: BaseException | None = None) -> None:
        """Ask `run` to stop every child and return; returns at once."""
        self._stop_requested = True
        waker = self._waker
        if waker is not None:
            waker.wake()

    def reload(self) -> None:
        """Ask `run` to re-read the config (SIGHUP); returns at once."""
        self._reload_requested = True
        waker = self._waker
        if waker is not None:
            waker.wake()

    def run(self) -> None:
        """Run and supervise the children until stopped; raise GroupFailed on a teardown."""
        self._losses = load_losses(self._losses_path)
        self._children = [Child(cs) for cs in self._specs]
        self._failure: GroupFailed | None = None
        self._shutting_down = False
        self._next_status = 0.0
        self._status_dirty = True
        self._graveyard: set[int] = set()  # process groups of dead children, to reap
        make_subreaper()
        waker = Waker()
        self._zygote = Zygote([])
        self._zygote_code: tuple[Any, ...] = ()
        self._may_fork = self._fork_zygote
        sock = None
        self._waker = waker
        try:
            if self._stop_requested:
                return
            try:
                # first: the actors then share the most of what this process made
                self._ensure_zygote()
            except ZygoteError:
                if self._stop_requested:  # a SIGTERM to the whole group took it as it started
                    return
                raise
            if self._stop_requested:  # asked to stop while it preloaded: start nothing
                return
            if self.control_path:
                sock = self._control = control.ControlServer(self.control_path)
            for c in self._children:
                self._start(c, time.monotonic())
            self._loop(waker, sock)
        finally:
            self._waker = None
            waker.close()
            for c in self._children:  # whatever is left (only on an internal error)
                if c.proc is not None:
                    c.proc.kill(signal.SIGKILL)
                    while c.proc.poll_exit() is None:
                        time.sleep(0.01)
                    c.proc = None
            self._zygote.close()
            if sock is not None:
                self._control = None
                sock.close()
            for pgid in self._graveyard:
                reap_group(pgid)
        if self._failure is not None:
            raise self._failure

    # -- the zygote ------------------------------------------------------------------
    def _code_key(self, specs: list[ChildSpec]) -> tuple[Any, ...]:
        mods = sorted({(cs.spec.module, cs.code) for cs in specs})
        return (tuple(self._preload), tuple(mods))

    def _ensure_zygote(self, specs: list[ChildSpec] | None = None) -> None:
        """Have a zygote that preloads the code of `specs` (default: the children's)."""
        if specs is None:
            specs = self._specs
        key = self._code_key(specs)
        if self._zygote.running and key == self._zygote_code:
            return
        if self._zygote.running:
            log.info("driver code changed: starting a new zygote")
        self._zygote.close()
        self._zygote = Zygote(
            [*self._preload, *(cs.spec.module for cs in specs if cs.spec.module and cs.preload)],
            fork=self._may_fork,
        )
        self._may_fork = False  # later ones: this process has threads, or old modules
        self._zygote.start()
        self._zygote_code = key
        log.debug("the zygote creates actors by %s", self._zygote.method)
        for mod, err in self._zygote.failed_imports.items():
            log.warning("could not preload %s: %s", mod, err)

    # -- the loop ------------------------------------------------------------------
    def _loop(self, waker: Waker, sock: control.ControlServer | None) -> None:
        while True:
            if self._stop_requested and not self._shutting_down:
                self._begin_shutdown()
            if self._shutting_down:
                if all(c.proc is None for c in self._children):
                    return
                self._stop_tier()
            poller = select.poll()
            poller.register(waker.fileno(), select.POLLIN)
            if sock is not None:
                for fd, ev in sock.events():
                    poller.register(fd, ev)
            zygote_fd = self._zygote.fileno()  # None: none, or this process is it
            if zygote_fd is not None:
                poller.register(zygote_fd, select.POLLIN)
            for c in self._children:
                if c.proc is not None and c.proc.link is not None:
                    if not c.program:  # a program's end of the link is closed by its exec
                        ev = select.POLLIN | (select.POLLOUT if c.proc.pending else 0)
                        poller.register(c.proc.link.fileno(), ev)
                    poller.register(c.proc.pidfd, select.POLLIN)
            timeout = self._next_timer() - time.monotonic()
            ready = dict(poller.poll(max(0, int(timeout * 1000) + 1)))
            waker.clear()
            if zygote_fd is not None and zygote_fd in ready:
                # at stop it is expected (a SIGTERM to the whole process group reaches it)
                quiet = self._shutting_down or self._stop_requested
                (log.debug if quiet else log.warning)(
                    "the zygote exited; a new one starts with the next actor"
                )
                self._zygote.close()
            if self._reload_requested and not self._shutting_down:
                self._reload_requested = False
                self._try_reload()
            now = time.monotonic()
            for c in list(self._children):
                proc = c.proc
                if proc is None:
                    continue
                # only a child whose link or pidfd the poll reported has something to
                # read or has exited: the others cost no system call (a wake-up for the
                # heartbeats reads those that came, not every link and exit status)
                link = proc.link
                if proc.pidfd in ready or (link is not None and link.fileno() in ready):
                    self._read_link(c, now)
                    proc.flush()
                    code = proc.poll_exit()
                    if code is not None:
                        self._on_exit(c, code, now)
                elif proc.pending:
                    proc.flush()
            if sock is not None:
                self._serve_control(sock, ready)
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
                        and not c.program
                        and not self._shutting_down
                        and not c.hung
                        and now - c.last_hb > self._hb_limit(c)
                    ):
                        log.error(
                            "%s: no %sheartbeat for %.1fs: killing it",
                            c.name,
                            "" if c.beating else "first ",
                            self._hb_limit(c),
                        )
                        c.hung = True
                        c.proc.kill(signal.SIGKILL)
                elif c.next_start is not None and now >= c.next_start and not self._shutting_down:
                    self._start(c, now)
            self._graveyard = {g for g in self._graveyard if not reap_group(g)}
            # awake anyway (the drivers' heartbeats) and the push due soon: push it now
            # rather than wake for it alone
            early = self._status_every * STATUS_EARLY
            if now >= self._next_status - early or self._status_dirty:
                self._push_status()

    def _notify(self, now: float) -> None:
        """Tell systemd (when it runs us): ready once all actors ran, alive, their states."""
        n = self._notifier
        if not n.active:
            return
        n.tick(now)
        n.status(self.summary())
        if all(c.state in ("running", "failed") for c in self._children) and any(
            c.state == "running" for c in self._children
        ):
            n.ready(self.summary())

    def summary(self) -> str:
        """One line: how many actors are in each state, naming the failed ones."""
        states: dict[str, list[str]] = {}
        for c in self._children:
            states.setdefault(c.state, []).append(c.name)
        parts = []
        for k, names in sorted(states.items()):
            parts.append(f"{k} {len(names)}" + (f" ({', '.join(names)})" if k == "failed" else ""))
        return "actors: " + ", ".join(parts)

    def _next_timer(self) -> float:
        now = time.monotonic()
        t = min(now + IDLE_TICK, self._next_status)
        wd = self._notifier.next_due
        if wd is not None:
            t = min(t, wd)
        for c in self._children:
            if c.proc is not None:
                if c.kill_at is not None:
                    t = min(t, c.kill_at)
                if c.state in ("starting", "running") and not c.hung and not c.program:
                    t = min(t, c.last_hb + self._hb_limit(c))
            elif c.next_start is not None:
                t = min(t, c.next_start)
        if self._graveyard:
            t = min(t, now + 0.1)
        return t

    def _hb_limit(self, c: Child) -> float:
        """Seconds of silence after which child `c` is judged hung."""
        hb = self.section.heartbeat_timeout
        return hb if c.beating else max(hb, getattr(self.section, "start_timeout", hb))

    def _start(self, c: Child, now: float) -> None:
        c.next_start = None
        c.hung = False
        c.beating = False
        c.kill_at = None
        c.stats = {}
        proc = ActorProcess(c.cs.spec)
        try:
            self._ensure_zygote()
            method = self._zygote.method
            proc.start(self._zygote)
            if self._zygote.method != method:  # a clone refused, or a thread started here
                log.warning(
                    "actors are now created by %s: %s", self._zygote.method, self._zygote.why
                )
                for mod, err in self._zygote.failed_imports.items():
                    log.warning("could not preload %s: %s", mod, err)
        except (OSError, ZygoteError, pickle.PicklingError) as e:
            proc.close()
            self._failed(c, now, f"could not start process: {e}", ran_for=0.0)
            return
        c.proc = proc
        c.state = "starting"
        c.started = c.last_hb = now
        if c.program:  # running from its exec on, as long as it lives
            c.state = "running"
            c.running_since = now
        self._status_dirty = True
        log.info("%s: started, pid %d", c.name, proc.pid)

    def _read_link(self, c: Child, now: float) -> None:
        assert c.proc is not None
        for kind, data in c.proc.messages():
            if kind == "running":
                c.state = "stopping" if self._shutting_down or c.retiring else "running"
                c.running_since = now
                c.last_hb = now
                self._status_dirty = True
            elif kind == "hb":
                c.last_hb = now
                c.beating = True
                if isinstance(data, dict):
                    c.stats = data
            elif kind == "exit":
                c.proc.exit_error = data

    def _on_exit(self, c: Child, code: int, now: float) -> None:
        assert c.proc is not None
        proc = c.proc
        c.points_base += int(c.stats.get("points_out", 0) or 0)
        if proc.lost_at_stop:
            if any(ch.cs.kind == "bridge" for ch in self._children):
                log.warning(
                    "%s: %d points lost at stop (not acknowledged)", c.name, proc.lost_at_stop
                )
            else:  # with no bridge, points are discarded by design: counted all the same
                log.info("%s: %d points discarded: no bridge configured", c.name, proc.lost_at_stop)
            self._losses[c.name] = self._losses.get(c.name, 0) + proc.lost_at_stop
            save_losses(self._losses_path, self._losses)
        c.stats = {k: v for k, v in c.stats.items() if k != "points_out"}
        c.proc = None
        self._graveyard.add(proc.pid)
        self._status_dirty = True
        if self._shutting_down:
            c.state = "stopped"
            log.info("%s: stopped (exit code %s)", c.name, code)
            return
        if c.retiring:
            if code == 0:
                log.info("%s: stopped for the reload (exit code 0)", c.name)
            else:  # it failed on its way out: said, though its successor starts anyway
                why = proc.exit_error or f"exit code {code}"
                log.warning("%s: stopped for the reload, failing: %s", c.name, why)
            self._retire(c, now)
            return
        if c.hung:
            error = f"hung: no heartbeat for {self._hb_limit(c):g}s, killed"
        elif proc.exit_error:
            error = proc.exit_error
        elif isinstance(c.cs.spec, ProgramSpec):  # a server that exits unasked has failed
            error = c.cs.spec.exit_error(code)
        elif code < 0:
            error = f"killed by signal {signal.Signals(-code).name}"
        elif code != 0:
            error = f"exited with code {code}"
        else:
            error = None
        if error:
            log.error("%s: failed: %s", c.name, error.strip().splitlines()[-1])
        ran_for = now - c.running_since if c.running_since else 0.0
        c.running_since = 0.0
        self._failed(c, now, error, ran_for)

    def _failed(self, c: Child, now: float, error: str | None, ran_for: float) -> None:
        """Act on the policy's decision for a child that exited (or could not start)."""
        if error:
            c.last_error = error
        d = self.policy.exited(
            c.history,
            now=now,
            restart=c.cs.restart,
            error=error is not None,
            ran_for=ran_for,
            critical=c.cs.critical,
        )
        self._status_dirty = True
        if d.action == "restart":
            assert d.delay is not None
            c.restarts += 1
            c.state = "backing_off"
            c.next_start = now + d.delay
            log.info("%s: restart %d in %.3fs", c.name, c.restarts, d.delay)
        elif d.action == "teardown":
            c.state = "failed"
            self._failure = GroupFailed(c.name, d.restarts_in_period, self.policy.period, error)
            log.error("%s", self._failure)
            self._begin_shutdown()
        elif d.action == "failed" and d.restarts_in_period:
            c.state = "failed"
            c.next_start = None if d.delay is None else now + d.delay
            log.error(
                "%s: failed %d times within %gs: given up on%s",
                c.name,
                d.restarts_in_period,
                self.policy.period,
                "" if d.delay is None else f", trying again in {d.delay:g}s",
            )
        else:  # temporary, or transient that returned: not restarted
            c.state = d.action
            log.info("%s: %s, not restarted (%s)", c.name, c.state, c.cs.restart)

    def _begin_shutdown(self) -> None:
        self._shutting_down = True
        self._notifier.stopping()
        for c in self._children:
            c.next_start = None
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
        if c.program:
            c.proc.kill(signal.SIGTERM)
        else:
            c.proc.send("stop")
        c.kill_at = now + self.section.shutdown_timeout

    # -- reload --------------------------------------------------------------------
    def _try_reload(self) -> dict[str, Any]:
        """Reload, or refuse with the reason (a broken config is not fatal); the control reply."""
        began = time.monotonic()
        try:
            return {"ok": True, "changes": self._apply_reload()}
        except Exception as e:  # noqa: BLE001 - refused, with the reason
            log.error("reload refused, nothing changed: %s", e)
            return {"ok": False, "error": f"reload refused, nothing changed: {e}"}
        finally:
            # A reload may wait (new code checked in a new interpreter, a new zygote's
            # preload), and meanwhile no heartbeat is read: that time is not the actors'.
            spent = time.monotonic() - began
            for c in self._children:
                if c.proc is not None and c.started < began:
                    c.last_hb += spent

    def _apply_reload(self) -> dict[str, list[str]]:
        """Compare the re-read config with the running children and act on the difference.

        Unchanged children keep running (same pid). A changed one (its config or its
        code) is stopped and its successor started once it has exited; a removed one
        is stopped; a new one is started. New code means a new zygote first. Raises
        (changing nothing) when the config is broken.
        """
        if self._reload is None:
            raise RuntimeError("this supervisor has no config to reload")
        specs, section, revision = self._reload()
        self._ensure_zygote(specs)
        self.config_revision = revision
        self.section = section
        self.policy = Policy.of(section)
        self._specs = list(specs)
        current = {c.name: (c.successor if c.retiring else c.cs) for c in self._children}
        changes = diff({k: v for k, v in current.items() if v is not None}, specs)
        now = time.monotonic()
        for c in list(self._children):
            if c.name in changes.removed or (c.retiring and c.successor is None):
                self._retire_later(c, None, now)
            elif c.name in changes.changed:
                self._retire_later(c, changes.changed[c.name], now)
        for cs in changes.added:
            c = Child(cs)
            self._children.append(c)
            self._start(c, now)
        names = changes.names()
        log.info(
            "reloaded: %s",
            "; ".join(f"{k} {', '.join(v)}" for k, v in names.items() if v) or "nothing",
        )
        self._status_dirty = True
        return names

    def _retire_later(self, c: Child, successor: ChildSpec | None, now: float) -> None:
        c.retiring = True
        c.successor = successor
        if c.proc is None:
            self._retire(c, now)
        elif c.kill_at is None:
            self._ask_stop(c, now)

    def _retire(self, c: Child, now: float) -> None:
        """A retiring child has exited: start its successor in its place, or drop it."""
        i = self._children.index(c)
        if c.successor is None:
            del self._children[i]
            log.info("%s: removed", c.name)
            self._discard_outbox(c)
            return
        fresh = Child(c.successor)  # its lost_at_stop is the actor's: kept by name
        self._children[i] = fresh
        self._start(fresh, now)

    def _discard_outbox(self, c: Child) -> None:
        """A removed actor's ring file (kept by a stop the bridge could not acknowledge,
        or left by a crash): nobody will send it now, so its points count as lost."""
        lost = discard(ring_path(c.cs.spec.runtime_dir, c.name))
        if lost:
            log.warning("%s: removed with %d points it had not handed over: lost", c.name, lost)
            self._losses[c.name] = self._losses.get(c.name, 0) + lost
            save_losses(self._losses_path, self._losses)

    # -- status and control --------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        actors = []
        for c in self._children:
            s = c.stats
            a = {
                "name": c.name,
                "kind": c.cs.kind,
                "pid": c.proc.pid if c.proc is not None else None,
                "state": c.state,
                "restarts": c.restarts,
                "last_error": c.last_error,
                "uptime": round(now - c.running_since, 3) if c.running_since and c.proc else 0.0,
                "points_out": c.points_base + int(s.get("points_out", 0) or 0),
                "buffered": int(s.get("buffered", 0) or 0),
                "dropped": int(s.get("dropped", 0) or 0),
                "lost_at_stop": self._losses.get(c.name, 0),
                "critical": c.cs.critical,
                "stats": s,
            }
            if c.state == "failed":
                a["retry_in"] = (
                    None if c.next_start is None else round(max(0.0, c.next_start - now), 3)
                )
            actors.append(a)
        configured = {c.name for c in self._children}
        return {
            "gateway": self.gateway_id,
            "config_revision": self.config_revision,
            "actors": actors,
            # losses of actors a reload removed (their rows are gone, the count is not)
            "removed_lost_at_stop": {
                k: v for k, v in sorted(self._losses.items()) if k not in configured
            },
            # control connections refused: oversized requests dropped, busy at the limit
            "control": self._control.counts() if self._control else {"dropped": 0, "busy": 0},
        }

    def _push_status(self) -> None:
        snap = None
        for c in self._children:
            if c.proc is not None and (
                c.cs.wants_status or getattr(getattr(c.cs.spec, "cls", None), "wants_status", False)
            ):
                snap = snap or self.snapshot()
                c.proc.send("status", snap)
        self._next_status = time.monotonic() + self._status_every
        self._status_dirty = False

    def _serve_control(self, sock: control.ControlServer, ready: dict[int, int]) -> None:
        for who, op in sock.requests(ready, time.monotonic()):
            if op == "status":
                reply: dict[str, Any] = {"ok": True, "status": self.snapshot()}
            elif op == "reload" and not self._shutting_down:
                reply = self._try_reload()
            else:
                reply = {
                    "ok": False,
                    "error": f"unknown control request {op!r} (known: status, reload)",
                }
            sock.answer(who, reply)
