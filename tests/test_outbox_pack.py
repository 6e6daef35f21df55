"""The outbox packs a point into exactly the bytes msgpack makes of its map.

`pack_points` packs the part of a map up to its value once per (node, type,
key) and the rest by hand; the bridge's byte-level check and every reader
rely on the result being the same bytes as `msgpack.packb(point.to_map())`.
"""

from __future__ import annotations

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from edgert.bus.outbox import HEADS_MAX, pack_points
from edgert.point import Point

names = st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True)
values = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
)
times = st.integers(min_value=1, max_value=2**64 - 1) | st.sampled_from(
    [1, 2**32 - 1, 2**32, 2**63, 2**64 - 1, 1_700_000_000_123_456_789]
)
points = st.builds(Point, names, names, names, values, times, st.text(max_size=40))


@given(st.lists(points, min_size=1, max_size=20))
def test_a_packed_point_is_the_bytes_of_its_map(pts: list[Point]) -> None:
    heads: dict = {}
    want = [msgpack.packb(p.to_map(), use_bin_type=True) for p in pts]
    assert pack_points(pts, heads) == want
    assert pack_points(pts, heads) == want  # from the kept heads
    assert [pack_points([p], heads)[0] for p in pts] == want


def test_the_kept_heads_stay_bounded() -> None:
    heads: dict = {}
    for i in range(HEADS_MAX * 2 + 5):
        p = Point("gen", f"t{i}", "0", i)
        assert pack_points([p], heads) == [msgpack.packb(p.to_map(), use_bin_type=True)]
        assert len(heads) <= HEADS_MAX
