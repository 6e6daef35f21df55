"""`wait_for` and `await_for`: the value that ended the wait, or a TimeoutError naming
what was awaited and the last error the condition raised."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from edgert.testing import await_for, wait_for


def test_wait_for_returns_the_first_truthy_value_after_retrying_errors() -> None:
    tries = itertools.count(1)

    def condition() -> str:
        n = next(tries)
        if n == 1:
            raise ValueError("not yet")
        return "ready" if n >= 3 else ""

    assert wait_for(condition, 5, interval=0.001) == "ready"
    assert next(tries) == 4  # three calls: an error, a falsy value, the value


def test_wait_for_times_out_naming_what_and_the_last_error() -> None:
    def condition() -> int:
        raise ZeroDivisionError("never")

    with pytest.raises(TimeoutError, match=r"waiting for the answer .*ZeroDivisionError"):
        wait_for(condition, 0.05, "the answer", interval=0.001)


def test_await_for_lets_the_loop_run_between_tries() -> None:
    async def main() -> int:
        box: list[int] = []
        asyncio.get_running_loop().call_later(0.01, box.append, 7)
        got = await await_for(lambda: box and box[0], 5, interval=0.001)
        with pytest.raises(TimeoutError, match="waiting for nothing"):
            await await_for(lambda: 0, 0.05, "nothing", interval=0.001)
        return got

    assert asyncio.run(main()) == 7
