"""README's driver example works as printed: a user's own driver, found by "module:Class",
under the names `edgert new-driver` gives the package it lives in.

And CI runs the test command README gives.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from edgert.testing import wait_for

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _driver_section() -> str:
    return README.read_text().split("## Writing a driver", 1)[1].split("\n## ", 1)[0]


def _driver_example() -> str:
    return re.search(r"```python\n(.*?)```", _driver_section(), re.S).group(1)


def test_readme_names_the_driver_as_new_driver_does(tmp_path: Path) -> None:
    from edgert.cli.scaffold import write_skeleton

    root = write_skeleton("thermo", tmp_path)
    classes = re.findall(r"^class (\w+)", (root / "edgert_thermo" / "driver.py").read_text(), re.M)
    assert sorted(re.findall(r"^class (\w+)", _driver_example(), re.M)) == sorted(classes)
    pyproject = (root / "pyproject.toml").read_text()
    entry = re.search(r'^thermo = ".*"$', pyproject, re.M).group(0)
    section = _driver_section()
    assert f'```toml\n[project.entry-points."edgert.drivers"]\n{entry}\n```' in section
    assert f"`{root.name}/`" in section and "`edgert_thermo/driver.py`" in section


def test_readme_driver_example_runs_under_a_gateway(short_dir: Path) -> None:
    package = short_dir / "edgert_thermo"  # where `edgert new-driver thermo` puts it
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "driver.py").write_text(_driver_example())
    zone = short_dir / "temp"
    zone.write_text("42500\n")
    cfg = short_dir / "gw.toml"
    cfg.write_text(
        f'[gateway]\nid = "rd"\nruntime_dir = "{short_dir}/run"\ndata_dir = "{short_dir}/data"\n'
        f"[nats]\nenabled = false\n"
        f'[[driver]]\nname = "cpu"\ntype = "edgert_thermo.driver:ThermoDriver"\npath = "{zone}"\ninterval = 0.05\n'
    )
    env = dict(os.environ, PYTHONPATH=str(short_dir))
    edgert = [sys.executable, "-m", "edgert"]
    check = subprocess.run([*edgert, "check", str(cfg)], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(
        [*edgert, "run", str(cfg)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )

    def cpu() -> dict | None:
        r = subprocess.run(
            [*edgert, "status", "--config", str(cfg), "--json"],
            env=env,
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            return None
        actors = {a["name"]: a for a in json.loads(r.stdout)["actors"]}
        a = actors.get("cpu")
        return a if a and a["state"] == "running" and a["points_out"] >= 5 else None

    try:
        wait_for(cpu, 30, "the README driver publishing")
    finally:
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=20)[1].decode()
    assert proc.returncode == 0, err


def test_ci_runs_the_readme_test_command() -> None:
    block = README.read_text().split("**Run the tests**", 1)[1]
    command = re.search(r"```sh\n(.*?)\n```", block, re.S).group(1).strip()
    assert "pytest" in command
    lines = {line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()}
    quiet = command.replace("pip install ", "pip install -q ")  # CI's log stays short
    assert command in lines or quiet in lines
