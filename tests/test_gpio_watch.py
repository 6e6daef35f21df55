"""`Context.watch`: an actor's one loop waits on a device's fd and its inbox together.

The GPIO driver relies on it to take edge events and commands in the same
`receive`. A watched fd comes back as `Readable(fd)` while it has data (level-
triggered), never ahead of a pending stop, and not at all once unwatched.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest

from edgert import Actor, Context, Stop
from edgert.actor import Readable


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


@pytest.fixture
def ctx() -> Iterator[Context]:
    c = Context(Actor(), name="t")
    yield c
    c._close()


def test_receive_returns_readable_while_a_watched_fd_has_data(ctx, pipe) -> None:
    r, w = pipe
    ctx.watch(r)
    t0 = time.monotonic()
    assert ctx.receive(timeout=0.05) is None  # nothing to read: the timeout passes
    assert time.monotonic() - t0 >= 0.04
    os.write(w, b"x")
    assert ctx.receive(timeout=5) == Readable(r)
    assert ctx.receive(timeout=0) == Readable(r)  # level-triggered: still unread
    os.read(r, 1)
    assert ctx.receive(timeout=0) is None


def test_stop_comes_before_a_readable_fd(ctx, pipe) -> None:
    r, w = pipe
    ctx.watch(r)
    os.write(w, b"x")
    ctx._actor.stop()
    assert isinstance(ctx.receive(timeout=1), Stop)


def test_unwatched_fd_no_longer_wakes_receive(ctx, pipe) -> None:
    r, w = pipe
    ctx.watch(r)
    ctx.watch(r)  # twice is once
    os.write(w, b"x")
    ctx.unwatch(r)
    ctx.unwatch(r)  # harmless
    assert ctx.receive(timeout=0.05) is None


def test_areceive_returns_readable_too(ctx, pipe) -> None:
    r, w = pipe
    ctx.watch(r)
    os.write(w, b"x")
    assert asyncio.run(ctx.areceive(timeout=5)) == Readable(r)
