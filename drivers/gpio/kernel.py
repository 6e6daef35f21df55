"""The real backend: lines of a Linux GPIO character device through libgpiod v2.

`gpiod` (PyPI package `gpiod` >= 2.1, `pip install 'edgert[gpio]'`) is imported
only when a real chip is requested, so simulated chips work without it. The
kernel does the work: exclusive requests (EBUSY), `active_low`, edge detection
and debouncing (`debounce_period`), and releases a request when its process dies.

`gpiod_settings()` translates the driver's `LineSettings` into the keyword
arguments of `gpiod.LineSettings`, naming enum members as strings, so the
translation is testable without libgpiod; `to_gpiod()` resolves them.
Event timestamps are taken on the monotonic clock (every kernel with the v2
uAPI has it) and converted to nanoseconds since the epoch when read.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterable, Mapping
from datetime import timedelta
from types import ModuleType
from typing import Any, NamedTuple

from .backend import EdgeEvent, LineRequest, LineSettings

__all__ = ["KernelBackend", "Member", "gpiod_settings", "to_gpiod", "chip_path"]


class Member(NamedTuple):
    """An enum member of `gpiod.line` by name, e.g. Member("Bias", "PULL_UP")."""

    enum: str
    name: str


_DIRECTION = {"input": "INPUT", "output": "OUTPUT"}
_EDGE = {"none": "NONE", "rising": "RISING", "falling": "FALLING", "both": "BOTH"}
_BIAS = {"as_is": "AS_IS", "disabled": "DISABLED", "pull_up": "PULL_UP", "pull_down": "PULL_DOWN"}


def gpiod_settings(s: LineSettings) -> dict[str, Any]:
    """The keyword arguments of `gpiod.LineSettings` for `s` (enum members as `Member`)."""
    kw: dict[str, Any] = {
        "direction": Member("Direction", _DIRECTION[s.direction]),
        "bias": Member("Bias", _BIAS[s.bias]),
        "active_low": s.active_low,
    }
    if s.direction == "input":
        kw["edge_detection"] = Member("Edge", _EDGE[s.edge])
        kw["debounce_period"] = timedelta(seconds=s.debounce)
        kw["event_clock"] = Member("Clock", "MONOTONIC")
    else:
        kw["output_value"] = Member("Value", "ACTIVE" if s.initial else "INACTIVE")
    return kw


def to_gpiod(s: LineSettings, gpiod: ModuleType) -> Any:
    """A `gpiod.LineSettings` for `s`, built with the given `gpiod` module."""
    kw = {
        k: getattr(getattr(gpiod.line, v.enum), v.name) if isinstance(v, Member) else v
        for k, v in gpiod_settings(s).items()
    }
    return gpiod.LineSettings(**kw)


def chip_path(chip: str) -> str:
    """ "/dev/gpiochip0" as given; a bare "gpiochip0" means the one under /dev."""
    return chip if "/" in chip else f"/dev/{chip}"


def _import_gpiod() -> ModuleType:
    try:
        import gpiod
    except ImportError as e:
        raise RuntimeError(
            f"a real GPIO chip needs the gpiod package (pip install 'edgert[gpio]'): {e}"
        ) from None
    return gpiod


class KernelBackend:
    """A real GPIO chip, by its character device path."""

    def __init__(self, chip: str) -> None:
        self.chip = chip_path(chip)

    def request(self, consumer: str, settings: Mapping[int, LineSettings]) -> LineRequest:
        gpiod = _import_gpiod()
        config = {off: to_gpiod(s, gpiod) for off, s in settings.items()}
        try:
            req = gpiod.request_lines(self.chip, config=config, consumer=consumer)
        except ValueError as e:  # e.g. an offset the chip does not have
            raise OSError(errno.EINVAL, f"{self.chip}: {e}") from None
        return KernelRequest(req, gpiod)


class KernelRequest(LineRequest):
    """A `gpiod.LineRequest` behind the `LineRequest` interface."""

    def __init__(self, req: Any, gpiod: ModuleType) -> None:
        self._req = req
        self._gpiod = gpiod
        self._closed = False

    def fileno(self) -> int:
        return int(self._req.fd)

    def read_events(self) -> list[EdgeEvent]:
        if not self._req.wait_edge_events(0):
            return []
        rising = self._gpiod.EdgeEvent.Type.RISING_EDGE
        to_epoch = time.time_ns() - time.monotonic_ns()
        return [
            EdgeEvent(e.line_offset, e.event_type == rising, e.timestamp_ns + to_epoch)
            for e in self._req.read_edge_events()
        ]

    def deadline(self) -> float | None:
        return None

    def get(self, offsets: Iterable[int]) -> dict[int, bool]:
        offs = list(offsets)
        if not offs:
            return {}
        active = self._gpiod.line.Value.ACTIVE
        return {o: v == active for o, v in zip(offs, self._req.get_values(offs), strict=True)}

    def set(self, values: Mapping[int, bool]) -> None:
        if not values:
            return
        v = self._gpiod.line.Value
        self._req.set_values({o: v.ACTIVE if on else v.INACTIVE for o, on in values.items()})

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._req.release()
