"""Gateway configuration: TOML loading and validation into typed dataclasses.

`load(path)` reads one gateway file (docs/design.md, section 3) and returns a
`GatewayConfig`; anything wrong raises `ConfigError` whose message names the
file, the table and the key. Drivers describe their own keys as dataclasses
(`Actor.Config`); `decode()` fills them from TOML tables by their type hints, so
no driver parses its config by hand. Field metadata adds bounds and a
description: `field(default=1.0, metadata={"gt": 0, "doc": "seconds between
polls"})`; the keys are `min`, `max`, `gt`, `lt` (numbers, for number fields),
`name` (true: a subject token) and `doc` (shown by `edgert drivers --keys`).
Any other metadata key is a mistake in the driver and refused (`check_fields`).
A dataclass may define `check(self)` raising `Invalid(key, message)` for checks
across fields.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

from .point import valid_name

__all__ = [
    "ConfigError",
    "Invalid",
    "check_fields",
    "decode",
    "load",
    "loads",
    "GatewayConfig",
    "DriverSpec",
    "resolve_driver",
    "installed_drivers",
    "RESERVED_NAMES",
]

RESERVED_NAMES = frozenset({"bridge", "nats"})


class ConfigError(Exception):
    """A configuration that cannot be used; the message names file, table and key."""


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
        return [_convert(a, x, f"{where}[{i}]") for i, x in enumerate(v)]
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


def decode(cls: type, table: dict[str, Any], where: str) -> Any:
    """Build dataclass `cls` from a TOML table; `where` names the table in errors.

    Unknown keys, missing required keys, wrong types and values outside the
    bounds given in field metadata (`min`, `max`, `gt`, `lt`, `name`) raise ConfigError.
    List fields of dataclasses map to TOML arrays of tables (`[[driver.device]]`).
    """
    hints = check_fields(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in table if k not in fields]
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known keys: {known})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}: missing required key {name!r}")
            continue
        v = table[name]
        t = hints[name]
        sub = f"{where} > {name}" if is_table_list(t) else where
        try:
            v = _convert(t, v, sub)
        except _Mismatch:
            raise ConfigError(
                f"{where}: key {name!r} must be {_type_name(t)}, got {_show(v)}"
            ) from None
        _check_bounds(where, name, v, f.metadata)
        kwargs[name] = v
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


@dataclass
class SupervisorSection:
    intensity: int = field(default=5, metadata={"min": 0})
    period: float = field(default=30.0, metadata={"gt": 0})
    backoff_min: float = field(default=0.1, metadata={"min": 0})
    backoff_max: float = field(default=10.0, metadata={"min": 0})
    shutdown_timeout: float = field(default=5.0, metadata={"gt": 0})
    heartbeat_timeout: float = field(default=10.0, metadata={"gt": 0})
    healthy_after: float = field(default=10.0, metadata={"min": 0})
    failed_retry: float = field(
        default=60.0, metadata={"min": 0}
    )  # 0: a failed driver stays failed

    def check(self) -> None:
        if self.backoff_max < self.backoff_min:
            raise Invalid("backoff_max", f"must be >= backoff_min ({self.backoff_min})")


@dataclass
class NatsSection:
    url: str | list[str] = "nats://127.0.0.1:4222"
    prefix: str = field(default="edgert", metadata={"name": True})
    encoding: Literal["msgpack", "json"] = "msgpack"
    jetstream: bool = False
    stream: str = field(default="EDGERT", metadata={"name": True})
    jetstream_domain: str | None = field(default=None, metadata={"name": True})
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

    @property
    def urls(self) -> list[str]:
        return [self.url] if isinstance(self.url, str) else list(self.url)


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
    if gw.runtime_dir:
        return Path(gw.runtime_dir)
    base = os.environ.get("XDG_RUNTIME_DIR")
    root = Path(base) / "edgert" if base else Path(f"/tmp/edgert-{os.getuid()}")
    return root / gw.id


# --- drivers ----------------------------------------------------------------------

ENTRY_POINT_GROUP = "edgert.drivers"


def installed_drivers() -> dict[str, str]:
    """Driver type name -> "module:Class", from the `edgert.drivers` entry points."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def resolve_driver(type_name: str) -> type:
    """The Actor class for a driver `type`: an entry point name or "package.module:Class"."""
    import importlib

    from .actor import Actor

    eps = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if type_name in eps:
        target = eps[type_name].value
    elif ":" in type_name:
        target = type_name
    else:
        known = ", ".join(sorted(eps)) or "none installed"
        raise LookupError(f"unknown driver type {type_name!r} (installed: {known})")
    mod_name, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise LookupError(f"driver type {type_name!r}: cannot import {mod_name!r}: {e}") from None
    except TypeError as e:  # a mistake in the driver's config class (check_fields)
        raise LookupError(f"driver type {type_name!r}: {mod_name!r} is broken: {e}") from None
    cls = getattr(mod, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise LookupError(f"driver type {type_name!r}: {target!r} is not an edgert Actor class")
    return cls


_COMMON = ("name", "type", "restart", "critical")


def _driver(path: str, i: int, table: Any) -> DriverSpec:
    where = f"{path}: [[driver]] #{i + 1}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    name = table.get("name")
    if name is None:
        raise ConfigError(f"{where}: missing required key 'name'")
    if not valid_name(name):
        raise ConfigError(
            f"{where}: key 'name' value {name!r} may contain only letters, digits, '_' and '-'"
        )
    where = f"{path}: [[driver]] {name!r}"
    if name in RESERVED_NAMES:
        raise ConfigError(f"{where}: key 'name': {name!r} is reserved for the runtime's own actors")
    t = table.get("type")
    if not isinstance(t, str):
        raise ConfigError(
            f"{where}: missing required key 'type' (a driver type, see `edgert drivers`)"
        )
    restart = table.get("restart", "permanent")
    if restart not in ("permanent", "transient", "temporary"):
        raise ConfigError(
            f"{where}: key 'restart' must be 'permanent', 'transient' or 'temporary', got {restart!r}"
        )
    critical = table.get("critical", False)
    if not isinstance(critical, bool):
        raise ConfigError(f"{where}: key 'critical' must be true or false, got {critical!r}")
    try:
        cls = resolve_driver(t)
    except LookupError as e:
        raise ConfigError(f"{where}: key 'type': {e}") from None
    own = {k: v for k, v in table.items() if k not in _COMMON}
    cfg_cls = getattr(cls, "Config", None)
    if cfg_cls is None:
        if own:
            raise ConfigError(
                f"{where}: unknown key {next(iter(own))!r} (driver {t!r} takes no keys)"
            )
        cfg = None
    else:
        cfg = decode(cfg_cls, own, where)
    return DriverSpec(
        name=name, type=t, restart=restart, cls=cls, config=cfg, raw=dict(table), critical=critical
    )


_TOP = ("gateway", "supervisor", "nats", "driver")


def loads(text: str, path: str = "<config>") -> GatewayConfig:
    """Parse and validate a gateway config from TOML text."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    for k in doc:
        if k not in _TOP:
            raise ConfigError(f"{path}: unknown table or key {k!r} (known: {', '.join(_TOP)})")
    if "gateway" not in doc:
        raise ConfigError(f'{path}: missing table [gateway] (with id = "...")')

    def section(key: str, cls: type) -> Any:
        v = doc.get(key, {})
        if not isinstance(v, dict):
            raise ConfigError(f"{path}: [{key}] must be a table")
        return decode(cls, v, f"{path}: [{key}]")

    gateway = section("gateway", GatewaySection)
    supervisor = section("supervisor", SupervisorSection)
    nats = section("nats", NatsSection)
    raw_drivers = doc.get("driver", [])
    if not isinstance(raw_drivers, list):
        raise ConfigError(f"{path}: 'driver' must be an array of tables ([[driver]])")
    drivers = [_driver(path, i, t) for i, t in enumerate(raw_drivers)]
    unique(f"{path}: [[driver]]", "driver", drivers)
    _unique_nodes(path, drivers)
    return GatewayConfig(path, gateway, supervisor, nats, drivers)


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
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}") from None
    return loads(text, p)
