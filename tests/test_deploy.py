"""deploy/install.sh installs a working edgert under a staging root, and never
overwrites a config that is already there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.network  # installs edgert and its dependencies from the package index
@pytest.mark.slow
def test_install_script_into_a_staging_root(short_dir: Path) -> None:
    root = short_dir / "img"
    env = dict(os.environ, EDGERT_ROOT=str(root), PYTHON=sys.executable)
    run = [str(REPO / "deploy" / "install.sh"), str(REPO)]
    first = subprocess.run(run, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    edgert = root / "opt/edgert/venv/bin/edgert"
    conf = root / "etc/edgert/gateway.toml"
    assert "ok: gateway 'demo'" in first.stdout
    assert (root / "etc/systemd/system/edgert.service").read_text().count("Type=notify") == 1
    assert (root / "etc/udev/rules.d/99-edgert.rules").exists()
    drivers = subprocess.run([edgert, "drivers"], capture_output=True, text=True, timeout=60)
    assert drivers.returncode == 0 and "modbus" in drivers.stdout and "sim" in drivers.stdout

    conf.write_text(conf.read_text().replace('id = "demo"', 'id = "mine"'))
    again = subprocess.run(run, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert 'id = "mine"' in conf.read_text() and "ok: gateway 'mine'" in again.stdout
