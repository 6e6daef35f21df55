"""`edgert modbus scan`: find the units that answer on a Modbus bus, and who they are.

Asks each unit of `--units` one cheap read, waits `--timeout` at most, and for
each that answers prints its device identification (FC 43/14) where it gives
one; then prints a `[[driver]]` block for the units found (see
`edgert_drivers.modbus.scan`). With several `--baudrate` values (comma
separated) each is tried in turn.
"""

from __future__ import annotations

import click

from edgert.config import ConfigError, decode

__all__ = ["modbus"]


@click.group()
def modbus() -> None:
    """Modbus tools: find the units on a bus."""


@modbus.command()
@click.option("--port", help="Serial device (RTU), e.g. /dev/ttyUSB0.")
@click.option("--host", help="Modbus TCP server or serial-to-TCP gateway.")
@click.option("--tcp-port", default=502, show_default=True, type=int)
@click.option(
    "--transport",
    type=click.Choice(["rtu", "ascii", "tcp", "rtu_over_tcp", "udp", "rtu_over_udp"]),
    help="Default: rtu with --port, tcp with --host.",
)
@click.option("--units", default="1-247", show_default=True, help='e.g. "1-10,17".')
@click.option("--baudrate", default="19200", show_default=True, help='One or more: "9600,19200".')
@click.option("--parity", type=click.Choice(["N", "E", "O"]), default="E", show_default=True)
@click.option("--stopbits", type=click.IntRange(1, 2), default=1, show_default=True)
@click.option(
    "--timeout", type=float, default=0.2, show_default=True, help="Seconds per unit at most."
)
def scan(
    port: str | None,
    host: str | None,
    tcp_port: int,
    transport: str | None,
    units: str,
    baudrate: str,
    parity: str,
    stopbits: int,
    timeout: float,
) -> None:
    """Find the units that answer; print each and a suggested [[driver]] block.

    \b
    Examples:
      edgert modbus scan --port /dev/ttyUSB0 --baudrate 9600,19200 --units 1-32
      edgert modbus scan --host 192.168.1.50 --units 1-10
    """
    from edgert_drivers.modbus.config import ModbusConfig
    from edgert_drivers.modbus.errors import PortError
    from edgert_drivers.modbus.scan import parse_units, scan, suggest

    if (port is None) == (host is None):
        raise click.UsageError("give --port (serial) or --host (TCP), one of them")
    try:
        unit_list = parse_units(units)
        rates = [int(b) for b in baudrate.split(",")]
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    table: dict = {"transport": transport or ("rtu" if port else "tcp"), "timeout": timeout}
    if port:
        table.update(port=port, parity=parity, stopbits=stopbits)
    else:
        table.update(host=host, tcp_port=tcp_port)
        rates = rates[:1]
    any_found = False
    for rate in rates:
        cfg = decode(ModbusConfig, {**table, "baudrate": rate}, "scan")
        if port:
            click.echo(f"scanning {port} at {rate} baud, {parity}, units {units}", err=True)
        else:
            click.echo(f"scanning {host}:{tcp_port}, units {units}", err=True)
        found = []
        try:
            for f in scan(cfg, unit_list, timeout):
                ident = ", ".join(f"{k} {v}" for k, v in f.ident.items())
                ident = ident or f"no device identification ({f.ident_error})"
                click.echo(f"unit {f.unit}: {f.answer}; {ident}")
                found.append(f)
        except PortError as e:
            raise ConfigError(f"cannot open the bus: {e}") from None
        if found:
            any_found = True
            click.echo("")
            click.echo(suggest(cfg, found))
    if not any_found:
        raise click.ClickException("no unit answered")
