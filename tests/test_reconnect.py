"""`Reconnect`, the retry loop both NATS connections of the bridge share: a failed
connect says why and doubles the wait up to its ceiling; a connection made is
closed after its block, also when the block raised."""

from __future__ import annotations

import asyncio

import pytest

from edgert.bridge.uplink import Reconnect, nats_options
from edgert.config import NatsSection
from edgert.testing.nats import NatsProcess, free_port


def test_failed_connects_say_why_and_back_off_up_to_the_ceiling() -> None:
    async def main() -> tuple[list[str], list[float]]:
        dead = NatsSection(url=f"nats://127.0.0.1:{free_port()}")
        retry = Reconnect(nats_options(dead), 0.01, 0.04)
        errors, waits = [], []
        for _ in range(4):
            waits.append(retry.backoff)
            async with retry.attempt() as a:
                assert a.nc is None
                errors.append(a.error)
        return errors, waits + [retry.backoff]

    errors, waits = asyncio.run(main())
    assert all(e.startswith("cannot reach the server") for e in errors), errors
    assert waits == [0.01, 0.02, 0.04, 0.04, 0.04]


def test_a_connection_is_closed_after_its_block_even_when_it_raised(
    nats_server: NatsProcess,
) -> None:
    async def main() -> list:
        retry = Reconnect(nats_options(NatsSection(url=nats_server.url)), 0.01, 0.04)
        made = []
        with pytest.raises(RuntimeError, match="the block failed"):
            async with retry.attempt() as a:
                made.append(a.nc)
                assert a.nc.is_connected
                raise RuntimeError("the block failed")
        async with retry.attempt() as a:
            made.append(a.nc)
            a.pause = 0.0
        return made

    made = asyncio.run(main())
    assert len(made) == 2 and all(nc.is_closed for nc in made)


def test_an_embedded_server_still_starting_is_not_an_error_until_it_stays_away(caplog) -> None:
    """The bridge starts beside its embedded nats-server: the first attempts may be
    refused while it starts (INFO); refused after them, it is an error, said once."""
    import logging
    from types import SimpleNamespace

    from edgert.bridge.uplink import STARTING, Uplink

    log = logging.getLogger("edgert.test.uplink")
    run = SimpleNamespace(cfg=SimpleNamespace(nats=SimpleNamespace(embedded=True)), log=log)
    up = Uplink(run)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger=log.name)
    reason = "cannot reach the server: [Errno 111] Connection refused"
    for up.attempts in range(1, STARTING + 3):
        up._down(reason, first=False)
    levels = [(r.levelname, "starting" in r.getMessage()) for r in caplog.records]
    assert levels == [("INFO", True), ("ERROR", False)], caplog.records
    up.server = "nats://127.0.0.1:4222"  # it had connected: a refusal is an error at once
    up._down("cannot reach the server: reset", first=True)
    assert caplog.records[-1].levelname == "ERROR"
