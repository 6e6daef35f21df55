"""`edgert bench`: measure this machine, each figure beside a same-run baseline.

The suites live in their own modules and return plain dicts: `core` (restart,
start-up, memory), `points` (throughput, latency), `efficiency` (CPU at
realistic rates), `overload` (many drivers at full speed), `outage` (NATS
down, then back), `modbus` and `footprint` (disk, memory, idle CPU, cold start
of three gateways, for README's footprint table); `fleet` (many gateways on a
NATS cluster) runs only when asked for, by name (`edgert bench fleet`). This
module runs the ones asked for and prints
a table per suite (figure, baseline, ratio, target, pass/FAIL; `table`), or
the raw dicts as JSON.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from importlib import import_module
from typing import Any

import click

from edgert.bench.table import Line, format_rows, rows

__all__ = ["bench", "SUITES", "rows", "Line"]

# suite -> (module, function returning the figures, function formatting them or "")
SUITES = {
    "core": ("edgert.bench.core", "run_all", ""),
    "points": ("edgert.bench.points", "run_all", ""),
    "efficiency": ("edgert.bench.efficiency", "run_all", ""),
    "overload": ("edgert.bench.overload", "run_all", ""),
    "outage": ("edgert.bench.outage", "run_all", ""),
    "modbus": ("edgert.bench.modbus", "bench_modbus", "format_table"),
    "footprint": ("edgert.bench.footprint", "run_all", "format_table"),
    "fleet": ("edgert.bench.fleet", "run_all", ""),
}
OPT_IN = ("fleet",)  # long and heavy: run only when named


def _run_suite(name: str, options: dict[str, Any]) -> dict[str, Any]:
    module, func, _ = SUITES[name]
    try:
        mod = import_module(module)
    except ImportError as e:
        return {"error": f"suite {name!r} is not available: {e}"}
    fn = getattr(mod, func)
    params = inspect.signature(fn).parameters
    try:
        return fn(**{k: v for k, v in options.items() if k in params})
    except Exception as e:  # noqa: BLE001 - one failed suite must not hide the others' figures
        logging.getLogger("edgert.bench").debug("suite %s failed", name, exc_info=True)
        return {"error": f"suite {name!r} failed: {type(e).__name__}: {e}"}


def _format(name: str, res: dict[str, Any]) -> str:
    module, _, formatter = SUITES[name]
    if formatter:
        return getattr(import_module(module), formatter)(res)
    table = rows(name, res)
    if not table:
        return json.dumps(res, indent=2, sort_keys=True)
    return format_rows(table)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw figures as JSON.")
@click.option(
    "--suite",
    "--only",
    "suites",
    type=click.Choice(list(SUITES)),
    multiple=True,
    help="Run only this suite (repeatable). Default: all but fleet.",
)
@click.option(
    "--outage-seconds",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="How long NATS stays down in the outage suite.",
)
@click.option(
    "--gateways",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="How many gateways the fleet suite runs.",
)
@click.option(
    "--modbus-devices",
    type=click.IntRange(min=1, max=60000),
    default=500,
    show_default=True,
    help="How many Modbus TCP devices (30 registers each, every second) the modbus suite polls.",
)
@click.option(
    "--modbus-latency",
    default="0,20",
    show_default=True,
    help="The simulated devices' answer delays in ms, comma separated: one run each.",
)
@click.option(
    "--modbus-seconds",
    type=click.FloatRange(min=1),
    default=20.0,
    show_default=True,
    help="The measuring window of each modbus scale run.",
)
@click.option(
    "--modbus-scale-only",
    is_flag=True,
    help="In the modbus suite, run only the many-devices runs (no serial line, no profile).",
)
@click.argument("named", nargs=-1, type=click.Choice(list(SUITES)))
def bench(
    as_json: bool,
    suites: tuple[str, ...],
    outage_seconds: float,
    gateways: int,
    modbus_devices: int,
    modbus_latency: str,
    modbus_seconds: float,
    modbus_scale_only: bool,
    named: tuple[str, ...],
) -> None:
    """Measure the point path, restarts and memory on this machine.

    Every figure is printed beside a baseline measured in the same run (bare
    multiprocessing, raw ZeroMQ + nats-py, other Modbus clients), with their
    ratio and the target it is held to, so the table means something on any
    machine. All suites take about 6 minutes, one of them a 60 s NATS outage.
    Suites may also be named as arguments; `fleet` (50 gateways on a 3-node
    NATS cluster, about 5 minutes) runs only when named.

    \b
    Example:
      edgert bench --suite efficiency
      edgert bench --suite outage --outage-seconds 10
      edgert bench --json > bench.json
      edgert bench fleet --gateways 20
      edgert bench modbus --modbus-scale-only --modbus-devices 100 --modbus-latency 20
    """
    logging.getLogger("edgert").setLevel(logging.CRITICAL)  # restarts are the point here
    try:
        latency = tuple(float(x) for x in modbus_latency.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(
            "ms, comma separated: 0,20", param_hint="--modbus-latency"
        ) from None
    options = {
        "down": outage_seconds,
        "gateways": gateways,
        "modbus_devices": modbus_devices,
        "modbus_latency": latency,
        "modbus_seconds": modbus_seconds,
        "modbus_scale_only": modbus_scale_only,
    }
    results: dict[str, Any] = {}
    chosen = list(dict.fromkeys(suites + named)) or [s for s in SUITES if s not in OPT_IN]
    for name in chosen:
        if not as_json:
            click.echo(f"running {name} ...", err=True)
        load = os.getloadavg()[0]  # other work on the machine shows in every figure
        results[name] = _run_suite(name, options)
        results[name]["load_average"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    if as_json:
        click.echo(json.dumps(results, indent=2, sort_keys=True))
        return
    for name, res in results.items():
        before, after = res.pop("load_average")
        click.echo(f"\n== {name} (load average {before:.1f} before, {after:.1f} after)")
        if "error" in res:
            click.echo(f"  {res['error']}")
            continue
        for line in _format(name, res).splitlines():
            click.echo(f"  {line}")
