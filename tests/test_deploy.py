"""deploy/install.sh into a staging root gives files that are right on the target:
no build path in a shebang or the venv's python link, the service user in the
root's own /etc/passwd, the config readable by it, the unit enabled; it never
overwrites a config that is already there."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BASE_ETC = {
    "passwd": "root:x:0:0:root:/root:/bin/bash\n",
    "group": "root:x:0:\ndialout:x:20:\n",
    "shadow": "root:*:19000:0:99999:7:::\n",
    "gshadow": "root:*::\ndialout:*::\n",
}


def _staging_root(base: Path) -> Path:
    root = base / "img"
    (root / "etc").mkdir(parents=True)
    for name, text in BASE_ETC.items():
        (root / "etc" / name).write_text(text)
    (root / "etc/hostname").write_text("pi-gw7\n")
    return root


def _install(root: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, EDGERT_ROOT=str(root), PYTHON=sys.executable)
    env["EDGERT_TARGET_PYTHON"] = os.path.realpath(sys.executable)
    run = [str(REPO / "deploy" / "install.sh"), str(REPO)]
    return subprocess.run(run, env=env, capture_output=True, text=True, timeout=600)


def _entry(root: Path, table: str, name: str) -> list[str]:
    for line in (root / "etc" / table).read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    raise AssertionError(f"{name} not in {root}/etc/{table}")


@pytest.mark.network  # installs edgert and its dependencies from the package index
@pytest.mark.slow
@pytest.mark.timeout(900)  # pip installs edgert and its dependencies
@pytest.mark.skipif(os.geteuid() != 0, reason="useradd --root and chown need root")
def test_install_script_into_a_staging_root(short_dir: Path) -> None:
    root = _staging_root(short_dir)
    first = _install(root)
    assert first.returncode == 0, first.stderr
    venv = root / "opt/edgert/venv"
    conf = root / "etc/edgert/gateway.toml"
    assert "ok: gateway 'pi-gw7'" in first.stdout

    # Paths are the target's: no script starts its build path's interpreter.
    scripts = [p for p in (venv / "bin").iterdir() if p.is_file() and not p.is_symlink()]
    shebangs = {p.name: p.read_bytes().split(b"\n", 1)[0] for p in scripts}
    assert shebangs["edgert"] == b"#!/opt/edgert/venv/bin/python3"
    assert all(str(root).encode() not in line for line in shebangs.values()), shebangs
    target = os.readlink(venv / "bin/python")
    assert target == os.path.realpath(sys.executable) and not target.startswith(str(root))
    assert os.readlink(venv / "bin/python3") == "python"
    cfg = (venv / "pyvenv.cfg").read_text()
    assert str(root) not in cfg and f"home = {os.path.dirname(target)}" in cfg
    # Nor any file of the venv, compiled modules included (tracebacks name their sources).
    build = subprocess.run(["grep", "-rlF", str(root), str(venv)], capture_output=True, text=True)
    assert build.stdout == "", build.stdout.splitlines()[:5]

    # The service user exists in the staged root, and can read the config.
    user = _entry(root, "passwd", "edgert")
    group = _entry(root, "group", "edgert")
    assert user[5] == "/var/lib/edgert" and user[3] == group[2]
    assert "edgert" in _entry(root, "group", "dialout")[3].split(",")
    assert "edgert" in _entry(root, "group", "gpio")[3].split(",")
    st = conf.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_uid == 0
    assert st.st_gid == int(group[2])
    unit = (root / "etc/systemd/system/edgert.service").read_text()
    assert "User=edgert" in unit and "Group=edgert" in unit and unit.count("Type=notify") == 1
    wants = root / "etc/systemd/system/multi-user.target.wants/edgert.service"
    assert os.readlink(wants) == "/etc/systemd/system/edgert.service"
    assert (root / "etc/udev/rules.d/99-edgert.rules").exists()

    # No nats-server in this root: the default config does not embed one.
    assert "embedded = false" in conf.read_text() and 'id = "pi-gw7"' in conf.read_text()

    # The staged venv runs (this host stands for the target: same Python).
    py = venv / "bin/python3"
    drivers = subprocess.run(
        [py, venv / "bin/edgert", "drivers"], capture_output=True, text=True, timeout=60
    )
    assert drivers.returncode == 0, drivers.stderr
    assert "modbus" in drivers.stdout and "sim" in drivers.stdout

    conf.write_text(conf.read_text().replace('id = "pi-gw7"', 'id = "mine"'))
    os.chown(conf, 0, 0)
    again = _install(root)
    assert again.returncode == 0, again.stderr
    assert 'id = "mine"' in conf.read_text() and "ok: gateway 'mine'" in again.stdout
    assert conf.stat().st_gid == int(group[2]), "a config left root:root is given back its group"
    assert len([u for u in (root / "etc/passwd").read_text().splitlines() if "edgert" in u]) == 1


@pytest.mark.network  # installs edgert and its dependencies from the package index
@pytest.mark.slow
@pytest.mark.timeout(900)  # pip installs edgert and its dependencies
@pytest.mark.skipif(os.geteuid() != 0, reason="useradd --root and chown need root")
def test_default_config_embeds_nats_only_when_installed(short_dir: Path) -> None:
    root = _staging_root(short_dir)
    sbin = root / "usr/sbin"
    sbin.mkdir(parents=True)
    (sbin / "nats-server").write_text("#!/bin/sh\n")
    (sbin / "nats-server").chmod(0o755)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "nats-server.service").symlink_to("/lib/systemd/system/nats-server.service")
    wheel = _wheel(short_dir)
    env = dict(os.environ, EDGERT_ROOT=str(root), PYTHON=sys.executable, PIP_NO_INDEX="1")
    env["PIP_FIND_LINKS"] = str(wheel.parent)
    env["PIP_NO_DEPS"] = "1"
    res = subprocess.run(
        [str(REPO / "deploy/install.sh"), str(wheel)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    text = (root / "etc/edgert/gateway.toml").read_text()
    assert "embedded = true" in text and "jetstream = true" in text
    # Debian's nats-server.service would hold 127.0.0.1:4222, the embedded server's port.
    assert not (wants / "nats-server.service").is_symlink()
    assert "disabled nats-server.service" in res.stdout


def _wheel(base: Path) -> Path:
    out = base / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, REPO],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return next(out.glob("edgert-*.whl"))


# What each shipped config may keep on the device's disk at most, whatever runs: the
# JetStream stream of its embedded server (when it has one) and the spool. README
# ("Disk, over a week") states these budgets and what a week of running fills.
DISK_BUDGET = {"demo": 320 * 2**20, "installed": 272 * 2**20}


def _shipped_configs(tmp_path: Path) -> dict[str, Path]:
    out = {"demo": REPO / "configs" / "demo.toml"}
    template = (REPO / "deploy" / "gateway.toml").read_text().replace("@ID@", "pi")
    for embedded in ("true", "false"):  # as install.sh writes it, with nats-server or not
        path = tmp_path / f"installed-{embedded}.toml"
        path.write_text(template.replace("@EMBEDDED@", embedded))
        out[f"installed, embedded = {embedded}"] = path
    return out


def test_shipped_configs_stay_within_their_disk_budget(tmp_path: Path) -> None:
    from edgert.config import load

    for name, path in _shipped_configs(tmp_path).items():
        nats = load(path).nats
        on_disk = nats.spool_max_bytes
        if nats.embedded and nats.jetstream:  # the stream is stored on this device
            assert 0 < nats.stream_max_bytes and 0 < nats.stream_max_age <= 7 * 86400, name
            on_disk += nats.stream_max_bytes
        budget = DISK_BUDGET[name.split(",")[0]]
        assert on_disk <= budget, f"{name}: up to {on_disk} bytes on disk, budget {budget}"
