"""Helpers for testing gateways and drivers, and actors that misbehave on purpose.

`wait_for(condition, timeout)` polls until a condition holds, with a deadline
(never a fixed sleep), and `await_for` does the same inside an event loop;
`running_gateway(config)` runs a `Runtime` in a thread for the length of a
`with` block and stops it after; `status(config)` asks it over its control
socket; `descendants(pid)` lists a process tree from /proc.

`FaultActor` publishes a counter (`batch` values `rate` times a second) and
then, after `after` seconds, does what `mode` says: `crash` (raises), `exit`
(returns cleanly), `hang` (stops coming back to `receive`, so its heartbeats
stop), `segfault` (kills itself with SIGSEGV), `group` (raises inside an
asyncio task group) or `run` (nothing: runs until stopped). Use it as
`type = "edgert.testing:FaultActor"`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

if TYPE_CHECKING:
    from edgert.config import GatewayConfig
    from edgert.runtime import Runtime

from edgert import Actor, Command, Context, Stop
from edgert.point import Point

T = TypeVar("T")


class _Tries(Generic[T]):
    """Iterating calls `condition` once a step until it returns something truthy (kept
    in `value`; the iteration ends), or raises TimeoutError at the deadline; the
    caller waits between steps, so one loop serves threads and event loops alike."""

    def __init__(self, condition: Callable[[], T], timeout: float, what: str) -> None:
        self.condition, self.timeout, self.what = condition, timeout, what
        self.value: T | None = None

    def __iter__(self) -> Iterator[None]:
        deadline = time.monotonic() + self.timeout
        last_exc: BaseException | None = None
        while True:
            try:
                self.value = self.condition()
                if self.value:
                    return
            except Exception as e:  # noqa: BLE001 - retried until the deadline
                last_exc = e
            if time.monotonic() >= deadline:
                extra = f" (last error: {last_exc!r})" if last_exc else ""
                raise TimeoutError(
                    f"timed out after {self.timeout:g}s waiting for {self.what}{extra}"
                )
            yield


def wait_for(
    condition: Callable[[], T],
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = 0.02,
) -> T:
    """Call `condition` until it returns something truthy; return that, or fail at the deadline."""
    tries = _Tries(condition, timeout, what)
    for _ in tries:
        time.sleep(interval)
    return tries.value  # type: ignore[return-value]  # truthy, so set


async def await_for(
    condition: Callable[[], T],
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = 0.02,
) -> T:
    """`wait_for` inside an event loop: the loop runs on between tries."""
    tries = _Tries(condition, timeout, what)
    for _ in tries:
        await asyncio.sleep(interval)
    return tries.value  # type: ignore[return-value]  # truthy, so set


@contextlib.contextmanager
def running_gateway(
    config: GatewayConfig, stop_timeout: float = 30.0, log_level: int | None = None
) -> Iterator[Runtime]:
    """Run a gateway in a thread for the block; stop it and re-raise its error after."""
    from edgert.runtime import Runtime

    rt = Runtime(config, log_level=log_level)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            rt.run()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(e)

    t = threading.Thread(target=target, name=f"gateway-{config.gateway.id}")
    t.start()
    try:
        yield rt
    finally:
        rt.stop()
        t.join(stop_timeout)
        if t.is_alive():
            raise TimeoutError(f"gateway {config.gateway.id!r} did not stop in {stop_timeout:g}s")
    if errors:
        raise errors[0]


def status(config: GatewayConfig, timeout: float = 3.0) -> dict[str, Any]:
    """The running gateway's status snapshot, with actors by name under "by_name"."""
    from edgert.control import request

    snap = request(config.runtime_dir, "status", timeout=timeout)["status"]
    snap["by_name"] = {a["name"]: a for a in snap["actors"]}
    return snap


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` in the process tree (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def open_fds(pid: int) -> dict[int, str]:
    """What each descriptor `pid` holds open points at (from /proc); a descriptor closed
    while it is read is left out, and a process gone gives an empty map."""
    out: dict[int, str] = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for name in names:
        try:
            out[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:  # closed between the listing and the read (a socket, a pipe)
            continue
    return out


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # gone, or caught mid-exit with an empty stat
        return False


async def _fail_in_task_group() -> None:
    async def fail() -> None:
        raise ValueError("FaultActor failed inside a task group")

    async with asyncio.TaskGroup() as tg:
        tg.create_task(fail())


class _CleanExit(Exception):
    """Raised inside the loop to make `run` return cleanly (mode `exit`)."""


@dataclass
class FaultConfig:
    mode: Literal["run", "crash", "exit", "hang", "segfault", "group"] = "run"
    after: float = field(default=0.0, metadata={"min": 0})
    rate: float = field(default=20.0, metadata={"gt": 0})
    batch: int = field(default=1, metadata={"min": 1})  # counter values published a tick
    ignore_stop: bool = False  # keep running after stop (tests the SIGKILL path)
    spawn_child: bool = False  # start a `sleep` subprocess (tests process-group kills)
    start_delay: float = field(default=0.0, metadata={"min": 0})  # a slow start (imports)


class FaultActor(Actor):
    Config = FaultConfig

    def run(self, ctx: Context) -> None:
        try:
            self._loop(ctx)
        except _CleanExit:
            return

    def _loop(self, ctx: Context) -> None:
        cfg: FaultConfig = ctx.config
        time.sleep(cfg.start_delay)  # blocks before the first receive: no heartbeat yet
        child = subprocess.Popen(["sleep", "600"]) if cfg.spawn_child else None
        if child is not None:
            ctx.report(child_pid=child.pid)
        try:
            self._publish_until_fault(ctx, cfg)
        finally:
            if child is not None:
                child.kill()
                child.wait()

    def _publish_until_fault(self, ctx: Context, cfg: FaultConfig) -> None:
        start = time.monotonic()
        fault_at = start + cfg.after if cfg.mode != "run" else None
        n = 0
        next_pub = start
        while True:
            deadline = next_pub if fault_at is None else min(next_pub, fault_at)
            msg = ctx.receive(timeout=ctx.until(deadline))
            match msg:
                case Stop():
                    if not cfg.ignore_stop:
                        return
                    while True:
                        time.sleep(1)
                case Command():
                    ctx.reply(msg, "FaultActor accepts no commands")
            now = time.monotonic()
            if fault_at is not None and now >= fault_at:
                self._fault(cfg.mode)
            if now >= next_pub:
                ctx.publish([Point(ctx.name, "count", "0", n + i) for i in range(cfg.batch)])
                n += cfg.batch
                next_pub += 1.0 / cfg.rate

    @staticmethod
    def _fault(mode: str) -> None:
        if mode == "crash":
            raise RuntimeError("FaultActor crashed on purpose")
        if mode == "exit":
            raise _CleanExit
        if mode == "hang":
            while True:
                time.sleep(1)
        if mode == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        if mode == "group":
            asyncio.run(_fail_in_task_group())
