"""Bus framing: the msgpack frames between actor processes and the bridge.

Every actor holds one DEALER socket (routing id = its name) connected to the
bridge's ROUTER at `ipc://<runtime_dir>/bus.sock`. Frames are msgpack arrays:

    actor -> bridge   ["P", epoch, seq, first, [maps]]          a batch of points
                      ["P", epoch, seq, first, resent, [maps]]  the same, sent again
                      ["R", cmd_id, ok, error]                  the answer to a command
    bridge -> actor   ["A", epoch, seq]                         every batch <= seq is safe
                      ["C", cmd_id, [point maps]]               a command for the actor

An actor also holds a second DEALER (the same routing id), connected to the
bridge's ROUTER at `ipc://<runtime_dir>/ack.sock`, on which the bridge sends
its acks (on the bus instead while that socket is not connected yet, and to
senders that have none): the actor reads them at each of its own wake-ups and
waits on them only when it needs one (points lingering for it, credit running
low, a resend due), while commands on the bus wake it at once.

`epoch` is new each time an actor starts with nothing to recover; a process that
recovers its predecessor's ring file (`edgert.bus.ring`) goes on with its epoch
and seqs. `seq` counts an epoch's batches from 1;
`first` is the oldest seq the sender still holds; `resent` (true) marks a batch
the sender has sent before, perhaps to a bridge that died after publishing it:
the bridge then keeps its own message id for it (see `edgert.bridge.forwarder`).
`accepts(last, seq, first)` is the receiver's rule (see `edgert.bus.inbox`).

Decoding never trusts its input: sizes are bounded, every field is checked, and
anything malformed raises `BadFrame` naming the problem. The bridge, which only
forwards points, uses `decode_points`: it checks the same rules on the raw maps
(names through a bounded cache of valid names) and splits the batch by node
without building `Point` objects (a one-node batch of the usual shape is
checked on its packed bytes, `edgert.bus.shape`); a malformed frame is
refused whole. Each part also carries what the bridge's table of latest
values needs of it: one map when every point of the part is the same
(node, type, key), else the part itself.
`p_header` reads only the header, so that a resent batch the bridge already
has is acknowledged without unpacking its points again.
"""

from __future__ import annotations

import os
from typing import Any

import msgpack

from ..point import (
    _KNOWN_NAMES,
    MAX_BATCH_BYTES,
    MAX_BATCH_POINTS,
    BadBatch,
    points_from_maps,
    unpack_limited,
    valid_name,
)
from .shape import one_node

__all__ = [
    "BadFrame",
    "accepts",
    "bus_endpoint",
    "ack_endpoint",
    "new_epoch",
    "encode_frame",
    "decode_frame",
    "decode_points",
    "decode_points_after",
    "p_head",
    "p_header",
    "Part",
]

_PACK = msgpack.Packer(use_bin_type=True).pack


def accepts(last: int, seq: int, first: int) -> bool:
    """The receiver's rule: is batch `seq` (sender holds from `first`) next after `last`?"""
    return seq == last + 1 or (seq == first and first > last + 1)


class BadFrame(ValueError):
    """A frame on the bus that is not one of the known, well-formed kinds."""


def bus_endpoint(runtime_dir: os.PathLike[str] | str) -> str:
    return f"ipc://{os.fspath(runtime_dir)}/bus.sock"


def ack_endpoint(runtime_dir: os.PathLike[str] | str) -> str:
    """Where the bridge's acks go (see the module doc): apart from the bus, so that an
    actor waits on its commands without being woken by every ack."""
    return f"ipc://{os.fspath(runtime_dir)}/ack.sock"


def new_epoch(name: str) -> str:
    return f"{name}.{os.getpid()}.{os.urandom(4).hex()}"


def encode_frame(*parts: Any) -> bytes:
    return msgpack.packb(list(parts), use_bin_type=True)


def p_frame(epoch: str, seq: int, first: int, packed_maps: bytes, resent: bool = False) -> bytes:
    """A P frame around an already packed array of point maps (no repacking)."""
    if resent:
        return (
            b"\x96" + _PACK("P") + _PACK(epoch) + _PACK(seq) + _PACK(first) + b"\xc3" + packed_maps
        )
    return b"\x95" + _PACK("P") + _PACK(epoch) + _PACK(seq) + _PACK(first) + packed_maps


def _unpack(data: bytes) -> list[Any]:
    try:
        obj = unpack_limited(data)
    except BadBatch as e:
        raise BadFrame(str(e)) from None
    if not isinstance(obj, list) or not obj or not isinstance(obj[0], str):
        raise BadFrame("a frame must be an array starting with its kind")
    return obj


def _p_header(obj: list[Any]) -> tuple[str, int, int, bool, Any]:
    if len(obj) == 5:
        _, epoch, seq, first, maps = obj
        resent = False
    else:
        _, epoch, seq, first, resent, maps = obj
        if type(resent) is not bool:
            raise BadFrame("resent must be a boolean")
    _check_str_int(epoch, seq)
    _check_str_int(epoch, first)
    return epoch, seq, first, resent, maps


def decode_frame(data: bytes) -> tuple[Any, ...]:
    """Decode and check one bus frame; raises BadFrame naming what is wrong.

    Returns ("P", epoch, seq, first, [Point]), ("R", cmd_id, ok, error),
    ("A", epoch, seq) or ("C", cmd_id, [Point]).
    """
    obj = _unpack(data)
    kind = obj[0]
    try:
        if kind == "P" and len(obj) in (5, 6):
            epoch, seq, first, _, maps = _p_header(obj)
            return ("P", epoch, seq, first, points_from_maps(maps))
        return _other(kind, obj)
    except BadBatch as e:
        raise BadFrame(f"frame {kind!r}: {e}") from None


def _other(kind: str, obj: list[Any]) -> tuple[Any, ...]:
    if kind == "A" and len(obj) == 3:
        _, epoch, seq = obj
        _check_str_int(epoch, seq)
        return ("A", epoch, seq)
    if kind == "C" and len(obj) == 3:
        _, cmd_id, maps = obj
        if not isinstance(cmd_id, int) or isinstance(cmd_id, bool):
            raise BadFrame("command id must be an integer")
        return ("C", cmd_id, points_from_maps(maps))
    if kind == "R" and len(obj) == 4:
        _, cmd_id, ok, error = obj
        if not isinstance(cmd_id, int) or not isinstance(ok, bool) or not isinstance(error, str):
            raise BadFrame("a reply is [R, int id, bool ok, str error]")
        return ("R", cmd_id, ok, error)
    raise BadFrame(f"unknown frame kind {kind!r} with {len(obj)} parts")


def p_header(data: bytes) -> tuple[str, int, int, bool] | None:
    """(epoch, seq, first, resent) of a P frame, read without unpacking its points;
    None when `data` does not start like a well-formed P frame (decode it to know why).

    The bridge uses it to acknowledge a resent batch it already has without
    checking its points again: resends come in bursts when acks are slow.
    """
    head = p_head(data)
    return None if head is None else head[:4]


Head = tuple[str, int, int, bool, int]  # epoch, seq, first, resent, offset of the point maps


def p_head(data: bytes) -> Head | None:
    """`p_header` and the offset of the packed point maps in `data`: what the bridge
    reads once per batch and hands on to `decode_points`."""
    if len(data) > MAX_BATCH_BYTES or data[:1] not in (b"\x95", b"\x96"):
        return None
    try:
        u = msgpack.Unpacker(
            raw=False, max_str_len=256, max_bin_len=0, max_array_len=6, max_buffer_size=320
        )  # a small buffer: the default one is a megabyte, allocated for each Unpacker;
        # max_array_len bounds the header too in msgpack's pure-Python unpacker (1.0.3)
        u.feed(data[:320])
        n = u.read_array_header()
        kind, epoch, seq, first = u.unpack(), u.unpack(), u.unpack(), u.unpack()
        resent = u.unpack() if n == 6 else False
    except Exception:  # noqa: BLE001 - anything odd: the full decode names it
        return None
    if kind != "P" or type(epoch) is not str or len(epoch) > 200 or type(resent) is not bool:
        return None
    if type(seq) is not int or type(first) is not int or seq < 0 or first < 0:
        return None
    return epoch, seq, first, resent, u.tell()


# (node, points, packed array of that node's point maps, a packed array holding at least
# the latest map of each (node, type, key) in them: the last map alone when they all
# share one, else the same array)
Part = tuple[str, int, bytes, bytes]


def decode_points(data: bytes) -> tuple[Any, ...]:
    """`decode_frame` for the bridge: P frames come back split by node, as raw bytes.

    Returns ("P", epoch, seq, first, resent, [Part]) or what `decode_frame`
    returns for the other kinds. The maps are checked as
    strictly as `points_from_maps` checks them (it names the problem when they
    are not well-formed); no `Point` is built. A one-node batch of the usual
    shape is checked on its bytes (`edgert.bus.shape`) and forwarded as is.
    """
    return decode_points_after(data, p_head(data))


def decode_points_after(data: bytes, head: Head | None) -> tuple[Any, ...]:
    """`decode_points` when the caller has read `head = p_head(data)` already (the bridge
    does, to skip resends): the header is parsed once per batch."""
    if head is not None:
        epoch, seq, first, resent, at = head
        fast = one_node(data, at)
        if fast is not None:
            node, n, last = fast
            packed = data[at:]
            latest = b"\x91" + data[last:] if last >= 0 else packed
            return ("P", epoch, seq, first, resent, [(node, n, packed, latest)])
    obj = _unpack(data)
    kind = obj[0]
    try:
        if kind == "P" and len(obj) in (5, 6):
            epoch, seq, first, resent, maps = _p_header(obj)
            nodes = _split_nodes(maps)
            if len(nodes) == 1:
                ((node, ms),) = nodes.items()
                packed = _maps_part(data, obj)
                return ("P", epoch, seq, first, resent, [(node, len(ms), packed, packed)])
            parts = []
            for node, ms in nodes.items():
                packed = _PACK(ms)
                parts.append((node, len(ms), packed, packed))
            return ("P", epoch, seq, first, resent, parts)
        return _other(kind, obj)
    except BadBatch as e:
        raise BadFrame(f"frame {kind!r}: {e}") from None


_SCALARS = frozenset({float, int, str, bool, type(None)})


def _split_nodes(maps: Any) -> dict[str, list[Any]]:
    """The maps of a batch by node, after checking every one (BadBatch if any is wrong)."""
    if type(maps) is not list or len(maps) > MAX_BATCH_POINTS:
        points_from_maps(maps)  # raises, naming the problem
        raise BadBatch("a batch must be an array of points")
    known = _KNOWN_NAMES
    scalars = _SCALARS
    nodes: dict[str, list[Any]] = {}
    for m in maps:
        try:
            if type(m) is not dict or len(m) != 6:
                raise TypeError
            node, typ, key, t = m["node"], m["type"], m["key"], m["time"]
            if not (
                (node in known or valid_name(node))
                and (typ in known or valid_name(typ))
                and (key in known or valid_name(key))
                and type(m["value"]) in scalars
                and type(t) is int
                and t >= 0
                and type(m["origin"]) is str
            ):
                raise TypeError
        except (TypeError, KeyError):
            points_from_maps(maps)  # raises, naming the problem
            raise BadBatch("malformed point") from None  # unreachable: the codec raised
        ms = nodes.get(node)
        if ms is None:
            nodes[node] = [m]
        else:
            ms.append(m)
    return nodes


def _maps_part(data: bytes, obj: list[Any]) -> bytes:
    """The packed array of point maps at the end of a (valid) P frame, without repacking."""
    u = msgpack.Unpacker(raw=False)
    u.feed(data)
    u.read_array_header()
    for _ in range(len(obj) - 1):
        u.skip()
    return data[u.tell() :]


def _check_str_int(epoch: Any, seq: Any) -> None:
    if not isinstance(epoch, str) or len(epoch) > 200:
        raise BadFrame("epoch must be a short string")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise BadFrame("seq must be a non-negative integer")
