"""The bridge's byte-level check of a common batch shape, without unpacking it.

Nearly every batch on the bus is what `Outbox` packs from `Point`s: one node,
the six keys in their order, short names, numeric (or short ASCII) values,
no or short ASCII origins. `one_node(data, start)` recognises that shape on
the packed bytes at `data[start:]` with one compiled regular expression, and
returns `(node, points, last)`; then the bridge forwards those bytes as they
are. When every map has the same node, type and key (a driver's one signal),
the bytes before each value are matched as the first map's, a literal, faster
still (a pattern compiled per such prefix, `SAME_MAX` of them at most), and
`last` is the offset of the last map (the signal's latest value, all the
bridge's table of latest values needs); otherwise `last` is -1. Commonest of
all, the maps of a driver's one signal of numbers differ only in their value's
and time's bytes (one number type, uint64 times): those are all the same
length, and checked without a regular expression or a step per map: the
value and time bytes blanked in every map at once and the rest compared with
the first map repeated (`_fixed`).

It is a shortcut, never a second codec: anything it does not recognise
(strings that are not short ASCII, long names, other key orders, several
nodes, an empty batch) returns None and the full check decides
(`edgert.bus.frames.decode_points`). What it accepts, the full check accepts
too, with the same node and count:

- msgpack is self-delimiting and every alternative below starts with its own
  type byte, so a match is a tiling of `data[start:]` by whole maps;
- names are fixstr of `[A-Za-z0-9_-]`, strings fixstr of printable ASCII
  (valid UTF-8), times non-negative unsigned integers, values integers,
  floats, booleans, nil or such strings;
- the maps are counted (`Unpacker.skip`, in C) against the array's header;
  `_fixed` counts them by their common length, and any bytes of a number's
  width after its type byte are a number of that type.
"""

from __future__ import annotations

import re

import msgpack

from ..point import MAX_BATCH_POINTS

__all__ = ["one_node"]


def _fixstr(chars: bytes) -> bytes:
    """fixstr of 1 to 31 characters of class `chars`, each length its own alternative."""
    return b"(?:" + b"|".join(b"\\x%02x%s{%d}" % (0xA0 + n, chars, n) for n in range(1, 32)) + b")"


_NAME = _fixstr(rb"[A-Za-z0-9_\-]")
_TEXT = b"(?:\\xa0|" + _fixstr(rb"[\x20-\x7e]") + b")"  # "" or short printable ASCII
# the likeliest alternatives first: times are uint64 nanoseconds, values often floats
_UINT = rb"(?:\xcf.{8}|[\x00-\x7f]|\xcc.|\xcd.{2}|\xce.{4})"
_VALUE = (
    rb"(?:\xcb.{8}|[\x00-\x7f\xc0\xc2\xc3\xe0-\xff]|\xcd.{2}|\xce.{4}|\xcc.|\xcf.{8}"
    rb"|\xd0.|\xd1.{2}|\xd2.{4}|\xd3.{8}|\xca.{4}|" + _TEXT + b")"
)
_TAIL = _VALUE + b"\\xa4time" + _UINT + b"\\xa6origin" + _TEXT  # after "value"
_HEAD = b"\\x86\\xa4node" + _NAME + b"\\xa4type" + _NAME + b"\\xa3key" + _NAME + b"\\xa5value"
# the first map's node is captured; every later map must repeat it
_BATCH = re.compile(
    b"\\x86\\xa4node(?P<node>"
    + _NAME
    + b")\\xa4type"
    + _NAME
    + b"\\xa3key"
    + _NAME
    + b"\\xa5value"
    + _TAIL
    + b"(?:\\x86\\xa4node(?P=node)\\xa4type"
    + _NAME
    + b"\\xa3key"
    + _NAME
    + b"\\xa5value"
    + _TAIL
    + b")*",
    re.DOTALL,
)
_FIRST = re.compile(_HEAD, re.DOTALL)  # one map's bytes up to its value
# the same node, type and key in every map (a driver's one signal): the bytes before
# each value are the first map's, matched as a literal (faster than the names' rule)
_SAME: dict[bytes, re.Pattern[bytes]] = {}
SAME_MAX = 64  # patterns compiled at most, per process (a few ms each; then _BATCH only)


def _same(head: bytes) -> re.Pattern[bytes] | None:
    pattern = _SAME.get(head)
    if pattern is None and len(_SAME) < SAME_MAX:
        pattern = _SAME[head] = re.compile(b"(?:" + re.escape(head) + _TAIL + b")+", re.DOTALL)
    return pattern


def one_node(data: bytes, start: int = 0) -> tuple[str, int, int] | None:
    """(node, points, last) when `data[start:]` is a one-node batch of the common shape,
    else None; `last` is the offset in `data` of the last map when every map has the
    same node, type and key, else -1."""
    head = data[start] if start < len(data) else 0
    if 0x91 <= head <= 0x9F:
        count, body = head & 0x0F, start + 1
    elif head == 0xDC and start + 3 <= len(data):
        count, body = int.from_bytes(data[start + 1 : start + 3], "big"), start + 3
    elif head == 0xDD and start + 5 <= len(data):
        count, body = int.from_bytes(data[start + 1 : start + 5], "big"), start + 5
    else:
        return None
    if not 0 < count <= MAX_BATCH_POINTS:
        return None
    first = _FIRST.match(data, body)
    if first is None:
        return None
    head = first.group()
    node = head[7 : 7 + (head[6] - 0xA0)].decode("ascii")
    last = _fixed(data, body, count, first.end())
    if last is not None:
        return node, count, last
    same = _same(head)
    uniform = same is not None and same.fullmatch(data, body) is not None
    if not uniform and _BATCH.fullmatch(data, body) is None:
        return None
    u = msgpack.Unpacker(max_buffer_size=len(data))  # the default buffer is a megabyte
    u.feed(memoryview(data)[body:])
    skip = u.skip
    try:
        for _ in range(count - 1):
            skip()
        last = u.tell()
        skip()
    except msgpack.OutOfData:
        return None  # fewer maps than the header says
    if u.tell() != len(data) - body:
        return None  # more maps than the header says
    return node, count, body + last if uniform else -1


# value type byte -> bytes after it: the numbers of a fixed width (any bytes are one)
_WIDTH = {0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")


def _fixed(data: bytes, body: int, count: int, v: int) -> int | None:
    """The offset of the last map when the `count` maps from `body` are the first one
    repeated (whose names `_FIRST` matched, up to its value at `v`) but for their
    values and times: a value of one fixed-width number type, a uint64 time, one
    short printable origin. Checked by blanking the value and time bytes of every
    map (a column at a time, in C) and comparing with the first map's bytes
    repeated; any bytes there are a number of that type. Else None."""
    width = _WIDTH.get(data[v]) if v < len(data) else None
    if width is None:
        return None
    t = v + 1 + width  # "time"
    if data[t : t + 6] != b"\xa4time\xcf" or data[t + 14 : t + 21] != b"\xa6origin":
        return None
    o = data[t + 21] - 0xA0 if t + 21 < len(data) else -1
    if not 0 <= o <= 31 or _PRINTABLE.fullmatch(data, t + 22, t + 22 + o) is None:
        return None
    size = t + 22 + o - body  # every map's length
    if len(data) - body != count * size or t + 22 + o > len(data):
        return None
    blank = bytes(count)
    maps = bytearray(data[body:])
    one = bytearray(data[body : body + size])
    for j in (*range(v + 1 - body, t - body), *range(t + 6 - body, t + 14 - body)):
        maps[j::size] = blank
        one[j] = 0
    if maps != one * count:
        return None
    return body + (count - 1) * size
