"""What a child process needs to build and run its actor (`ActorSpec`).

`cls` is the actor class, or its "module:Class" path when the supervisor should
not import it (the bridge pulls in asyncio and nats, which the supervisor never
loads); `config` likewise may be a `Build` that the child calls to make the
config object. The spec is pickled by the supervisor and unpickled in the child.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ActorSpec", "Build", "resolve"]


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
