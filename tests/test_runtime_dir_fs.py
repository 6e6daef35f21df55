"""The runtime directory belongs on a tmpfs: `run` says so, once, when it is not.

The drivers' outbox rings are memory-mapped files in the runtime directory; on
a disk-backed file system the kernel writes them back to the disk (an SD card
wears). A gateway started with its runtime directory on such a file system
logs one warning naming it, and a reload does not repeat it; on a tmpfs
(/dev/shm) it logs none.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgert.bench.gateway import config_text, sim_counter
from edgert.bus.ring import filesystem
from edgert.config import loads
from edgert.testing import running_gateway, status, wait_for
from edgert.testing.nats import free_port

WARNING = "not a tmpfs"


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    if filesystem("/dev/shm") != "tmpfs":
        pytest.skip("/dev/shm is not a tmpfs here")
    d = Path(tempfile.mkdtemp(prefix="ert-", dir="/dev/shm"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def warnings_of_a_run(d: Path, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Start a gateway whose runtime directory is `d`/run, reload it with a changed
    driver, stop it: the runtime's warnings."""
    path = d / "gw.toml"
    url = f"nats://127.0.0.1:{free_port()}"
    text = config_text(d, url, sim_counter("gen", 5.0), gateway_id="gw")
    path.write_text(text)
    cfg = loads(text, str(path))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgert.runtime"):
        with running_gateway(cfg) as rt:
            pid = wait_for(lambda: status(cfg)["by_name"]["gen"]["pid"], 20, "gen running")
            path.write_text(config_text(d, url, sim_counter("gen", 7.0), gateway_id="gw"))
            rt.reload()
            wait_for(
                lambda: status(cfg)["by_name"]["gen"]["pid"] not in (None, pid),
                20,
                "gen restarted by the reload",
            )
    return [r.getMessage() for r in caplog.records if r.name == "edgert.runtime"]


def test_a_runtime_dir_on_a_disk_is_warned_about_once(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rdir = short_dir / "run"
    rdir.mkdir()
    kind = filesystem(rdir)
    if kind in (None, "tmpfs", "ramfs"):
        pytest.skip(f"{short_dir} is on {kind}, not on a disk")
    said = [m for m in warnings_of_a_run(short_dir, caplog) if WARNING in m]
    assert len(said) == 1, said
    assert str(rdir) in said[0] and f"is on {kind}" in said[0]


def test_a_runtime_dir_on_a_tmpfs_gets_no_warning(
    shm_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    said = warnings_of_a_run(shm_dir, caplog)
    assert not [m for m in said if WARNING in m], said
