"""Shared fixtures: short-path gateway configs (ipc socket paths are limited to 107 bytes).

Also the Hypothesis profiles: `dev` (the default, for the README's test command)
and `ci` (more examples, for .ci/run). Pick one with `HYPOTHESIS_PROFILE=ci` or
`pytest --hypothesis-profile=ci`. Both have a fixed example count and no
deadline, and neither fails a test because a busy machine made it slow.

Every gateway a test starts (in this process or as `edgert run`) beats every
0.5 s rather than every 2 s (`EDGERT_HEARTBEAT_MAX`): the figures tests wait on
in the status (points out, buffered, the bridge's NATS state) come with the
beats. A test about the default beat removes the variable.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq
from hypothesis import HealthCheck, settings

from edgert.config import GatewayConfig
from edgert.testing.configs import gateway_config
from edgert.testing.nats import NatsProcess

pytest_plugins = ["edgert.testing.fixtures"]

_UNDER_LOAD = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=30, **_UNDER_LOAD)
settings.register_profile("ci", max_examples=100, print_blob=True, **_UNDER_LOAD)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

os.environ.setdefault("EDGERT_HEARTBEAT_MAX", "0.5")  # before any worker or gateway starts


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-seconds",
        type=float,
        default=None,
        help="how long tests/test_chaos.py keeps faulting (EDGERT_CHAOS_SECONDS)",
    )
    parser.addoption(
        "--chaos-variant",
        default=None,
        help="tests/test_chaos.py's faults: full, no_driver_kills or both, comma-separated",
    )


def pytest_configure(config: pytest.Config) -> None:
    seconds = config.getoption("--chaos-seconds", None)
    if seconds:
        os.environ["EDGERT_CHAOS_SECONDS"] = str(seconds)  # read when the module is imported
    variant = config.getoption("--chaos-variant", None)
    if variant:
        os.environ["EDGERT_CHAOS_VARIANT"] = variant


@pytest.fixture
def short_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ert-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def module_dir() -> Iterator[Path]:
    """A short directory for the module, for what its tests share (one gateway)."""
    d = Path(tempfile.mkdtemp(prefix="ert-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def make_config(short_dir: Path) -> Callable[..., GatewayConfig]:
    """Build a GatewayConfig from TOML for everything but [gateway], in a fresh directory.

    `make_config(body, gateway_id="gw1", subdir="gw1")` puts that gateway's file,
    run and data directories in `short_dir/subdir`, so one test can run several.
    The pieces of `body` most tests repeat are in `edgert.testing.configs`.
    """

    def make(body: str, gateway_id: str = "gw", subdir: str | None = None) -> GatewayConfig:
        return gateway_config(short_dir / subdir if subdir else short_dir, body, gateway_id)

    return make


@pytest.fixture
def nats_server(short_dir: Path) -> Iterator[NatsProcess]:
    """A real nats-server (JetStream on) on a free port, for the test."""
    with NatsProcess(short_dir / "nats") as srv:
        yield srv


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[zmq.Socket, zmq.Socket]]:
    """A connected ROUTER (the bridge's side) and DEALER (a driver's, id b"drv") on ipc."""
    zctx = zmq.Context(1)
    router = zctx.socket(zmq.ROUTER)
    dealer = zctx.socket(zmq.DEALER)
    for s in (router, dealer):
        s.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.ROUTING_ID, b"drv")
    router.bind(f"ipc://{tmp_path}/b.sock")
    dealer.connect(f"ipc://{tmp_path}/b.sock")
    try:
        yield router, dealer
    finally:
        router.close(0)
        dealer.close(0)
        zctx.term()
