"""The interface between the GPIO driver and a chip: `LineBackend` and `LineRequest`.

Two implementations satisfy it: `kernel.KernelBackend` (libgpiod v2 on a real
/dev/gpiochipN, imported only when used) and `simchip.SimBackend` (a simulated
chip driven from another process). Both behave as the kernel's GPIO character
device does:

- `LineBackend.request(consumer, settings)` requests lines exclusively; a line
  another live request holds is refused with `OSError(EBUSY)`, and a request is
  released when it is closed or when its process dies (so a restarted driver
  never finds its own lines busy).
- values are logical: `active_low` inverts reads, writes and edge direction;
- edge events (already debounced by `debounce`) wait on `fileno()`, a pollable
  file descriptor, and `read_events()` returns them without blocking;
- `deadline()` is the monotonic time at which `read_events()` must be called
  even if the fd stays quiet (the simulator's debounce timer; None for the kernel,
  which keeps its own timers).

So the driver's one select loop is the same for both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, Self

__all__ = ["EdgeEvent", "LineBackend", "LineRequest", "LineSettings", "open_backend"]


@dataclass(frozen=True, slots=True)
class LineSettings:
    """How one line is requested; the driver's config translated, independent of libgpiod."""

    direction: Literal["input", "output"] = "input"
    edge: Literal["none", "rising", "falling", "both"] = "none"
    bias: Literal["as_is", "disabled", "pull_up", "pull_down"] = "as_is"
    active_low: bool = False
    debounce: float = 0.0  # seconds
    initial: bool = False  # outputs: the logical value set by the request


@dataclass(frozen=True, slots=True)
class EdgeEvent:
    """One (debounced) edge: the line's new logical value and when, in ns since the epoch."""

    offset: int
    value: bool
    time_ns: int


class LineRequest(ABC):
    """Lines requested from one chip; released by `close()` (or leaving its `with` block).

    Both backends derive from this class, which supplies the `with` protocol.
    """

    @abstractmethod
    def fileno(self) -> int:
        """A file descriptor that is readable while edge events wait."""

    @abstractmethod
    def read_events(self) -> list[EdgeEvent]:
        """The edge events that are ready now, oldest first; never blocks."""

    @abstractmethod
    def deadline(self) -> float | None:
        """Monotonic time to call `read_events()` again even without fd activity, or None."""

    @abstractmethod
    def get(self, offsets: Iterable[int]) -> dict[int, bool]:
        """The logical values of these requested lines."""

    @abstractmethod
    def set(self, values: Mapping[int, bool]) -> None:
        """Set requested output lines to these logical values."""

    @abstractmethod
    def close(self) -> None:
        """Release the lines; harmless twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LineBackend(Protocol):
    """A GPIO chip that lines can be requested from."""

    chip: str

    def request(self, consumer: str, settings: Mapping[int, LineSettings]) -> LineRequest:
        """Request these lines (offset -> settings); OSError (EBUSY, ENOENT, EINVAL) when refused."""
        ...


def open_backend(chip: str) -> LineBackend:
    """The backend for a driver's `chip` key: "sim:NAME" is simulated, anything else is real."""
    if chip.startswith("sim:"):
        from .simchip import SimBackend

        return SimBackend(chip[4:])
    from .kernel import KernelBackend

    return KernelBackend(chip)
