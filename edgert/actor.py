"""Actors and the messages their inbox returns: the Run/Stop pattern for drivers.

An `Actor[C]` has two operations. `run(ctx)` blocks, does all the work including
tear-down, and returns when stopped (or raises on a critical error). `stop(err)`
returns at once and only signals `run`; it is harmless before `run`, twice, or
after `run` returned. Inside `run` one loop owns all state and waits on one
inbox, `ctx.receive(timeout)` (see `edgert.context`), which returns `Stop`, a
`Command`, a `Status` (for actors that asked for one), `Readable(fd)` for a file
descriptor the actor watches, or `None` when the timeout passed.

`C` is the actor's config dataclass: `class Meter(Actor[MeterConfig])` makes
`MeterConfig` the class its `[[driver]]` table is decoded into (no `Config =`
needed), and types `self.config` and `ctx.config` as `MeterConfig`. `nodes()`
says which point nodes the actor publishes and takes commands for.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from .bus import Command

if TYPE_CHECKING:
    from .context import Context

__all__ = ["Actor", "Stop", "Command", "Status", "Readable", "Message", "C"]

C = TypeVar("C")


@dataclass(slots=True)
class Stop:
    """The actor is asked to stop; `err` says why when it was not a plain stop."""

    err: BaseException | None = None


@dataclass(slots=True)
class Status:
    """A snapshot of the gateway's actors, for actors with `wants_status = True`."""

    snapshot: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Readable:
    """A file descriptor the actor watches (`Context.watch`) has data to read.

    Level-triggered: it comes again from the next `receive` until the actor has
    read what waits on `fd`.
    """

    fd: int


Message = Stop | Command | Status | Readable | None


class Actor(Generic[C]):
    """Base class of drivers and the runtime's own actors.

    Subclass it as `Actor[MyConfig]` with a dataclass describing the config keys
    (decoded by `edgert.config.decode`; setting `Config = MyConfig` does the
    same) and implement `run(ctx)`. Override the classmethod `nodes(name,
    config)` when the actor publishes points of nodes other than its own name.
    """

    Config: ClassVar[type | None] = None
    wants_status: ClassVar[bool] = False
    uses_bus: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = _config_argument(cls)
        own = cls.__dict__.get("Config")
        if declared is not None and own is not None and own is not declared:
            raise TypeError(
                f"{cls.__qualname__}: Config = {own.__qualname__} but the class is"
                f" Actor[{declared.__qualname__}]; give the config class once"
            )
        if declared is not None:
            cls.Config = declared
        if cls.__dict__.get("Config") is not None:  # a typo in its field metadata fails here
            from .config import check_fields

            check_fields(cls.Config)

    def __init__(self, config: C = None, name: str = "") -> None:  # type: ignore[assignment]
        self.config: C = config
        self.name = name
        self._stopping: Stop | None = None
        self._ctx: Context[C] | None = None

    @classmethod
    def nodes(cls, name: str, config: C) -> list[str]:
        """The point nodes this actor publishes; commands for them are routed to it.

        By default only the actor's own name. Called when the config is loaded
        (before `run`), with the actor's name and decoded config.
        """
        return [name]

    def run(self, ctx: Context[C]) -> None:
        raise NotImplementedError

    def stop(self, err: BaseException | None = None) -> None:
        """Ask `run` to return; returns at once. Safe before, during and after `run`."""
        if self._stopping is None:
            self._stopping = Stop(err)
        ctx = self._ctx
        if ctx is not None:
            ctx._wake()


def _config_argument(cls: type) -> type | None:
    """The dataclass `X` of a direct base `Actor[X]`, or None (unparametrised, a TypeVar)."""
    for base in cls.__dict__.get("__orig_bases__", ()):
        origin = typing.get_origin(base)
        if isinstance(origin, type) and issubclass(origin, Actor):
            args = typing.get_args(base)
            if len(args) == 1 and isinstance(args[0], type):
                if not dataclasses.is_dataclass(args[0]):
                    raise TypeError(
                        f"{cls.__qualname__}: Actor[{args[0].__qualname__}]: the config"
                        " class must be a dataclass"
                    )
                return args[0]
    return None


def __getattr__(name: str) -> Any:
    # Context lived here before it had its own module; runtime code that still
    # imports it from here keeps working.
    if name in ("Context", "settle_future"):
        from . import context

        return getattr(context, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
