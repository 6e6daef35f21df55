"""Gateway configuration: TOML loading and validation into typed dataclasses.

`load(path)` reads one gateway file (docs/design.md, section 3) and returns a
`GatewayConfig`; anything wrong raises `ConfigError` whose message names the
file, the table and the key. `overlay(local, desired, where)` is what a
fleet-managed gateway runs: that config with the sections of a desired TOML
text in place of its own. Drivers describe their own keys as dataclasses
(`Actor.Config`); `decode()` fills them from TOML tables by their type hints, so
no driver parses its config by hand. Field metadata adds bounds and a
description: `field(default=1.0, metadata={"gt": 0, "doc": "seconds between
polls"})`; the keys are `min`, `max`, `gt`, `lt` (numbers, for number fields),
`name` (true: a subject token) and `doc` (shown by `edgert drivers --keys`).
Every problem of a file is reported at once (`ConfigError.problems`, one line
each), an unknown key with the known key it most resembles ("did you mean").
Any other metadata key is a mistake in the driver and refused (`check_fields`).
A dataclass may define `check(self)` raising `Invalid(key, message)` for checks
across fields.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .point import valid_name
from .rundir import runtime_dir_of

__all__ = [
    "ConfigError",
    "Invalid",
    "check_fields",
    "decode",
    "load",
    "loads",
    "GatewayConfig",
    "FleetSection",
    "DriverSpec",
    "overlay",
    "LOCAL_ONLY",
    "resolve_driver",
    "installed_drivers",
    "RESERVED_NAMES",
]

RESERVED_NAMES = frozenset({"bridge", "nats"})


class ConfigError(Exception):
    """A configuration that cannot be used; the message names file, table and key.

    `problems` holds every problem found, one line each; the message is those lines.
    """

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def did_you_mean(key: str, known: Any) -> str:
    """` (did you mean 'x'?)` for the known name closest to a mistyped `key`, else ""."""
    import difflib  # only when a key is wrong: every actor process imports this module

    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Invalid(ValueError):
    """Raised by a config dataclass's `check()` for a bad value of `key`."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def _type_name(t: Any) -> str:
    origin = typing.get_origin(t)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(t))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(t))
    if origin is list:
        (a,) = typing.get_args(t)
        return f"a list of {_type_name(a)}"
    if dataclasses.is_dataclass(t):
        return "a table"
    if t is type(None):
        return "nothing"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        t, getattr(t, "__name__", str(t))
    )


class _Mismatch(Exception):
    pass


def _convert(t: Any, v: Any, where: str) -> Any:
    origin = typing.get_origin(t)
    if t is Any:
        return v
    if origin is Literal:
        if v in typing.get_args(t) and type(v) is type(typing.get_args(t)[0]):
            return v
        raise _Mismatch
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(t):
            try:
                return _convert(a, v, where)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is list:
        (a,) = typing.get_args(t)
        if not isinstance(v, list):
            raise _Mismatch
        out, problems = [], []
        for i, x in enumerate(v):
            try:
                out.append(_convert(a, x, f"{where}[{i}]"))
            except ConfigError as e:  # every table of the array is checked
                problems += e.problems
        if problems:
            raise ConfigError(problems)
        return out
    if origin is dict:
        if not isinstance(v, dict):
            raise _Mismatch
        return dict(v)
    if dataclasses.is_dataclass(t):
        if not isinstance(v, dict):
            raise _Mismatch
        return decode(t, v, where)
    if t is type(None):
        if v is None:
            return None
        raise _Mismatch
    if t is bool:
        if isinstance(v, bool):
            return v
        raise _Mismatch
    if t is int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        raise _Mismatch
    if t is float:
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
        raise _Mismatch
    if t is str:
        if isinstance(v, str):
            return v
        raise _Mismatch
    raise TypeError(f"config type {t!r} is not supported")


def decode(cls: type, table: dict[str, Any], where: str, also: tuple[str, ...] = ()) -> Any:
    """Build dataclass `cls` from a TOML table; `where` names the table in errors.

    Unknown keys (with a "did you mean" among the fields and `also`), missing
    required keys, wrong types and values outside the bounds given in field
    metadata (`min`, `max`, `gt`, `lt`, `name`) raise ConfigError, all of them
    at once. List fields of dataclasses map to TOML arrays of tables (`[[driver.device]]`).
    """
    hints = check_fields(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    problems: list[str] = []
    unknown = [k for k in table if k not in fields]
    known = ", ".join(sorted(fields)) or "none"
    for k in unknown:
        hint = did_you_mean(k, [*fields, *also])
        problems.append(f"{where}: unknown key {k!r}{hint} (known keys: {known})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                typo = [k for k in unknown if did_you_mean(k, [name])]
                note = f" ({typo[0]!r} is there: a typo?)" if typo else ""
                problems.append(f"{where}: missing required key {name!r}{note}")
            continue
        v = table[name]
        t = hints[name]
        sub = f"{where} > {name}" if is_table_list(t) else where
        try:
            v = _convert(t, v, sub)
            _check_bounds(where, name, v, f.metadata)
        except _Mismatch:
            problems.append(f"{where}: key {name!r} must be {_type_name(t)}, got {_show(v)}")
            continue
        except ConfigError as e:
            problems += e.problems
            continue
        kwargs[name] = v
    if problems:
        raise ConfigError(problems)
    try:
        obj = cls(**kwargs)
        check = getattr(obj, "check", None)
        if callable(check):
            check()
    except Invalid as e:
        raise ConfigError(f"{where}: key {e.key!r}: {e.message}") from None
    return obj


def is_table_list(t: Any) -> bool:
    """True for a field type `list[SomeDataclass]` (a TOML array of tables)."""
    return typing.get_origin(t) is list and dataclasses.is_dataclass(typing.get_args(t)[0])


def _show(v: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}.get(
        type(v), "table" if isinstance(v, dict) else type(v).__name__
    )
    r = repr(v)
    return f"{kind} {r if len(r) < 40 else r[:37] + '...'}"


def _check_bounds(where: str, name: str, v: Any, meta: Any) -> None:
    if v is None:
        return
    if "min" in meta and v < meta["min"]:
        raise ConfigError(f"{where}: key {name!r} must be >= {meta['min']}, got {v!r}")
    if "max" in meta and v > meta["max"]:
        raise ConfigError(f"{where}: key {name!r} must be <= {meta['max']}, got {v!r}")
    if "gt" in meta and not v > meta["gt"]:
        raise ConfigError(f"{where}: key {name!r} must be > {meta['gt']}, got {v!r}")
    if "lt" in meta and not v < meta["lt"]:
        raise ConfigError(f"{where}: key {name!r} must be < {meta['lt']}, got {v!r}")
    if meta.get("name") and not valid_name(v):
        raise ConfigError(
            f"{where}: key {name!r} value {v!r} may contain only letters, digits, '_' and '-'"
        )


# --- field metadata: bounds and docs ------------------------------------------------

BOUNDS = ("min", "max", "gt", "lt")
METADATA_KEYS = frozenset({*BOUNDS, "name", "doc"})


@functools.cache  # a class is checked once: a config of 500 devices decodes its tables 15,000 times
def check_fields(cls: type) -> dict[str, Any]:
    """Check the field metadata of config dataclass `cls` (and the tables in it).

    Refuses, with TypeError naming the class and field, what is a mistake of the
    driver's author: an unknown metadata key (a typo such as "mx"), a bound that
    is not a number or sits on a field that is not a number, `name` on a field
    that is not a string, a `doc` that is not a string. Returns the field types.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        where = f"{cls.__qualname__}.{f.name}"
        meta = f.metadata
        unknown = sorted(k for k in meta if k not in METADATA_KEYS)
        if unknown:
            known = ", ".join(sorted(METADATA_KEYS))
            raise TypeError(f"{where}: unknown field metadata key {unknown[0]!r} (known: {known})")
        t = hints[f.name]
        scalars = _scalar_types(t)
        for b in BOUNDS:
            if b not in meta:
                continue
            v = meta[b]
            if not isinstance(v, int | float) or isinstance(v, bool):
                raise TypeError(f"{where}: metadata {b!r} must be a number, got {v!r}")
            if not scalars or not scalars <= {int, float}:
                raise TypeError(f"{where}: metadata {b!r} needs a number field, not {t!r}")
        if "name" in meta and (meta["name"] is not True or scalars != {str}):
            raise TypeError(f"{where}: metadata 'name' must be True, on a str field")
        if "doc" in meta and not isinstance(meta["doc"], str):
            raise TypeError(f"{where}: metadata 'doc' must be a string")
        for sub in _tables_in(t):
            check_fields(sub)
    return hints


def _scalar_types(t: Any) -> set[Any]:
    """The types a field may hold besides None (empty for lists, tables, literals)."""
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        out: set[Any] = set()
        for a in typing.get_args(t):
            if a is not type(None):
                out |= _scalar_types(a)
        return out
    return {t} if t in (int, float, str, bool) else set()


def _tables_in(t: Any) -> list[type]:
    if dataclasses.is_dataclass(t):
        return [t]  # type: ignore[list-item]
    return [x for a in typing.get_args(t) for x in _tables_in(a)]


def unique(where: str, key: str, items: list[Any], attr: str = "name") -> None:
    """Raise ConfigError when two items share the same `attr` (duplicate names)."""
    seen: set[Any] = set()
    for it in items:
        v = getattr(it, attr)
        if v in seen:
            raise ConfigError(f"{where}: duplicate {key} {attr} {v!r}")
        seen.add(v)


# --- the gateway's own sections -------------------------------------------------


@dataclass
class GatewaySection:
    id: str = field(metadata={"name": True})
    runtime_dir: str | None = None
    data_dir: str | None = None
    # whether the wall clock is synchronized: "kernel" (adjtimex), "none" (never
    # checked), or "file:PATH" (a JSON file; tests and simulations)
    clock: str = "kernel"
    # points read before the clock's first sync wait in the spool for it at most this
    # long after the first connection to NATS: seconds, or "90s", "10m", "1h"; 0 (the
    # default): no hold, they go out at once with Edgert-Clock: unsynced
    clock_hold: float | str = 0.0
    crash_safe_outbox: bool = field(
        default=True,
        metadata={
            "doc": "keep each driver's unacknowledged points in a file under runtime_dir, "
            "so a crash of the driver loses none (false: in memory only, a few µs less "
            "CPU per point)"
        },
    )

    def check(self) -> None:
        if self.clock not in ("kernel", "none") and not self.clock.startswith("file:"):
            raise Invalid("clock", f"expected 'kernel', 'none' or 'file:PATH', got {self.clock!r}")
        self.clock_hold = duration("clock_hold", self.clock_hold)


_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(key: str, v: float | str) -> float:
    """Seconds from a number or a string such as "90s", "10m", "1.5h"; Invalid if not."""
    import math
    import re

    seconds: float | None = None
    if isinstance(v, int | float) and not isinstance(v, bool):
        seconds = float(v)
    elif isinstance(v, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smh]?)\s*", v)
        if m:
            seconds = float(m[1]) * _UNITS[m[2]]
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise Invalid(
            key, f'expected seconds >= 0 or a duration such as "90s", "10m", "1h"; got {v!r}'
        )
    return seconds


@dataclass
class SupervisorSection:
    intensity: int = field(default=5, metadata={"min": 0})
    period: float = field(default=30.0, metadata={"gt": 0})
    backoff_min: float = field(default=0.1, metadata={"min": 0})
    backoff_max: float = field(default=10.0, metadata={"min": 0})
    shutdown_timeout: float = field(default=5.0, metadata={"gt": 0})
    heartbeat_timeout: float = field(default=10.0, metadata={"gt": 0})
    # before its first heartbeat an actor may be slow (imports on a small CPU): it is
    # judged hung only after max(start_timeout, heartbeat_timeout)
    start_timeout: float = field(default=30.0, metadata={"gt": 0})
    healthy_after: float = field(default=10.0, metadata={"min": 0})
    failed_retry: float = field(
        default=60.0, metadata={"min": 0}
    )  # 0: a failed driver stays failed

    def check(self) -> None:
        if self.backoff_max < self.backoff_min:
            raise Invalid("backoff_max", f"must be >= backoff_min ({self.backoff_min})")


# [nats] ack_timeout: below the least, sessions would end on ordinary acks; above the
# most, a message NATS lost would hold the points behind it that long
ACK_TIMEOUT_MIN = 0.1
ACK_TIMEOUT_MAX = 600.0


@dataclass
class NatsSection:
    url: str | list[str] = "nats://127.0.0.1:4222"
    prefix: str = field(default="edgert", metadata={"name": True})
    encoding: Literal["msgpack", "json"] = "msgpack"
    jetstream: bool = False
    stream: str | None = field(
        default=None,
        metadata={"name": True, "doc": "the JetStream stream; unset: EDGERT_<gateway id>"},
    )
    stream_max_bytes: int = field(
        default=256 * 1024 * 1024,
        metadata={
            "min": 0,
            "doc": "a stream edgert creates keeps at most this many bytes; 0: no limit",
        },
    )
    stream_max_age: float = field(
        default=7 * 24 * 3600.0,
        metadata={
            "min": 0,
            "doc": "a stream edgert creates keeps messages this many seconds; 0: no limit",
        },
    )
    jetstream_domain: str | None = field(
        default=None,
        metadata={"name": True, "doc": "the JetStream domain (a leaf node's own JetStream)"},
    )
    ack_timeout: float = field(
        default=5.0,
        metadata={
            "gt": 0,
            "max": ACK_TIMEOUT_MAX,
            "doc": "seconds NATS has to acknowledge a publish (the JetStream ack; on core "
            "NATS a round trip behind it) before the session is ended and what it had not "
            "acknowledged is published again in the next one",
        },
    )
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    spool_max_bytes: int = field(default=64 * 1024 * 1024, metadata={"min": 4096})
    spool_sync: Literal["normal", "full"] = "normal"  # full: fsync before acking (power cuts)
    embedded: bool = False
    enabled: bool = True

    def check(self) -> None:
        urls = [self.url] if isinstance(self.url, str) else self.url
        if not urls:
            raise Invalid("url", "must name at least one server")
        for u in urls:
            if "://" not in u:
                raise Invalid("url", f"{u!r} is not a URL like nats://host:4222")
        if (self.user is None) != (self.password is None):
            raise Invalid("password" if self.user else "user", "user and password go together")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise Invalid("tls_key", "tls_cert and tls_key go together")
        if self.ack_timeout < ACK_TIMEOUT_MIN:
            raise Invalid(
                "ack_timeout",
                f"must be at least {ACK_TIMEOUT_MIN:g} s, got {self.ack_timeout!r}: acks that"
                " late are ordinary (a busy server, a disk write), and each would end the session",
            )

    @property
    def urls(self) -> list[str]:
        return [self.url] if isinstance(self.url, str) else list(self.url)


@dataclass
class FleetSection:
    """`[fleet]`: this gateway is managed from NATS (always read from the local file)."""

    enabled: bool = field(
        default=False,
        metadata={
            "doc": "watch the desired config in KV bucket `bucket` (key: the gateway id), "
            "apply each new revision and report the outcome in bucket edgert-applied"
        },
    )
    bucket: str = field(
        default="edgert-config",
        metadata={
            "doc": "the KV bucket of desired configs; the value is TOML, every section but "
            "[gateway] and [fleet] (those always come from the local file)"
        },
    )
    health_timeout: float = field(
        default=30.0,
        metadata={
            "gt": 0,
            "doc": "seconds a pushed config has to bring every actor to running (and the "
            "bridge to NATS); else the last good config is restored (rolled_back)",
        },
    )

    def check(self) -> None:
        # a JetStream KV bucket name: letters, digits, '_' and '-'
        if not valid_name(self.bucket):
            raise Invalid(
                "bucket", f"{self.bucket!r} may contain only letters, digits, '_' and '-'"
            )


@dataclass
class DriverSpec:
    """One `[[driver]]`: its common keys, its class, and its own decoded config."""

    name: str
    type: str
    restart: Literal["permanent", "transient", "temporary"]
    cls: type
    config: Any
    raw: dict[str, Any]
    critical: bool = False  # given up on: tear the gateway down instead of `failed`


@dataclass
class GatewayConfig:
    path: str
    gateway: GatewaySection
    supervisor: SupervisorSection
    nats: NatsSection
    drivers: list[DriverSpec]
    fleet: FleetSection = field(default_factory=FleetSection)

    @property
    def runtime_dir(self) -> Path:
        return runtime_dir_for(self.gateway)

    @property
    def data_dir(self) -> Path:
        if self.gateway.data_dir:
            return Path(self.gateway.data_dir)
        base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
        return Path(base) / "edgert" / self.gateway.id


def runtime_dir_for(gw: GatewaySection) -> Path:
    return runtime_dir_of(gw.id, gw.runtime_dir)


# --- drivers ----------------------------------------------------------------------

ENTRY_POINT_GROUP = "edgert.drivers"

# The entry points this distribution registers itself (pyproject.toml; a test keeps
# them equal): a config of shipped drivers alone resolves without importlib.metadata,
# whose scan of every installed distribution costs each gateway process memory.
SHIPPED = {
    "sim": "edgert_drivers.sim:SimDriver",
    "modbus": "edgert_drivers.modbus:ModbusDriver",
    "gpio": "edgert_drivers.gpio:GpioDriver",
}


def installed_drivers() -> dict[str, str]:
    """Driver type name -> "module:Class", from the `edgert.drivers` entry points."""
    from importlib.metadata import entry_points  # here: a driver process never needs it

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def resolve_driver(type_name: str) -> type:
    """The Actor class for a driver `type`: an entry point name or "package.module:Class"."""
    import importlib

    from .actor import Actor

    if type_name in SHIPPED:
        target = SHIPPED[type_name]
    elif ":" in type_name:
        target = type_name
    else:
        eps = installed_drivers()
        if type_name not in eps:
            known = ", ".join(sorted(eps)) or "none installed"
            raise LookupError(f"unknown driver type {type_name!r} (installed: {known})")
        target = eps[type_name]
    mod_name, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        hint = ""
        top = mod_name.split(".")[0]
        if isinstance(e, ModuleNotFoundError) and e.name == top:
            hint = (
                " (the working directory is not on the import path: install the"
                " package, e.g. `pip install -e .`, or set PYTHONPATH)"
            )
        raise LookupError(
            f"driver type {type_name!r}: cannot import {mod_name!r}: {e}{hint}"
        ) from None
    except TypeError as e:  # a mistake in the driver's config class (check_fields)
        raise LookupError(f"driver type {type_name!r}: {mod_name!r} is broken: {e}") from None
    except SyntaxError as e:  # its file, line and the text: the driver's author fixes it
        where = f"{e.filename}, line {e.lineno}" if e.filename else "?"
        raise LookupError(
            f"driver type {type_name!r}: {mod_name!r} does not load: {e.msg} ({where})"
        ) from None
    except Exception as e:  # noqa: BLE001 - whatever its import raises: named, not a crash
        raise LookupError(
            f"driver type {type_name!r}: {mod_name!r} does not load: {type(e).__name__}: {e}"
        ) from None
    cls = getattr(mod, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise LookupError(f"driver type {type_name!r}: {target!r} is not an edgert Actor class")
    return cls


_COMMON = ("name", "type", "restart", "critical")


def _driver(path: str, i: int, table: Any) -> DriverSpec:
    where = f"{path}: [[driver]] #{i + 1}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    problems: list[str] = []
    name = table.get("name")
    if name is None:
        problems.append(f"{where}: missing required key 'name'")
    elif not valid_name(name):
        problems.append(
            f"{where}: key 'name' value {name!r} may contain only letters, digits, '_' and '-'"
        )
    else:
        where = f"{path}: [[driver]] {name!r}"
        if name in RESERVED_NAMES:
            problems.append(
                f"{where}: key 'name': {name!r} is reserved for the runtime's own actors"
            )
    t = table.get("type")
    if not isinstance(t, str):
        typo = [k for k in table if k not in _COMMON and did_you_mean(k, ["type"])]
        note = f"; {typo[0]!r} is there: did you mean 'type'?" if typo else ""
        problems.append(
            f"{where}: missing required key 'type' (a driver type, see `edgert drivers`){note}"
        )
    restart = table.get("restart", "permanent")
    if restart not in ("permanent", "transient", "temporary"):
        problems.append(
            f"{where}: key 'restart' must be 'permanent', 'transient' or 'temporary', got {restart!r}"
        )
    critical = table.get("critical", False)
    if not isinstance(critical, bool):
        problems.append(f"{where}: key 'critical' must be true or false, got {critical!r}")
    if not isinstance(t, str):
        raise ConfigError(problems)
    try:
        cls = resolve_driver(t)
    except LookupError as e:
        raise ConfigError([*problems, f"{where}: key 'type': {e}"]) from None
    own = {k: v for k, v in table.items() if k not in _COMMON}
    cfg_cls = getattr(cls, "Config", None)
    cfg = None
    if cfg_cls is None:
        for k in own:
            hint = did_you_mean(k, _COMMON)
            problems.append(f"{where}: unknown key {k!r}{hint} (driver {t!r} takes no keys)")
    else:
        try:
            cfg = decode(cfg_cls, own, where, also=_COMMON)
        except ConfigError as e:
            problems += e.problems
    if problems:
        raise ConfigError(problems)
    return DriverSpec(
        name=name, type=t, restart=restart, cls=cls, config=cfg, raw=dict(table), critical=critical
    )


def driver_config(type_name: str, table: dict[str, Any], where: str = "[[driver]]") -> Any:
    """A `[[driver]]` table's config object, made by the driver class this process
    imports: what an actor whose code changed since the supervisor imported it is given
    (the supervisor's object would be its old class's; see `edgert.freshcheck`)."""
    cfg_cls = getattr(resolve_driver(type_name), "Config", None)
    if cfg_cls is None:
        return None
    own = {k: v for k, v in table.items() if k not in _COMMON}
    return decode(cfg_cls, own, where, also=_COMMON)


_TOP = ("gateway", "supervisor", "nats", "fleet", "driver")
# Sections a desired config from the fleet's KV bucket never sets: these always come
# from the local file (who the gateway is, and how it is managed).
LOCAL_ONLY = ("gateway", "fleet")


def _parse(text: str, path: str) -> dict[str, Any]:
    import tomllib  # here: a driver process never needs it

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def loads(text: str, path: str = "<config>") -> GatewayConfig:
    """Parse and validate a gateway config from TOML text; every problem at once."""
    return from_doc(_parse(text, path), path)


def overlay(local: GatewayConfig, desired: str, desired_path: str) -> GatewayConfig:
    """The config a fleet-managed gateway runs: `local` (the local file, as `load` read
    it) with every section the `desired` TOML sets (from the KV bucket) in place of the
    local one. The local file is not read again, and its sections are not checked again.

    `[gateway]` and `[fleet]` always come from the local file (the desired text's are
    ignored); a section the desired text leaves out keeps the local file's, so a fleet
    can push `[[driver]]` alone and leave each gateway its own `[nats]` credentials.
    `driver = []` removes every driver. Errors in the desired text name `desired_path`;
    those across sections name both.
    """
    want = _parse(desired, desired_path)
    problems = _unknown(want, desired_path)
    parts = {
        "gateway": local.gateway,
        "supervisor": local.supervisor,
        "nats": local.nats,
        "fleet": local.fleet,
        "driver": local.drivers,
    }
    mine = {k: v for k, v in want.items() if k not in LOCAL_ONLY}
    parts.update(_sections(mine, desired_path, problems))
    return _assemble(parts, f"{local.path} + {desired_path}", problems)


_SECTIONS: dict[str, type] = {
    "gateway": GatewaySection,
    "supervisor": SupervisorSection,
    "nats": NatsSection,
    "fleet": FleetSection,
}


def _unknown(doc: dict[str, Any], path: str) -> list[str]:
    """A problem for each top-level key of `doc` that is no table of a gateway config."""
    return [
        f"{path}: unknown table or key {k!r}{did_you_mean(k, _TOP)} (known: {', '.join(_TOP)})"
        for k in doc
        if k not in _TOP
    ]


def _sections(doc: dict[str, Any], path: str, problems: list[str]) -> dict[str, Any]:
    """Decode each table `doc` has: section name (or "driver") -> its value, None when
    broken; every problem is appended to `problems`."""
    out: dict[str, Any] = {}
    for key, cls in _SECTIONS.items():
        if key not in doc:
            continue
        v = doc[key]
        if not isinstance(v, dict):
            problems.append(f"{path}: [{key}] must be a table")
            out[key] = None
            continue
        try:
            out[key] = decode(cls, v, f"{path}: [{key}]")
        except ConfigError as e:
            problems.extend(e.problems)
            out[key] = None
    if "driver" in doc:
        raw_drivers = doc["driver"]
        drivers: list[DriverSpec] = []
        if not isinstance(raw_drivers, list):
            problems.append(f"{path}: 'driver' must be an array of tables ([[driver]])")
            raw_drivers = []
        for i, t in enumerate(raw_drivers):
            try:
                drivers.append(_driver(path, i, t))
            except ConfigError as e:
                problems.extend(e.problems)
        out["driver"] = drivers
    return out


def from_doc(doc: dict[str, Any], path: str) -> GatewayConfig:
    """Validate a parsed TOML document as a gateway config; `path` names it in errors.
    Every problem is found before ConfigError is raised (`problems` lists them)."""
    problems = _unknown(doc, path)
    if "gateway" not in doc:
        problems.append(f'{path}: missing table [gateway] (with id = "...")')
    parts = _sections(doc, path, problems)
    for key, cls in _SECTIONS.items():
        if key != "gateway" and key not in parts:
            parts[key] = decode(cls, {}, f"{path}: [{key}]")  # the defaults
    parts.setdefault("gateway", None)
    parts.setdefault("driver", [])
    return _assemble(parts, path, problems)


def _assemble(parts: dict[str, Any], path: str, problems: list[str]) -> GatewayConfig:
    """The checks across sections, then the config; raise ConfigError with every
    problem (those already in `problems` first)."""
    fleet, nats, drivers = parts["fleet"], parts["nats"], parts["driver"]
    if fleet is not None and nats is not None and fleet.enabled and not nats.enabled:
        problems.append(
            f"{path}: [fleet] key 'enabled': a managed gateway needs NATS ([nats] enabled = true)"
        )
    for check in (
        lambda: unique(f"{path}: [[driver]]", "driver", drivers),
        lambda: _unique_nodes(path, drivers),
    ):
        try:
            check()
        except ConfigError as e:
            problems.extend(e.problems)
    if fleet is not None and fleet.enabled:
        for d in drivers:
            if d.name == "fleet":
                problems.append(
                    f"{path}: [[driver]] 'fleet': key 'name': 'fleet' is the name of the "
                    "runtime's fleet actor when [fleet] enabled = true"
                )
    if problems:
        raise ConfigError(problems)
    return GatewayConfig(path, parts["gateway"], parts["supervisor"], nats, drivers, fleet)


def _unique_nodes(path: str, drivers: list[DriverSpec]) -> None:
    owner: dict[str, str] = {}
    for d in drivers:
        for node in driver_nodes(d):
            if node in owner and owner[node] != d.name:
                raise ConfigError(
                    f"{path}: [[driver]] {d.name!r}: node {node!r} is already owned by driver {owner[node]!r}"
                )
            owner[node] = d.name


def driver_nodes(d: DriverSpec) -> list[str]:
    """The point nodes a driver owns (commands for them are routed to it): `Actor.nodes`."""
    return list(d.cls.nodes(d.name, d.config))


def load(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate the gateway config file at `path`."""
    p = str(path)
    try:
        text = Path(p).read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {unreadable(p, e)}") from None
    return loads(text, p)


def unreadable(path: str, e: OSError) -> str:
    """Why a config file cannot be read; a relative path that is not there also names
    the working directory it was looked for in (the usual slip: another folder)."""
    why = e.strerror or str(e)
    if isinstance(e, FileNotFoundError) and not os.path.isabs(path):
        why += f" (in the working directory {os.getcwd()})"
    return why
