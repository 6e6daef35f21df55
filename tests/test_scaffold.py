"""`edgert new-driver`: the skeleton it writes is lint-clean and its own tests pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from edgert.cli.scaffold import new_driver


def edgert_new_driver(*args: str):
    return CliRunner().invoke(new_driver, list(args))


def test_new_driver_writes_a_package_whose_tests_pass(short_dir: Path) -> None:
    r = edgert_new_driver("boiler_room", "--dir", str(short_dir))
    assert r.exit_code == 0, r.output
    root = short_dir / "edgert-boiler_room"
    assert (
        'boiler_room = "edgert_boiler_room.driver:BoilerRoomDriver"'
        in (root / "pyproject.toml").read_text()
    )
    ruff = Path(sys.executable).parent / "ruff"
    lint = subprocess.run(
        [ruff, "check", "--no-cache", "-q", "."],
        cwd=root,
        capture_output=True,
    )
    assert lint.returncode == 0, lint.stdout.decode()
    env = dict(os.environ, PYTHONPATH=str(root))
    t = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert t.returncode == 0, t.stdout + t.stderr
    assert "2 passed" in t.stdout


def test_new_driver_refuses_bad_names_and_existing_dirs(short_dir: Path) -> None:
    bad = edgert_new_driver("Bad-Name", "--dir", str(short_dir))
    assert bad.exit_code == 2 and "lower case" in bad.output
    (short_dir / "edgert-x").mkdir()
    again = edgert_new_driver("x", "--dir", str(short_dir))
    assert again.exit_code == 2 and "exists already" in again.output
