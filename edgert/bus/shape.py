"""The bridge's byte-level check of a common batch shape, without unpacking it.

Nearly every batch on the bus is what `Outbox` packs from `Point`s: one node,
the six keys in their order, short names, numeric (or short ASCII) values,
no or short ASCII origins. `one_node(data, start)` recognises that shape on
the packed bytes at `data[start:]` with one compiled regular expression, and
returns `(node, points)`; then the bridge forwards those bytes as they are.

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
- the maps are counted (`Unpacker.skip`, in C) against the array's header.
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
_UINT = rb"(?:[\x00-\x7f]|\xcc.|\xcd.{2}|\xce.{4}|\xcf.{8})"
_VALUE = (
    rb"(?:[\x00-\x7f\xc0\xc2\xc3\xe0-\xff]|\xcc.|\xcd.{2}|\xce.{4}|\xcf.{8}"
    rb"|\xd0.|\xd1.{2}|\xd2.{4}|\xd3.{8}|\xca.{4}|\xcb.{8}|" + _TEXT + b")"
)
_REST = (
    b"\\xa4type" + _NAME + b"\\xa3key" + _NAME + b"\\xa5value" + _VALUE
    + b"\\xa4time" + _UINT + b"\\xa6origin" + _TEXT
)  # fmt: skip
# the first map's node is captured; every later map must repeat it
_BATCH = re.compile(
    b"\\x86\\xa4node(?P<node>"
    + _NAME
    + b")"
    + _REST
    + b"(?:\\x86\\xa4node(?P=node)"
    + _REST
    + b")*",
    re.DOTALL,
)


def one_node(data: bytes, start: int = 0) -> tuple[str, int] | None:
    """(node, points) when `data[start:]` is a one-node batch of the common shape, else None."""
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
    m = _BATCH.fullmatch(data, body)
    if m is None:
        return None
    u = msgpack.Unpacker(max_buffer_size=len(data))  # the default buffer is a megabyte
    u.feed(memoryview(data)[body:])
    skip = u.skip
    try:
        for _ in range(count):
            skip()
    except msgpack.OutOfData:
        return None  # fewer maps than the header says
    if u.tell() != len(data) - body:
        return None  # more maps than the header says
    node = m.group("node")
    return node[1:].decode("ascii"), count
