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
from edgert.bus import BadFrame, decode_frame, decode_points
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
        assert sum(n for _, n, _ in parts) == len(batch)
        by_node = {node: msgpack.unpackb(data, raw=False) for node, _, data in parts}
        order = list(by_node)
        want_maps = sorted(batch, key=lambda m: order.index(m["node"]))
        assert repr([m for node in order for m in by_node[node]]) == repr(want_maps)


def test_the_name_cache_holds_valid_short_names_only_and_stays_bounded() -> None:
    assert not valid_name("a b") and "a b" not in point._KNOWN_NAMES
    assert not valid_name(["gen"]) and not valid_name(None)
    assert valid_name("x" * 1000) and "x" * 1000 not in point._KNOWN_NAMES
    for i in range(point.KNOWN_NAMES_MAX * 3):
        assert valid_name(f"n{i}")
    assert len(point._KNOWN_NAMES) <= point.KNOWN_NAMES_MAX
    assert valid_name("n5") and not valid_name("n5 ")
