"""`edgert sim ...`: simulated hardware from the command line.

`edgert sim gpio CHIP ...` creates and drives a simulated GPIO chip (see
`edgert_drivers.gpio.simcli`). `edgert sim modbus --config SIM.toml` serves the devices SIM.toml describes
(see `edgert_drivers.modbus.sim`) on a pseudo-terminal, or TCP, and prints the address
to use as the driver's `port` (or `host`/`tcp_port`) as its first line of
output, then serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import tomllib

import click

from edgert.config import ConfigError, decode

__all__ = ["sim"]


@click.group()
def sim() -> None:
    """Simulated hardware for tests and demos: Modbus devices, GPIO chips."""


def _attach_gpio() -> None:
    from edgert_drivers.gpio.simcli import gpio

    sim.add_command(gpio)


_attach_gpio()


@sim.command()
@click.option("--config", "config", required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--link", help="Also make this symlink to the pty (a stable port name).")
def modbus(config: str, link: str | None) -> None:
    """Serve simulated Modbus devices; print the port path, serve until stopped.

    \b
    Example:
      edgert sim modbus --config SIM.toml
      # prints e.g. /dev/pts/4: use it as `port` of a [[driver]] with type = "modbus"
    """
    from edgert_drivers.modbus.sim import ModbusSim, SimConfig

    try:
        with open(config, "rb") as f:
            table = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{config}: not valid TOML: {e}") from None
    if link is not None:
        table["link"] = link
    cfg = decode(SimConfig, table, config)
    server = ModbusSim(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: server.stop())
    units = ", ".join(str(d.unit) for d in cfg.device) or "none"
    click.echo(f"simulating units {units} over {cfg.transport}", err=True)
    server.run(announce=sys.stdout)
