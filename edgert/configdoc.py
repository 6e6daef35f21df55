"""A config dataclass's keys as `edgert drivers --keys TYPE` prints them.

`describe(cls)` lists every key of a driver's config class, then the keys of
the tables inside it (`[[driver.signal]]`), each with its TOML type and the
bounds from its field metadata, its default (or "required") and its `doc`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from .config import check_fields, is_table_list

__all__ = ["KeyDoc", "describe"]

_SHOWN_BOUNDS = (("min", ">="), ("gt", ">"), ("max", "<="), ("lt", "<"))


@dataclass(frozen=True)
class KeyDoc:
    """One config key as `edgert drivers --keys` shows it."""

    table: str  # "driver", "driver.signal", ...
    key: str
    type: str  # "number > 0", '"sine" | "ramp"', "array of tables [[driver.signal]]"
    default: str  # TOML, or "required"
    doc: str


def describe(cls: type, table: str = "driver") -> list[KeyDoc]:
    """The keys of config dataclass `cls`: type with bounds, default and doc, tables after."""
    hints = check_fields(cls)
    rows: list[KeyDoc] = []
    nested: list[tuple[type, str]] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        t = hints[f.name]
        kind = _toml_type(t)
        if is_table_list(t):
            sub = typing.get_args(t)[0]
            kind = f"array of tables [[{table}.{f.name}]]"
            nested.append((sub, f"{table}.{f.name}"))
        elif dataclasses.is_dataclass(t):
            kind = f"table [{table}.{f.name}]"
            nested.append((t, f"{table}.{f.name}"))  # type: ignore[arg-type]
        meta = f.metadata
        extra = [f"{op} {meta[b]}" for b, op in _SHOWN_BOUNDS if b in meta]
        if meta.get("name"):
            extra.append("letters, digits, _ and -")
        if extra:
            kind += " (" + ", ".join(extra) + ")"
        if f.default is not dataclasses.MISSING:
            default = _toml_value(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = _toml_value(f.default_factory())
        else:
            default = "required"
        rows.append(KeyDoc(table, f.name, kind, default, meta.get("doc", "")))
    for sub, where in nested:
        rows.extend(describe(sub, where))
    return rows


def _toml_type(t: Any) -> str:
    origin = typing.get_origin(t)
    if origin is Literal:
        return " | ".join(_toml_value(a) for a in typing.get_args(t))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_toml_type(a) for a in typing.get_args(t) if a is not type(None))
    if origin is list:
        return f"array of {_toml_type(typing.get_args(t)[0])}"
    if origin is dict:
        return "table"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(
        t, getattr(t, "__name__", str(t))
    )


def _toml_value(v: Any) -> str:
    if v is None:
        return "(unset)"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)
