"""`edgert values`: the latest value of every point of a running gateway, with its age.

Asks the bridge's latest-values table (`edgert.bridge.latest`) on
`ipc://<runtime_dir>/values.sock`, so it answers at once, also for a point
that has not changed for hours (a register on `report = "change"`, a GPIO
input), and also while NATS is down. The table starts empty when the bridge
starts: a point shows once its driver published it since.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgert.point import BadBatch, Point, points_from_maps

__all__ = ["values", "latest_points"]


def latest_points(
    runtime_dir: str, node: str | None, timeout: float = 3.0
) -> tuple[list[Point], int, bool]:
    """(points, the gateway's clock now in ns, whether the table is full), or a
    ClickException saying why the gateway cannot tell."""
    import msgpack
    import zmq

    from edgert.bridge.latest import values_endpoint

    if not (Path(runtime_dir) / "values.sock").exists():
        raise click.ClickException(
            f"the gateway at {runtime_dir} has no bridge answering for values "
            "(it is starting, or runs with [nats] enabled = false)"
        )
    zctx = zmq.Context(1)
    try:
        sock = zctx.socket(zmq.DEALER)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(values_endpoint(runtime_dir))
            sock.send_multipart([b"", msgpack.packb({"node": node}, use_bin_type=True)])
            if not sock.poll(int(timeout * 1000)):
                raise click.ClickException(
                    f"the gateway's bridge at {runtime_dir} did not answer within {timeout:g}s"
                )
            # the bridge of this user's own gateway (a 0700 directory): a table of up to
            # 20,000 points may be larger than a bus frame may be
            reply = msgpack.unpackb(sock.recv_multipart()[-1], raw=False)
        finally:
            sock.close(0)
    finally:
        zctx.term()
    try:
        points = points_from_maps(reply["points"])
        return points, int(reply["now"]), bool(reply.get("full"))
    except (BadBatch, KeyError, TypeError, ValueError) as e:
        raise click.ClickException(f"a malformed answer from the bridge: {e}") from None


@click.command()
@click.argument("node", required=False)
@click.option("--config", type=click.Path(dir_okay=False), help="The gateway's config file.")
@click.option(
    "--runtime-dir", type=click.Path(file_okay=False), help="The gateway's runtime directory."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: the point maps and their age.")
def values(node: str | None, config: str | None, runtime_dir: str | None, as_json: bool) -> None:
    """Print the latest value of every point of a running gateway (or of NODE),
    with its age, without waiting for new points.

    \b
    Example:
      edgert values                 # the only running gateway, or /etc/edgert/gateway.toml
      edgert values meter1 --config /etc/edgert/gateway.toml
      edgert values --json
    """
    from edgert.cli.locate import locate
    from edgert.cli.tail import format_value, utc_stamp

    rdir = str(locate(config, runtime_dir))
    points, now, full = latest_points(rdir, node)
    points.sort(key=lambda p: (p.node, p.type, p.key))
    if as_json:
        out = [p.to_map() | {"age": round((now - p.time) / 1e9, 3)} for p in points]
        click.echo(json.dumps({"points": out, "full": full}, indent=2))
        return
    if not points:
        what = f"node {node!r}" if node else "any node"
        click.echo(f"no values yet for {what} (none published since the bridge started)")
        return
    from edgert.table import age, is_tty, render

    rows = [
        (
            p.node,
            p.type,
            p.key,
            format_value(p.value),
            age((now - p.time) / 1e9),
            utc_stamp(p.time),
            p.origin,
        )
        for p in points
    ]
    headers = ("NODE", "TYPE", "KEY", "VALUE", "AGE", "TIME (UTC)", "ORIGIN")
    click.echo(render(headers, rows, tty=is_tty(), right=("VALUE", "AGE"), wrap=("VALUE",)))
    if full:
        click.echo(
            "(the gateway keeps at most 20000 points' latest values: some are not shown)",
            err=True,
        )
    sys.stdout.flush()
