"""The bridge's decoding shortcuts are exactly as strict as the point codec.

`bus.decode_frame` checks well-formed point maps in one tight loop and leaves
anything else to `points_from_maps`; `valid_name` remembers names it found
valid, a bounded number of them. Neither may accept what the codec refuses.
"""

from __future__ import annotations

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from edgert import point
from edgert.bus import BadFrame, decode_frame, decode_points, decode_points_after, p_head, shape
from edgert.point import BadBatch, Point, points_from_maps, valid_name

names = st.sampled_from(["gen", "a b", "", "x", "n-1_2", "é", "a\n"]) | st.text(max_size=6)
fields = st.sampled_from(["node", "type", "key", "value", "time", "origin", "extra"])
maps = st.dictionaries(
    fields,
    st.one_of(
        names,
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(allow_nan=True),
        st.binary(max_size=4),
    ),
    min_size=5,
    max_size=7,
)
good = st.builds(
    lambda node, v: {"node": node, "type": "n", "key": "0", "value": v, "time": 1, "origin": ""},
    st.sampled_from(["gen", "m1"]),
    st.integers(min_value=0, max_value=10) | st.floats() | st.none() | st.booleans(),
)


def shown(points: list[Point]) -> list[str]:
    return [repr(p) for p in points]  # repr: NaN equals NaN


def codec(batch: list) -> list[str] | str:
    try:
        return shown(points_from_maps(batch))
    except BadBatch as e:
        return f"frame 'P': {e}"


@given(st.lists(good | maps, max_size=5))
def test_a_bus_batch_decodes_as_the_codec_decodes_it(batch: list) -> None:
    frame = msgpack.packb(["P", "e.1.x", 1, 1, batch], use_bin_type=True)
    want = codec(msgpack.unpackb(msgpack.packb(batch), raw=False))
    try:
        got: list[str] | str = shown(decode_frame(frame)[4])
    except BadFrame as e:
        got = str(e)
    assert got == want
    try:  # the bridge's check, on the raw maps, accepts exactly the same batches
        _, _, _, _, _, parts = decode_points(frame)
    except BadFrame:
        assert isinstance(want, str)
    else:
        assert not isinstance(want, str)
        assert sum(n for _, n, _, _ in parts) == len(batch)
        by_node = {node: msgpack.unpackb(data, raw=False) for node, _, data, _ in parts}
        for _, _, data, latest in parts:  # the table of latest values sees the same
            assert latest_of(latest) == latest_of(data)
        order = list(by_node)
        want_maps = sorted(batch, key=lambda m: order.index(m["node"]))
        assert repr([m for node in order for m in by_node[node]]) == repr(want_maps)


def latest_of(packed: bytes) -> str:
    """The latest map of each (node, type, key) in a packed array (repr: NaN equals NaN)."""
    table = {}
    for m in msgpack.unpackb(packed, raw=False):
        table[(m["node"], m["type"], m["key"])] = m
    return repr(table)


def test_the_name_cache_holds_valid_short_names_only_and_stays_bounded() -> None:
    assert not valid_name("a b") and "a b" not in point._KNOWN_NAMES
    assert not valid_name(["gen"]) and not valid_name(None)
    assert valid_name("x" * 1000) and "x" * 1000 not in point._KNOWN_NAMES
    for i in range(point.KNOWN_NAMES_MAX * 3):
        assert valid_name(f"n{i}")
    assert len(point._KNOWN_NAMES) <= point.KNOWN_NAMES_MAX
    assert valid_name("n5") and not valid_name("n5 ")


# -- the byte-level shortcut (edgert.bus.shape) --------------------------------------

ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=31)
usual = st.builds(
    lambda node, typ, key, v, t, origin: {
        "node": node,
        "type": typ,
        "key": key,
        "value": v,
        "time": t,
        "origin": origin,
    },
    st.just("gen-1"),
    st.sampled_from(["n", "t_2", "x" * 31]),
    st.sampled_from(["0", "k"]),
    st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.none()
    | st.booleans()
    | ascii_text,
    st.integers(min_value=0, max_value=2**64 - 1),
    ascii_text,
)


def codec_view(data: bytes) -> tuple[set[str], int] | None:
    """(nodes, points) when the point codec accepts the packed batch, else None."""
    try:
        points = points_from_maps(msgpack.unpackb(data, raw=False))
    except Exception:  # noqa: BLE001 - any refusal by msgpack or the codec
        return None
    return {p.node for p in points}, len(points)


@given(st.lists(usual, min_size=1, max_size=40))
def test_the_usual_batches_take_the_shortcut(batch: list) -> None:
    data = msgpack.packb(batch, use_bin_type=True)
    node, n, last = shape.one_node(data)
    assert (node, n) == ("gen-1", len(batch))
    same = len({(m["type"], m["key"]) for m in batch}) == 1
    assert last == (len(data) - len(msgpack.packb(batch[-1])) if same else -1)
    frame = msgpack.packb(["P", "e.1.x", 3, 1, batch], use_bin_type=True)
    ((node, n, packed, latest),) = decode_points(frame)[5]
    assert (node, n, packed) == ("gen-1", len(batch), data)  # forwarded as packed
    assert latest_of(latest) == latest_of(data)


@given(
    st.lists(usual | good | maps, min_size=1, max_size=20),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=3),
    st.integers(min_value=-2, max_value=2),
    st.integers(min_value=0, max_value=3),
)
def test_the_shortcut_accepts_only_what_the_codec_accepts(
    batch: list, flips: list, count_change: int, cut: int
) -> None:
    data = bytearray(msgpack.packb(batch, use_bin_type=True))
    for at, byte in flips:  # damage the packed bytes anywhere
        data[at % len(data)] = byte
    if count_change and 0x91 <= data[0] <= 0x9E:  # the header says more or fewer maps
        data[0] = max(0x90, min(0x9F, data[0] + count_change))
    data = bytes(data[: len(data) - cut])
    got = shape.one_node(data)
    if got is not None:
        assert codec_view(data) == ({got[0]}, got[1])
        if got[2] >= 0:  # the offset of the last map, when all are one (node, type, key)
            maps = msgpack.unpackb(data, raw=False)
            assert repr(msgpack.unpackb(data[got[2] :], raw=False)) == repr(maps[-1])
            assert len({(m["node"], m["type"], m["key"]) for m in maps}) == 1


# one signal's numbers, one width each (what the outbox packs of a polling driver's or a
# series' points): the maps differ only in their value and time bytes
_widths = st.sampled_from(
    [(0, 127), (128, 255), (256, 65535), (65536, 2**32 - 1), (2**32, 2**64 - 1), (-32, -1)]
    + [(-128, -33), (-(2**15), -129), (-(2**31), -(2**15) - 1), (-(2**63), -(2**31) - 1)]
)
fixed_batches = st.one_of(
    _widths.flatmap(lambda w: st.lists(st.integers(*w), min_size=1, max_size=30)),
    st.lists(st.floats(allow_nan=True), min_size=1, max_size=30),
).flatmap(
    lambda vs: st.tuples(
        st.just(vs),
        st.lists(st.integers(0, 2**64 - 1), min_size=len(vs), max_size=len(vs)),
        ascii_text,
    )
)


@given(
    fixed_batches,
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=3),
    st.integers(min_value=-2, max_value=2),
    st.integers(min_value=0, max_value=3),
)
def test_the_shortcut_of_one_signals_numbers_accepts_only_what_the_codec_accepts(
    batch: tuple, flips: list, count_change: int, cut: int
) -> None:
    values, times, origin = batch
    maps = [
        {"node": "gen", "type": "n", "key": "0", "value": v, "time": t, "origin": origin}
        for v, t in zip(values, times, strict=True)
    ]
    data = msgpack.packb(maps, use_bin_type=True)
    if not flips and not count_change and not cut:
        assert shape.one_node(data) == ("gen", len(maps), len(data) - len(msgpack.packb(maps[-1])))
    damaged = bytearray(data)
    for at, byte in flips:  # damage the packed bytes anywhere
        damaged[at % len(damaged)] = byte
    if count_change and 0x91 <= damaged[0] <= 0x9E:  # the header says more or fewer maps
        damaged[0] = max(0x90, min(0x9F, damaged[0] + count_change))
    data = bytes(damaged[: len(damaged) - cut])
    got = shape.one_node(data)
    if got is not None:
        assert codec_view(data) == ({got[0]}, got[1])
        if got[2] >= 0:
            unpacked = msgpack.unpackb(data, raw=False)
            assert repr(msgpack.unpackb(data[got[2] :], raw=False)) == repr(unpacked[-1])
            assert len({(m["node"], m["type"], m["key"]) for m in unpacked}) == 1


def test_the_shortcut_counts_the_maps_against_the_header() -> None:
    one = msgpack.packb([Point("gen", "n", "0", 1.5).to_map()] * 3)
    assert shape.one_node(one) == ("gen", 3, len(one) - (len(one) - 1) // 3)
    assert shape.one_node(b"\x92" + one[1:]) is None  # more maps than announced
    assert shape.one_node(b"\x94" + one[1:]) is None  # fewer
    assert shape.one_node(one[:-1]) is None  # cut short
    mixed = msgpack.packb([Point("a", "n").to_map(), Point("b", "n").to_map()])
    assert shape.one_node(mixed) is None  # two nodes: the full check splits them
    assert shape.one_node(msgpack.packb([])) is None


@given(
    st.lists(usual | good, min_size=1, max_size=10),
    st.booleans(),
    st.binary(max_size=3),
)
def test_a_header_read_once_decodes_the_same(batch: list, resent: bool, junk: bytes) -> None:
    """The bridge reads a batch's header once (`p_head`) and hands it to the decoder."""
    parts = ["P", "e.1.x", 4, 2, *([resent] if resent else []), batch]
    frame = msgpack.packb(parts, use_bin_type=True) + junk
    head = p_head(frame)
    assert head is not None and head[:4] == ("e.1.x", 4, 2, resent)
    try:
        want: tuple | str = decode_points(frame)
    except BadFrame as e:
        want = str(e)
    try:
        got: tuple | str = decode_points_after(frame, head)
    except BadFrame as e:
        got = str(e)
    assert got == want
    assert isinstance(want, str) == bool(junk)  # trailing bytes: refused either way
