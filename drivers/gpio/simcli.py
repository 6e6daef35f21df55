"""`edgert sim gpio CHIP ...`: create, drive and read a simulated GPIO chip.

CHIP is what follows "sim:" in a driver's `chip = "sim:NAME"` key: a NAME
under the simulated chips' directory ($EDGERT_GPIO_SIM_DIR, else
$XDG_RUNTIME_DIR/edgert-gpio-sim, else /tmp/edgert-gpio-sim-UID), or an
absolute path. `create` makes the chip, `set` drives input levels (the driver
sees edges), `get` shows every line's level and who holds it, `delete` removes
the chip. Errors exit with status 2.
"""

from __future__ import annotations

import json

import click

from .simchip import SimChip, SimChipError

__all__ = ["gpio"]

_LEVELS = {"1": True, "0": False, "high": True, "low": False, "true": True, "false": False}


class _Refused(click.ClickException):
    exit_code = 2


def _chip(ctx: click.Context) -> SimChip:
    return ctx.find_object(SimChip)  # type: ignore[return-value]


@click.group()
@click.argument("chip")
@click.pass_context
def gpio(ctx: click.Context, chip: str) -> None:
    """Drive and read the simulated GPIO chip CHIP (a driver's chip = "sim:CHIP").

    \b
    Example:
      edgert sim gpio board create --lines 32
      edgert run configs/gpio-example.toml &     # chip = "sim:board"
      edgert sim gpio board set 17=1             # the driver publishes door = true
      edgert sim gpio board get                  # levels, and the lines the driver holds
      edgert sim gpio board get 22               # the relay's level: 0 or 1
    """
    ctx.obj = SimChip.named(chip)


@gpio.command()
@click.option("--lines", default=32, show_default=True, help="How many lines the chip has.")
@click.pass_context
def create(ctx: click.Context, lines: int) -> None:
    """Create the chip with all lines low (an existing chip of that size is kept)."""
    try:
        chip = SimChip.create(_chip(ctx).path, lines)
    except (SimChipError, OSError) as e:
        raise _Refused(str(e)) from None
    click.echo(chip.path)


@gpio.command(name="set")
@click.argument("levels", nargs=-1, required=True, metavar="OFFSET=LEVEL...")
@click.pass_context
def set_(ctx: click.Context, levels: tuple[str, ...]) -> None:
    """Set input levels, as in 17=1 18=0 (LEVEL: 1/0, high/low, true/false).

    All of them change at once, as one event for each line that changed; a line
    that a driver holds as an output is refused (its level is the driver's).
    """
    values: dict[int, bool] = {}
    for item in levels:
        off, sep, level = item.partition("=")
        if not sep or not off.strip().isdigit() or level.strip().lower() not in _LEVELS:
            raise _Refused(f"{item!r}: expected OFFSET=LEVEL, e.g. 17=1")
        values[int(off)] = _LEVELS[level.strip().lower()]
    try:
        _chip(ctx).set(values)
    except SimChipError as e:
        raise _Refused(str(e)) from None


@gpio.command()
@click.argument("offsets", nargs=-1, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: lines, levels, holders.")
@click.pass_context
def get(ctx: click.Context, offsets: tuple[int, ...], as_json: bool) -> None:
    """Print line levels: all lines with their holders, or just OFFSETS' levels (0/1)."""
    chip = _chip(ctx)
    try:
        levels = chip.levels()
        held = chip.holders()
    except SimChipError as e:
        raise _Refused(str(e)) from None
    for o in offsets:
        if not 0 <= o < len(levels):
            raise _Refused(f"no line {o} (the chip has lines 0..{len(levels) - 1})")
    if as_json:
        shown = offsets or range(len(levels))
        doc = {
            "chip": str(chip.path),
            "levels": {str(o): int(levels[o]) for o in shown},
            "held": {
                str(o): {"direction": h.direction, "pid": h.pid, "consumer": h.consumer}
                for o, h in sorted(held.items())
                if o in shown
            },
        }
        click.echo(json.dumps(doc))
    elif offsets:
        for o in offsets:
            click.echo(int(levels[o]))
    else:
        click.echo(f"{'line':>4}  level  held by")
        for o, v in enumerate(levels):
            h = held.get(o)
            who = f"{h.direction} of {h.consumer} (pid {h.pid})" if h else "-"
            click.echo(f"{o:>4}  {int(v):>5}  {who}")


@gpio.command()
@click.pass_context
def delete(ctx: click.Context) -> None:
    """Delete the chip."""
    chip = _chip(ctx)
    if not chip.exists():
        raise _Refused(f"no simulated GPIO chip at {chip.path}")
    chip.remove()
