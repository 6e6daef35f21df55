"""What to publish: the change/deadband/refresh filter and each device's status.

`ValueFilter` decides per register whether a freshly read value becomes a
point: always with `report = "always"`; with `report = "change"` when it moved
by more than `deadband` from the last value sent (any change when 0), or when
`refresh` seconds passed since. `forget()` makes the next value go out
regardless: after a device was offline its values are sent afresh, never
assumed. `DeviceState` holds a device's `online` flag and error counters, and
gives them as points (`online`, `errors_timeout`, `errors_crc`,
`errors_exception`) when they changed.
"""

from __future__ import annotations

from edgert import Point

from .config import DeviceConfig, RegisterConfig
from .registers import Value

__all__ = ["ValueFilter", "DeviceState"]

_UNSENT = object()


class ValueFilter:
    """Remembers the last value sent for one register."""

    __slots__ = ("reg", "always", "last", "sent_at")

    def __init__(self, reg: RegisterConfig) -> None:
        self.reg = reg
        self.always = reg.report == "always"  # every value goes: nothing to remember
        self.last: object = _UNSENT
        self.sent_at = 0.0

    def wants(self, value: Value, now: float) -> bool:
        reg = self.reg
        last = self.last
        if reg.report == "always" or last is _UNSENT:
            return True
        if reg.refresh is not None and now - self.sent_at >= reg.refresh:
            return True
        if value == last and type(value) is type(last):
            return False
        if (
            reg.deadband
            and isinstance(value, int | float)
            and isinstance(last, int | float)
            and not isinstance(value, bool)
        ):
            return abs(value - last) > reg.deadband
        return True

    def sent(self, value: Value, now: float) -> None:
        self.last = value
        self.sent_at = now

    def forget(self) -> None:
        self.last = _UNSENT


class DeviceState:
    """One device on the bus: its config, online flag, counters and filters."""

    def __init__(self, index: int, cfg: DeviceConfig) -> None:
        self.index = index
        self.cfg = cfg
        self.name = cfg.name
        self.registers = {r.name: r for r in cfg.register}
        self.filters = {r.name: ValueFilter(r) for r in cfg.register}
        self.online: bool | None = None
        self.errors = {"timeout": 0, "crc": 0, "exception": 0}
        self.ready_at = 0.0  # pause_between_requests: no request before this
        self.next_probe = 0.0  # offline: the next request is a probe, not before this
        self._sent_online: bool | None = None
        self._sent_errors = {kind: -1 for kind in self.errors}

    def set_online(self, online: bool) -> None:
        if online != self.online and not online:
            for f in self.filters.values():
                f.forget()
        self.online = online

    def status_points(self, time_ns: int) -> list[Point]:
        """Points for what changed in `online` and the counters since last sent."""
        out = []
        if self.online is not None and self.online != self._sent_online:
            out.append(Point(self.name, "online", "0", self.online, time_ns))
            self._sent_online = self.online
        for kind, n in self.errors.items():
            if self._sent_errors[kind] != n:
                out.append(Point(self.name, f"errors_{kind}", "0", n, time_ns))
                self._sent_errors[kind] = n
        return out
