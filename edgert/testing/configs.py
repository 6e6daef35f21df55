"""Gateway config text for tests: the pieces most tests repeat, in one place.

`gateway_config(directory, body, gateway_id)` writes `directory/gw.toml` (its
run and data directories beside it) with a `[gateway]` table in front of `body`
and loads it. `supervisor(**keys)` is a `[supervisor]` section with short
backoffs, `nats_section(url, **keys)` a `[nats]` section, `sim_driver(...)` a sim
driver with one signal (a counter by default), and `fault_driver(name, ...)` a
`FaultActor`; keyword arguments become TOML keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgert.config import GatewayConfig

__all__ = [
    "gateway_config",
    "gateway_toml",
    "supervisor",
    "nats_section",
    "sim_driver",
    "fault_driver",
]


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str | Path):
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def keys(**values: object) -> str:
    """`key = value` lines, one a key, in TOML."""
    return "".join(f"{k} = {_value(v)}\n" for k, v in values.items())


def supervisor(backoff_min: float = 0.1, backoff_max: float = 0.5, **more: object) -> str:
    """A `[supervisor]` section whose restarts come quickly (tests wait on them)."""
    return "\n[supervisor]\n" + keys(backoff_min=backoff_min, backoff_max=backoff_max, **more)


def nats_section(url: str, **more: object) -> str:
    """A `[nats]` section for the server at `url`."""
    return "\n[nats]\n" + keys(url=url, **more)


def sim_driver(
    name: str = "gen",
    signal: str = "n",
    shape: str = "counter",
    rate: float = 20.0,
    **more: object,
) -> str:
    """A sim driver publishing one signal (`more`: keys of the driver)."""
    return (
        f"\n[[driver]]\n{keys(name=name, type='sim', **more)}"
        f"[[driver.signal]]\n{keys(name=signal, shape=shape, rate=rate)}"
    )


def fault_driver(name: str, restart: str = "permanent", **more: object) -> str:
    """An `edgert.testing:FaultActor` driver (`more`: its mode, after, ...)."""
    return "\n[[driver]]\n" + keys(
        name=name, type="edgert.testing:FaultActor", restart=restart, **more
    )


def gateway_toml(directory: str | Path, body: str = "", gateway_id: str = "gw") -> str:
    """A whole config file: `[gateway]` (run and data directories in `directory`), then `body`."""
    d = Path(directory)
    head = keys(id=gateway_id, runtime_dir=d / "run", data_dir=d / "data")
    return f"[gateway]\n{head}\n{body}"


def gateway_config(directory: str | Path, body: str = "", gateway_id: str = "gw") -> GatewayConfig:
    """Write `directory/gw.toml` (`gateway_toml`) and load it."""
    from edgert.config import loads

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    text = gateway_toml(d, body, gateway_id)
    path = d / "gw.toml"
    path.write_text(text)
    return loads(text, str(path))
