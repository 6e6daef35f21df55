"""Points, the unit of data in edgert, and the batch codec that carries them.

A point is one reading or setting (docs/design.md, section 2). Between processes points
travel in batches: a msgpack (or JSON) array of maps with exactly the six keys
`node`, `type`, `key`, `value`, `time`, `origin`. Decoding never trusts its input:
sizes are bounded, every field is checked, and anything malformed raises
`BadBatch` with a message naming what is wrong.
"""

from __future__ import annotations

import json
import re
import time as _time
from dataclasses import dataclass
from typing import Any

import msgpack

__all__ = ["Point", "BadBatch", "valid_name", "encode_batch", "decode_batch", "MAX_BATCH_BYTES"]

NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
FIELDS = ("node", "type", "key", "value", "time", "origin")
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_BATCH_POINTS = 100_000
MAX_STR = 64 * 1024

Value = float | int | bool | str | None


class BadBatch(ValueError):
    """A batch of points that cannot be decoded or contains an invalid point."""


_KNOWN_NAMES: set[str] = set()  # names already checked and valid (they repeat endlessly)
KNOWN_NAMES_MAX = 4096  # bound: the set starts over when full, so garbage cannot grow it
KNOWN_NAME_LEN = 128  # longer names are checked every time, never remembered


def valid_name(s: object) -> bool:
    """True when `s` can be a node, type or key: `[A-Za-z0-9_-]+`."""
    if type(s) is str and s in _KNOWN_NAMES:
        return True
    if not isinstance(s, str) or NAME_RE.fullmatch(s) is None:
        return False
    if type(s) is str and len(s) <= KNOWN_NAME_LEN:
        if len(_KNOWN_NAMES) >= KNOWN_NAMES_MAX:
            _KNOWN_NAMES.clear()
        _KNOWN_NAMES.add(s)
    return True


@dataclass(slots=True, init=False)
class Point:
    """One reading or setting. `time` is nanoseconds since the epoch; 0 means "now"."""

    node: str
    type: str
    key: str = "0"
    value: Value = None
    time: int = 0
    origin: str = ""

    def __init__(
        self,
        node: str,
        type: str,  # noqa: A002 - the field's name
        key: str = "0",
        value: Value = None,
        time: int = 0,
        origin: str = "",
    ) -> None:
        # written out rather than generated with a __post_init__: a driver makes one
        # Point per reading, and the second call was a sixth of the cost of making it
        known = _KNOWN_NAMES
        try:
            seen = node in known and type in known and key in known
        except TypeError:  # unhashable: not a name
            seen = False
        if not seen:
            _check_names(node, type, key)  # first sight, or not a name at all
        self.node = node
        self.type = type
        self.key = key
        self.value = value
        self.time = _time.time_ns() if time == 0 else time
        self.origin = origin

    def to_map(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "type": self.type,
            "key": self.key,
            "value": self.value,
            "time": self.time,
            "origin": self.origin,
        }


def _check_names(node: object, typ: object, key: object) -> None:
    """Raise ValueError naming the first of `node`, `type`, `key` that is not a name."""
    for name, v in (("node", node), ("type", typ), ("key", key)):
        if not valid_name(v):
            raise ValueError(f"point {name} {v!r} must match [A-Za-z0-9_-]+")


def _check_map(i: int, m: object) -> Point:
    if not isinstance(m, dict):
        raise BadBatch(f"point {i}: expected a map, got {type(m).__name__}")
    if len(m) != 6 or any(k not in m for k in FIELDS):
        raise BadBatch(
            f"point {i}: keys must be exactly {', '.join(FIELDS)}; got {sorted(map(str, m))}"
        )
    for name in ("node", "type", "key"):
        if not valid_name(m[name]):
            raise BadBatch(f"point {i}: {name} {m[name]!r} must match [A-Za-z0-9_-]+")
    v = m["value"]
    if v is not None and not isinstance(v, float | int | str):  # bool is an int
        raise BadBatch(
            f"point {i}: value of type {type(v).__name__} is not float, int, bool, str or null"
        )
    t = m["time"]
    if not isinstance(t, int) or isinstance(t, bool) or t < 0:
        raise BadBatch(f"point {i}: time must be a non-negative integer (ns), got {t!r}")
    if not isinstance(m["origin"], str):
        raise BadBatch(f"point {i}: origin must be a string")
    p = Point.__new__(Point)
    p.node, p.type, p.key, p.value, p.time, p.origin = (
        m["node"],
        m["type"],
        m["key"],
        v,
        t,
        m["origin"],
    )
    return p


def encode_batch(points: list[Point], encoding: str = "msgpack") -> bytes:
    """Encode points as a msgpack (default) or JSON array of six-key maps."""
    maps = [p.to_map() for p in points]
    if encoding == "msgpack":
        return msgpack.packb(maps, use_bin_type=True)
    if encoding == "json":
        return json.dumps(maps, separators=(",", ":")).encode()
    raise ValueError(f"unknown encoding {encoding!r} (msgpack | json)")


def unpack_limited(data: bytes) -> Any:
    """msgpack-decode `data` with every size bounded; raises BadBatch on anything wrong."""
    if len(data) > MAX_BATCH_BYTES:
        raise BadBatch(f"frame of {len(data)} bytes exceeds {MAX_BATCH_BYTES}")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=MAX_STR,
            max_bin_len=MAX_BATCH_BYTES,
            max_array_len=MAX_BATCH_POINTS,
            max_map_len=64,
            max_ext_len=0,
        )
    except Exception as e:  # msgpack raises many types for bad input
        if isinstance(e, msgpack.StackError | RecursionError):
            raise BadBatch("not valid msgpack: nested too deeply") from None
        raise BadBatch(f"not valid msgpack: {e or type(e).__name__}") from None


def decode_batch(data: bytes, encoding: str = "msgpack") -> list[Point]:
    """Decode a batch; raises BadBatch naming the problem for any malformed input."""
    if encoding == "msgpack":
        obj = unpack_limited(data)
    elif encoding == "json":
        if len(data) > MAX_BATCH_BYTES:
            raise BadBatch(f"frame of {len(data)} bytes exceeds {MAX_BATCH_BYTES}")
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadBatch(f"not valid JSON: {e}") from None
    else:
        raise ValueError(f"unknown encoding {encoding!r} (msgpack | json)")
    return points_from_maps(obj)


def points_from_maps(obj: object) -> list[Point]:
    """Validate an already-decoded array of point maps."""
    if not isinstance(obj, list):
        raise BadBatch(f"a batch must be an array of points, got {type(obj).__name__}")
    if len(obj) > MAX_BATCH_POINTS:
        raise BadBatch(f"batch of {len(obj)} points exceeds {MAX_BATCH_POINTS}")
    return [_check_map(i, m) for i, m in enumerate(obj)]
