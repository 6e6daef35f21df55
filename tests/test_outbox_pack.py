"""The outbox packs a point into exactly the bytes msgpack makes of its map.

However a driver hands points over (one `publish` each, a list, a series of
one key's values), the batches sent are the same.

`pack_points` packs the part of a map up to its value once per (node, type,
key) and the rest by hand; the bridge's byte-level check and every reader
rely on the result being the same bytes as `msgpack.packb(point.to_map())`.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgert.bus.frames import decode_frame
from edgert.bus.outbox import (
    HEADS_MAX,
    Outbox,
    _names_head,
    pack_block,
    pack_points,
    pack_series,
)
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


@given(
    names,
    names,
    names,
    st.lists(values, min_size=1, max_size=20),
    st.lists(times, min_size=20, max_size=20),
    st.text(max_size=40),
)
def test_a_series_packs_to_the_bytes_of_its_points(node, typ, key, vals, ts, origin) -> None:
    ts = ts[: len(vals)]
    want = [
        msgpack.packb(Point(node, typ, key, v, t, origin).to_map(), use_bin_type=True)
        for v, t in zip(vals, ts, strict=True)
    ]
    packed = pack_series(_names_head(node, typ, key, {}), vals, ts, origin)
    if packed is None:  # a time under 2**32: the points' own packing decides
        assert min(ts) < 2**32
    else:
        assert packed == want


@given(
    st.one_of(
        st.lists(st.integers(min_value=-(2**63), max_value=2**64 - 1), max_size=40),
        st.lists(st.floats(allow_nan=False), max_size=40),
        st.lists(values, max_size=40),
        st.builds(range, st.integers(-300, 2**33), st.integers(-300, 2**33)),
    ),
    st.lists(times, min_size=40, max_size=40),
    st.text(max_size=40),
)
def test_a_series_packed_as_a_block_is_the_bytes_of_its_points(vals, ts, origin) -> None:
    ts = ts[: len(vals)]
    head = _names_head("gen", "n", "0", {})
    block = pack_block(head, vals, ts, origin)
    if block is None:
        return  # values of several kinds or widths, an odd time: packed point by point
    data, size = block
    want = [
        msgpack.packb(Point("gen", "n", "0", v, t, origin).to_map(), use_bin_type=True)
        for v, t in zip(vals, ts, strict=True)
    ]
    assert data == b"".join(want)
    assert {len(m) for m in want} == {size}


def test_a_block_takes_a_counter_of_one_width_and_floats() -> None:
    head = _names_head("gen", "n", "0", {})
    t0 = 1_700_000_000_000_000_000
    for vals in (range(70_000, 70_100), [i / 3 for i in range(100)], [-5] * 100):
        assert pack_block(head, vals, range(t0, t0 + 100), "") is not None
    assert pack_block(head, range(250, 350), range(t0, t0 + 100), "") is None  # two widths


class _Sink:
    """Stands in for the bus socket: keeps what the outbox sends."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, data: bytes, flags: int = 0) -> None:
        self.frames.append(data)


def _sent(box: Outbox) -> list[tuple[int, list[dict]]]:
    box.flush()
    return [(f[2], [p.to_map() for p in f[4]]) for f in map(decode_frame, box.sock.frames)]


@pytest.mark.parametrize(
    "values",
    [list(range(2500)), range(70_000, 72_500), [i / 8 for i in range(2500)]],
    ids=["ints of several widths", "a counter of one width", "floats"],
)
def test_every_way_to_publish_sends_the_same_batches(values) -> None:
    t0 = 1_700_000_000_000_000_000
    pts = [Point("gen", "n", "0", v, t0 + i) for i, v in enumerate(values)]
    sent = []
    for way in ("one by one", "a list", "a series"):
        box = Outbox(_Sink(), "gen.1.a", max_batch=1000, window=10**6)  # type: ignore[arg-type]
        box._flight.append((0, 0, 0.0))  # something in flight: points wait for the batch
        if way == "one by one":
            for p in pts:
                box.publish_one(p)
        elif way == "a list":
            box.publish(pts[:1])
            box.publish(pts[1:])
        else:
            box.publish_series("gen", "n", "0", values, range(t0, t0 + 2500))
        assert box.points_out == box.buffered == 2500
        sent.append(_sent(box))
    assert sent[0] == sent[1] == sent[2]
    assert [len(maps) for _, maps in sent[0]] == [1000, 1000, 500]
    assert [m["value"] for _, maps in sent[0] for m in maps] == list(values)


def test_a_series_checks_its_names_and_lengths_and_takes_odd_times_as_points() -> None:
    box = Outbox(_Sink(), "gen.1.a", window=10**6)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="node"):
        box.publish_series("bad node", "n", "0", [1], [2**40])
    with pytest.raises(ValueError, match="2 values but 1 times"):
        box.publish_series("gen", "n", "0", [1, 2], [2**40])
    box.publish_series("gen", "n", "0", [1, 2], [5, 2**40])  # 5: packed as a point packs it
    assert [maps for _, maps in _sent(box)] == [
        [Point("gen", "n", "0", 1, 5).to_map(), Point("gen", "n", "0", 2, 2**40).to_map()]
    ]


@pytest.mark.parametrize("name", ["", "a b", None, ["x"], "é"])
def test_a_point_refuses_a_name_that_is_not_one(name) -> None:
    for args in ((name, "t", "0"), ("n", name, "0"), ("n", "t", name)):
        with pytest.raises(ValueError, match="must match"):
            Point(*args)
