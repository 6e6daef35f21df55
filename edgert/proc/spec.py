"""What a child process needs to build and run its actor (`ActorSpec`), or the
program it becomes (`ProgramSpec`).

`cls` is the actor class, or its "module:Class" path when the supervisor should
not import it (the bridge pulls in asyncio and nats, which the supervisor never
loads); `config` likewise may be a `Build` that the child calls to make the
config object. The spec is pickled by the supervisor and unpickled in the child.

A `ProgramSpec` child is a plain program (the embedded nats-server): it is
forked like an actor (so it is the supervisor's own child, dies with it, and
leads its own process group), and it then `exec`s the program instead of
running Python. It has no link traffic and no heartbeat: it is running from its
start until it exits, `stop` is SIGTERM, and an exit the supervisor did not ask
for is a failure whose error is the end of the program's log.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ActorSpec", "Build", "ProgramSpec", "resolve"]


def resolve(target: str) -> Any:
    """The object named by "package.module:Name"."""
    mod, _, attr = target.partition(":")
    obj: Any = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Build:
    """`target(**kwargs)`, called in the child: a config the supervisor never imports."""

    target: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> Any:
        return resolve(self.target)(**self.kwargs)


@dataclass
class ActorSpec:
    name: str
    cls: type | str
    config: Any
    runtime_dir: str
    heartbeat_interval: float = 1.0
    outbox_max_points: int = 100_000
    drain_timeout: float = 2.0
    crash_safe: bool = True  # keep the outbox in a ring file (no use without a bridge)
    log_level: int = logging.INFO

    @property
    def module(self) -> str:
        """The module the actor's class lives in (preloaded by the zygote)."""
        if isinstance(self.cls, str):
            return self.cls.partition(":")[0]
        return self.cls.__module__

    def actor_class(self) -> type:
        return resolve(self.cls) if isinstance(self.cls, str) else self.cls

    def actor_config(self) -> Any:
        return self.config() if isinstance(self.config, Build) else self.config


@dataclass(frozen=True)
class ProgramSpec:
    name: str
    argv: tuple[str, ...]  # argv[0] is the program's path
    runtime_dir: str
    dirs: tuple[str, ...] = ()  # created (0700) before the exec
    log_path: str = ""  # the program's log: its last lines explain an exit

    module = ""  # nothing for the zygote to preload
    crash_safe = False  # no outbox

    def exit_error(self, code: int) -> str:
        """Why the program stopped on its own: its log's last error lines, or, when it
        logged none, the end of its log if it exited (it may say why) and only where
        the log is if it was killed (its last lines are then whatever it did before)."""
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        prog = self.argv[0].rsplit("/", 1)[-1]
        said = tail(self.log_path, only=ERROR_MARKS)
        if not said and code < 0:
            return f"{prog} {how} (no error in its log {self.log_path})"
        return f"{prog} {how}: {said or tail(self.log_path)}"


ERROR_MARKS = ("[ERR]", "[FTL]")  # nats-server's error and fatal lines
START_MARK = "Starting nats-server"  # its first line of a run (its log is appended to)


def tail(path: str, lines: int = 3, limit: int = 4096, only: tuple[str, ...] = ()) -> str:
    """The last `lines` lines of a log (its last `limit` bytes at most), on one line;
    with `only`, of the lines holding one of those marks ("" when none does)."""
    if not path:
        return "" if only else "(no log)"
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - limit))
            text = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return "" if only else "(no log)"
    if only:  # of this run: the log is appended to, its start is marked
        starts = [i for i, t in enumerate(text) if START_MARK in t]
        text = text[starts[-1] :] if starts else text
        return " | ".join([t for t in text if any(m in t for m in only)][-lines:])
    return " | ".join(text[-lines:]) or "(empty log)"
