"""The spool is opened when it is needed: sqlite3 stays out of a bridge NATS keeps up with.

A spool with nothing on disk (a new or empty file, no journal) has nothing to
read at start, so the bridge opens it (and loads sqlite3, and starts the worker
thread) at its first commit: in an outage, never while NATS takes every point.
A spool an earlier run wrote to is opened at start, as before.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edgert.spool import Spool
from edgert.testing import running_gateway, status, wait_for
from edgert.testing.configs import nats_section, sim_driver, supervisor


def test_a_new_spool_is_created_without_sqlite_and_says_it_holds_nothing(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        spool = Spool(tmp_path / "data" / "spool.db", 1_000_000)
        assert spool.create() is True
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "data").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(spool.path).st_mode) == 0o600
    assert spool.path.stat().st_size == 0 and not spool.is_open
    assert spool.create() is True  # still nothing in it


def test_a_spool_written_to_says_it_must_be_read(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with Spool(path, 1_000_000) as spool:
        assert spool.is_open
        spool.commit(seqs={"e1": 3})  # no rows, but a sender's seq to remember
    assert not spool.is_open
    assert Spool(path, 1_000_000).create() is False
    with Spool(path, 1_000_000) as spool:
        assert spool.last_seq("e1") == 3


def test_an_empty_file_with_a_journal_beside_it_must_be_read(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    path.touch()
    Path(f"{path}-wal").write_bytes(b"\0" * 32)  # a crash before the first checkpoint
    assert Spool(path, 1_000_000).create() is False


def _maps(pid: int, name: str) -> bool:
    with open(f"/proc/{pid}/maps") as f:
        return name in f.read()


def test_the_bridge_opens_its_spool_at_the_first_point_nats_cannot_take(
    make_config, nats_server
) -> None:
    cfg = make_config(supervisor() + nats_section(nats_server.url) + sim_driver(rate=200.0))
    spool = Path(cfg.data_dir) / "spool.db"
    with running_gateway(cfg):

        def bridge() -> dict:
            return status(cfg)["by_name"]["bridge"]

        wait_for(lambda: bridge()["points_out"] >= 100, 20, "points flowing")
        pid = bridge()["pid"]
        assert not _maps(pid, "_sqlite3.")  # NATS takes every point: no spool opened
        assert spool.stat().st_size == 0 and stat.S_IMODE(spool.stat().st_mode) == 0o600
        nats_server.stop()
        wait_for(lambda: bridge()["buffered"] >= 100, 20, "points spooled in the outage")
        assert bridge()["pid"] == pid and bridge()["restarts"] == 0
        assert _maps(pid, "_sqlite3.") and spool.stat().st_size > 0
        nats_server.start()
        wait_for(lambda: bridge()["buffered"] == 0, 20, "spool drained")
    assert Spool(spool, 1_000_000).create() is False  # the next start reads it


def test_an_open_spool_keeps_a_page_cache_of_256_kb(tmp_path: Path) -> None:
    """sqlite's default is 2 MB, which a bridge kept after any outage."""
    with Spool(tmp_path / "spool.db", 1_000_000) as spool:
        assert spool._need_db().execute("PRAGMA cache_size").fetchone()[0] == -256
