"""A full disk is a degraded mode, not a crash.

`data_dir` on a 2 MB tmpfs with NATS down: the spool fills, the bridge reports
the real sqlite error and the path in its status, stops acking (the driver
holds and then drops at the source, counted) and is not restarted. When the
disk has room again the fault clears by itself and spooling resumes. A
read-only `data_dir` is an error naming the spool's path.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgert.spool import Spool, SpoolError
from edgert.testing import running_gateway, status, wait_for
from edgert.testing.nats import free_port

GATEWAY = """
[supervisor]
backoff_min = 0.1
backoff_max = 0.5
shutdown_timeout = 1.0  # nothing is acked: a stopping driver's drain waits it out
[nats]
url = "nats://127.0.0.1:{port}"
spool_max_bytes = 100000000

[[driver]]
name = "gen"
type = "edgert.testing:FaultActor"
mode = "run"
rate = 500.0
batch = 100  # 50,000 points/s: the outbox (100,000 points) fills, and drops, in seconds
"""


def mount(path: Path, options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def small_disk(short_dir: Path) -> Iterator[Path]:
    yield from mount(short_dir / "data", "size=2m")


@pytest.fixture
def read_only(short_dir: Path) -> Iterator[Path]:
    yield from mount(short_dir / "ro", "size=1m,ro")


def test_a_full_disk_is_reported_and_held_without_a_crash_loop(make_config, small_disk) -> None:
    # Most of the room taken first: the compressed spool would take minutes
    # to fill 2 MB on a loaded machine.
    fill(small_disk, 128 * 1024)
    cfg = make_config(GATEWAY.format(port=free_port()))
    with running_gateway(cfg):
        b = wait_for(
            lambda: (b := status(cfg)["by_name"]["bridge"])["stats"].get("disk_error") and b,
            60,
            "the bridge reports the full disk",
        )
        error = b["stats"]["disk_error"]
        assert "database or disk is full" in error and str(small_disk) in error, error
        assert "cannot rollback" not in error
        # the driver is no longer acked: it holds, then drops at the source, counted
        wait_for(lambda: status(cfg)["by_name"]["gen"]["dropped"] > 0, 60, "drops counted")
        a = status(cfg)["by_name"]
        assert a["bridge"]["restarts"] == 0 and a["bridge"]["state"] == "running"
        assert a["gen"]["state"] == "running"


def fill(disk: Path, leave: int) -> Path:
    """A file that takes all the room on `disk` but `leave` bytes."""
    ballast = disk / "ballast"
    with open(ballast, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    os.truncate(ballast, max(0, ballast.stat().st_size - leave))
    return ballast


def test_room_on_the_disk_again_clears_the_fault(make_config, small_disk) -> None:
    ballast = fill(small_disk, 128 * 1024)
    cfg = make_config(GATEWAY.format(port=free_port()))
    with running_gateway(cfg):
        b = wait_for(
            lambda: (b := status(cfg)["by_name"]["bridge"])["stats"].get("disk_error") and b,
            60,
            "the bridge reports the full disk",
        )
        faults, pid = b["stats"]["disk_faults"], b["pid"]
        held = b["buffered"]
        ballast.unlink()  # room again: no restart, no command, the bridge finds it
        b = wait_for(
            lambda: (b := status(cfg)["by_name"]["bridge"])["buffered"] > held and b,
            30,
            "points spooled again",
        )
        assert b["pid"] == pid and b["restarts"] == 0
        assert b["stats"]["disk_faults"] >= faults >= 1
        wait_for(
            lambda: not status(cfg)["by_name"]["bridge"]["stats"]["disk_error"],
            30,
            "the disk error cleared",
            interval=0.005,
        )


def test_a_read_only_data_dir_names_the_path(read_only: Path) -> None:
    spool = Spool(read_only / "spool.db", 1_000_000)
    with pytest.raises(SpoolError, match=rf"cannot open the spool {read_only}/spool.db: .*"):
        spool.open()
