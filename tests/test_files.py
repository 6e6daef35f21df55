"""Private files written whole: mode 0600, the old file or the new one, no debris."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from edgert.files import write_private_atomic
from edgert.fleet.store import Desired, Store
from edgert.supervisor.tally import load_losses, save_losses


def test_a_write_replaces_the_file_whole_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    old_inode = path.stat().st_ino
    umask = os.umask(0)  # the mode does not depend on the umask
    try:
        write_private_atomic(path, b"new")
    finally:
        os.umask(umask)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_ino != old_inode  # a new file renamed over the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_private_atomic(path, b"old")
    with pytest.raises(TypeError):
        write_private_atomic(path, "not bytes")  # type: ignore[arg-type]  # fails mid-write
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]

    taken = tmp_path / "taken"
    taken.mkdir()  # the rename over it fails, after the bytes are written
    with pytest.raises(OSError):
        write_private_atomic(taken, b"new")
    assert taken.is_dir() and list(taken.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "taken"]


def test_an_earlier_crash_s_loose_temporary_file_does_not_loosen_the_new_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.json"
    (tmp_path / ".state.json.tmp").write_text("debris")
    os.chmod(tmp_path / ".state.json.tmp", 0o666)
    write_private_atomic(path, b"new")
    assert path.read_bytes() == b"new" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_the_fleet_store_and_the_loss_tally_write_through_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Store(tmp_path).try_(Desired(3, "x = 1"))
    pending = tmp_path / "fleet" / "pending.json"
    assert stat.S_IMODE(pending.stat().st_mode) == 0o600
    assert Store(tmp_path).pending() == Desired(3, "x = 1")

    losses = tmp_path / "losses.json"
    save_losses(losses, {"gen": 7})
    assert stat.S_IMODE(losses.stat().st_mode) == 0o600
    assert load_losses(losses) == {"gen": 7}
    with caplog.at_level(logging.WARNING, logger="edgert.supervisor"):
        save_losses(tmp_path / "fleet", {"gen": 8})  # a directory: logged, not raised
    assert "cannot save loss counts" in caplog.text
    assert sorted(p.name for p in (tmp_path / "fleet").iterdir()) == ["pending.json"]
