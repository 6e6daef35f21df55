"""`edgert new-driver NAME`: write a skeleton driver package with a passing test.

The skeleton is the smallest complete driver: a typed config with bounds and
docs (`Actor[Config]`), a `run` with the one select loop (stop, commands, an
`every` poll timer, a note for `edgert status`), a writable setting that
refuses bad values, an entry point so `type = "NAME"` finds it, and a test that
runs it as a real process under a real gateway.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import click

__all__ = ["new_driver", "write_skeleton"]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "edgert-{name}"
version = "0.1.0"
description = "An edgert driver: {name}"
requires-python = ">=3.11"
dependencies = ["edgert"]

[project.optional-dependencies]
test = ["pytest>=8"]

[project.entry-points."edgert.drivers"]
{name} = "edgert_{name}.driver:{cls}"

[tool.setuptools]
packages = ["edgert_{name}"]

[tool.ruff]
line-length = 100

[tool.ruff.lint]
select = ["E", "F", "W", "I", "B", "UP"]
"""

_INIT = '''"""edgert driver `{name}`."""

from .driver import {cls}

__all__ = ["{cls}"]
'''

_DRIVER = '''"""The `{name}` driver: reads its device every `interval` seconds.

Replace `read()` with the code that talks to your hardware. Open the device in
`run` and close it there (a `with` block), so a stop or a crash never leaves it
held. Raise from `run` on an error you cannot handle: the supervisor restarts
the driver with backoff.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from edgert import Actor, Command, Context, Point, Stop, every

SETPOINT_MIN, SETPOINT_MAX = -50.0, 150.0


@dataclass
class {cls}Config:
    """The keys of a `[[driver]]` with `type = "{name}"`.

    `edgert drivers --keys {name}` shows them with their docs.
    """

    interval: float = field(default=1.0, metadata={{"gt": 0, "doc": "seconds between reads"}})
    setpoint: float = field(
        default=20.0,
        metadata={{
            "min": SETPOINT_MIN,
            "max": SETPOINT_MAX,
            "doc": "the setting at start; commands change it",
        }},
    )


class {cls}(Actor[{cls}Config]):
    """Reads its device every `interval` seconds; its `setpoint` takes commands."""

    def run(self, ctx: Context[{cls}Config]) -> None:
        setpoint = ctx.config.setpoint
        ctx.report(now=f"setpoint {{setpoint}}")
        tick = every(ctx.config.interval)  # the first read now, then every interval
        while True:
            msg = ctx.receive(timeout=ctx.until(tick.next))
            match msg:
                case Stop():
                    return
                case Command():
                    error = self.check_write(msg)
                    if error is None:
                        setpoint = float(msg.points[-1].value)
                        ctx.publish(Point(ctx.name, "setpoint", value=setpoint, origin="cmd"))
                        ctx.report(now=f"setpoint {{setpoint}}")
                    ctx.reply(msg, error)
            if tick.due():  # late: one read now, the missed ones skipped (tick.skipped)
                ctx.publish(Point(ctx.name, "value", value=self.read()))
                ctx.publish(Point(ctx.name, "setpoint", value=setpoint))

    def read(self) -> float:
        return round(random.uniform(0, 100), 2)

    @staticmethod
    def check_write(cmd: Command) -> str | None:
        """Refuse a whole command unless every point in it may be written."""
        for p in cmd.points:
            if p.type != "setpoint":
                return f"{{p.type!r}} is not writable (writable: setpoint)"
            if not isinstance(p.value, int | float) or isinstance(p.value, bool):
                return f"setpoint takes a number, got {{p.value!r}}"
            if not SETPOINT_MIN <= p.value <= SETPOINT_MAX:
                return f"setpoint must be within {{SETPOINT_MIN}}..{{SETPOINT_MAX}}, got {{p.value}}"
        return None
'''

_TEST = '''"""The `{name}` driver as a real process under a real gateway."""

from __future__ import annotations

import shutil
import tempfile

from edgert import Command, Point
from edgert.config import loads
from edgert.testing import running_gateway, status, wait_for

from edgert_{name}.driver import {cls}

CONFIG = """
[gateway]
id = "test"
runtime_dir = "{{d}}/run"
data_dir = "{{d}}/data"

[nats]
enabled = false

[[driver]]
name = "dev"
type = "edgert_{name}.driver:{cls}"
interval = 0.05
"""


def test_driver_runs_and_publishes() -> None:
    d = tempfile.mkdtemp(prefix="ert-")  # short: socket paths are limited to 107 bytes
    try:
        cfg = loads(CONFIG.format(d=d), f"{{d}}/gw.toml")
        with running_gateway(cfg):

            def published() -> bool:
                a = status(cfg)["by_name"]["dev"]
                return a["state"] == "running" and a["points_out"] >= 10

            wait_for(published, 30, "the driver publishing")
            # what it reported with ctx.report(now=...): the NOW column of `edgert status`
            wait_for(lambda: status(cfg)["by_name"]["dev"]["stats"].get("now"), 10, "its note")
            assert status(cfg)["by_name"]["dev"]["stats"]["now"] == "setpoint 20.0"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_writes_are_checked() -> None:
    check = {cls}.check_write
    assert check(Command(1, [Point("dev", "setpoint", value=21.5)])) is None
    assert "not writable" in check(Command(2, [Point("dev", "value", value=1)]))
    assert "within" in check(Command(3, [Point("dev", "setpoint", value=1e6)]))
'''

_README = """# edgert-{name}

An edgert driver. Install it next to edgert and use it with `type = "{name}"`:

```sh
pip install -e '.[test]' && pytest -q
```

```toml
[[driver]]
name = "dev1"
type = "{name}"
interval = 1.0
setpoint = 20.0
```

Points: `dev1/value` every `interval`, `dev1/setpoint` (writable by command).
"""


def write_skeleton(name: str, parent: Path) -> Path:
    """Write the package `edgert-<name>` under `parent`; returns its directory."""
    if not _NAME.match(name):
        raise click.BadParameter(
            f"{name!r}: use lower case letters, digits and _, starting with a letter",
            param_hint="NAME",
        )
    root = parent / f"edgert-{name}"
    if root.exists():
        raise click.BadParameter(f"{root} exists already; not overwriting it", param_hint="NAME")
    cls = "".join(part.capitalize() for part in name.split("_")) + "Driver"
    files = {
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
        f"edgert_{name}/__init__.py": _INIT,
        f"edgert_{name}/driver.py": _DRIVER,
        "tests/test_driver.py": _TEST,
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.format(name=name, cls=cls))
    return root


@click.command("new-driver")
@click.argument("name")
@click.option(
    "--dir",
    "parent",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where to create the package.",
)
def new_driver(name: str, parent: Path) -> None:
    """Write a skeleton driver package NAME with a passing test.

    The package registers `type = "NAME"` through the `edgert.drivers` entry
    point; its test runs the driver as a real process under a real gateway.

    \b
    Example:
      edgert new-driver thermo && cd edgert-thermo
      pip install -e '.[test]' && pytest -q
    """
    root = write_skeleton(name, parent)
    click.echo(f"wrote {root}")
    py = shlex.quote(sys.executable)
    click.echo(f"next: cd {root} && {py} -m pip install -e '.[test]' && {py} -m pytest -q")
