"""Shared fixtures: short-path gateway configs (ipc socket paths are limited to 107 bytes)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgert.config import GatewayConfig, loads
from edgert.testing.nats import NatsProcess

pytest_plugins = ["edgert.testing.fixtures"]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ert-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def make_config(short_dir: Path) -> Callable[..., GatewayConfig]:
    """Build a GatewayConfig from TOML for everything but [gateway], in a fresh directory."""

    def make(body: str, gateway_id: str = "gw", write: bool = False) -> GatewayConfig:
        text = (
            f'[gateway]\nid = "{gateway_id}"\nruntime_dir = "{short_dir}/run"\n'
            f'data_dir = "{short_dir}/data"\n\n{body}'
        )
        path = short_dir / "gw.toml"
        path.write_text(text)
        return loads(text, str(path))

    return make


@pytest.fixture
def nats_server(short_dir: Path) -> Iterator[NatsProcess]:
    """A real nats-server (JetStream on) on a free port, for the test."""
    with NatsProcess(short_dir / "nats") as srv:
        yield srv
