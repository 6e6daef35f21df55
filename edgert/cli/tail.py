"""`edgert tail`: print the points flowing through a running gateway, live.

The bridge publishes every batch it accepts from the bus on a ZeroMQ PUB socket
at `ipc://<runtime_dir>/tail.sock`, as two frames: the node name followed by a
NUL byte (the subscription topic, so `--node` filters in ZeroMQ), and the batch
as a msgpack array of point maps. `tail` subscribes to it and prints one line
per point: time (UTC), node, type, key, value, and the origin when there is
one. It reads the local bus only, so it works while NATS is down.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path
from typing import TextIO

import click
import zmq

from edgert.bridge import tail_endpoint
from edgert.point import BadBatch, Point, points_from_maps, unpack_limited

__all__ = ["tail", "format_point"]


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def utc_stamp(ns: int) -> str:
    """`ns` since the epoch as ISO 8601 UTC with milliseconds and a Z.

    Plain date arithmetic, never the platform's time_t (32 bits on armhf, where
    `fromtimestamp` fails after 2038-01-19); a time outside the calendar prints raw.
    """
    try:
        t = _EPOCH + _dt.timedelta(microseconds=ns // 1000)
    except OverflowError:
        return f"{ns}ns"
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_point(p: Point) -> str:
    """One line for a point: time node type key value [origin=...]."""
    t = utc_stamp(p.time)
    value = json.dumps(p.value) if isinstance(p.value, str) or p.value is None else repr(p.value)
    if isinstance(p.value, bool):
        value = "true" if p.value else "false"
    line = f"{t}  {p.node}  {p.type}  {p.key}  {value}"
    return f"{line}  origin={p.origin}" if p.origin else line


def follow(runtime_dir: str, node: str | None, count: int | None, out: TextIO) -> int:
    """Print points until interrupted (or `count` points); returns how many were printed."""
    sock_path = Path(runtime_dir) / "tail.sock"
    if not sock_path.exists():
        click.echo(f"edgert tail: waiting for a gateway at {runtime_dir} ...", err=True)
    zctx = zmq.Context(1)
    printed = 0
    try:
        sock = zctx.socket(zmq.SUB)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, 100_000)
            sock.setsockopt(zmq.SUBSCRIBE, b"" if node is None else node.encode() + b"\0")
            sock.connect(tail_endpoint(runtime_dir))
            while count is None or printed < count:
                if not sock.poll(500):
                    continue
                frames = sock.recv_multipart()
                try:
                    if len(frames) != 2:
                        raise BadBatch(f"expected 2 frames, got {len(frames)}")
                    points = points_from_maps(unpack_limited(frames[1]))
                except BadBatch as e:
                    click.echo(f"edgert tail: skipped a malformed batch: {e}", err=True)
                    continue
                for p in points:
                    if node is not None and p.node != node:
                        continue
                    out.write(format_point(p) + "\n")
                    printed += 1
                    if count is not None and printed >= count:
                        break
                out.flush()
        finally:
            sock.close(0)
    finally:
        zctx.term()
    return printed


@click.command()
@click.option("--config", type=click.Path(dir_okay=False), help="The gateway's config file.")
@click.option(
    "--runtime-dir", type=click.Path(file_okay=False), help="The gateway's runtime directory."
)
@click.option("--node", help="Only the points of this node.")
@click.option("--count", type=click.IntRange(min=1), help="Exit after printing this many points.")
def tail(config: str | None, runtime_dir: str | None, node: str | None, count: int | None) -> None:
    """Print the points flowing through a running gateway, live, one per line:
    time (UTC), node, type, key, value. Reads the local bus, so it works while
    NATS is down. Ctrl-C stops it.

    \b
    Example:
      edgert tail                   # the only running gateway, or /etc/edgert/gateway.toml
      edgert tail --config configs/demo.toml --node meter
      edgert tail --runtime-dir /run/edgert/gw1 --count 10
    """
    from edgert.cli.locate import locate

    rdir = str(locate(config, runtime_dir, must_run=False))
    try:
        follow(rdir, node, count, sys.stdout)
    except KeyboardInterrupt:
        pass
