"""`edgert tail`: print the points flowing through a running gateway, live.

The bridge publishes every batch it accepts from the bus, while someone
subscribes, on a ZeroMQ XPUB socket (a PUB that hears the subscriptions) at
`ipc://<runtime_dir>/tail.sock`, as two frames: the node name followed by a
NUL byte (the subscription topic, so `--node` filters in ZeroMQ), and the batch
as a msgpack array of point maps. `tail` subscribes to it and prints one line
per point: time (UTC), node, type, key, value, and the origin when there is
one. It reads the local bus only, so it works while NATS is down.

A gateway that is not running yet is waited for, saying so; one that stops
while followed is said on stderr and waited for again, and with `--count` it
ends `tail` (exit 1) rather than leaving it waiting for points that cannot come.

On a terminal the lines come under a header, in columns that widen to the
longest name seen; piped, the fields are separated by two spaces. A float read
from a 32-bit register prints as the shortest decimal that is that float32
(229.99979, not 229.99978637695312). With `--last`, the latest value of every
point (`edgert values`) comes first, then the live flow.
"""

from __future__ import annotations

import datetime as _dt
import json
import struct
import sys
from pathlib import Path
from typing import TextIO

import click
import zmq

from edgert.bridge import tail_endpoint
from edgert.cli import say
from edgert.point import BadBatch, Point, points_from_maps, unpack_limited

__all__ = ["tail", "format_point", "format_value", "utc_stamp"]


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


def format_value(v: object) -> str:
    """A point's value for people: strings quoted, booleans as true/false, a float
    that is exactly a float32 (a 32-bit register) as the shortest decimal of it."""
    if isinstance(v, str) or v is None:
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v == v and abs(v) != float("inf"):
        try:
            as32 = struct.unpack("<f", struct.pack("<f", v))[0]
        except OverflowError:
            as32 = None
        if as32 == v:
            for digits in range(1, 10):
                text = f"{v:.{digits}g}"
                if struct.unpack("<f", struct.pack("<f", float(text)))[0] == v:
                    return repr(float(text))
    return repr(v)


HEADER = ("TIME (UTC)", "NODE", "TYPE", "KEY", "VALUE")


def _fields(p: Point) -> list[str]:
    out = [utc_stamp(p.time), p.node, p.type, p.key, format_value(p.value)]
    return out + [f"origin={p.origin}"] if p.origin else out


def format_point(p: Point) -> str:
    """One line for a point: time node type key value [origin=...]."""
    return "  ".join(_fields(p))


class Columns:
    """Lines under a header, in columns as wide as the names of the points the
    gateway already knows (`seed`: its latest values), widening for a longer one
    seen later (a stream has no last row to measure first)."""

    def __init__(self, seed: list[Point] = ()) -> None:  # type: ignore[assignment]
        self.widths = [len(h) for h in HEADER[:4]]
        self.widths[0] = max(self.widths[0], len(utc_stamp(0)))
        for p in seed:
            for i, f in enumerate((p.node, p.type, p.key), start=1):
                self.widths[i] = max(self.widths[i], len(f))

    def header(self) -> str:
        return self._line(list(HEADER))

    def line(self, p: Point) -> str:
        return self._line(_fields(p))

    def _line(self, fields: list[str]) -> str:
        for i, f in enumerate(fields[:4]):
            self.widths[i] = max(self.widths[i], len(f))
        padded = [f.ljust(w) for f, w in zip(fields, self.widths, strict=False)]
        return "  ".join(padded + fields[4:]).rstrip()


def follow(
    runtime_dir: str,
    node: str | None,
    count: int | None,
    out: TextIO,
    last: bool = False,
    tty: bool = False,
) -> int:
    """Print points until interrupted (or `count` points); returns how many were printed.

    With `last`, the latest value of every point first (subscribed before asking,
    so nothing falls between the two; a live point no newer than one shown is skipped).
    """
    from edgert.rundir import gone

    up = not gone(Path(runtime_dir))
    if not up:
        say("warning", f"no gateway is running at {runtime_dir}: waiting for one (Ctrl-C ends)")
    zctx = zmq.Context(1)
    printed = 0
    shown: dict[tuple[str, str, str], int] = {}
    try:
        sock = zctx.socket(zmq.SUB)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, 100_000)
            sock.setsockopt(zmq.SUBSCRIBE, b"" if node is None else node.encode() + b"\0")
            sock.connect(tail_endpoint(runtime_dir))
            latest: list[Point] = []  # asked once subscribed: nothing falls between
            if last or (tty and up):
                from edgert.cli.values import latest_points

                try:
                    latest = latest_points(runtime_dir, node, timeout=3.0 if last else 1.0)[0]
                except click.ClickException:
                    if last:
                        raise
            columns = Columns(latest) if tty else None
            show = columns.line if columns is not None else format_point
            if columns is not None:
                out.write(columns.header() + "\n")
            if last:
                for p in sorted(latest, key=lambda p: p.time):
                    if count is not None and printed >= count:
                        break
                    out.write(show(p) + "\n")
                    shown[(p.node, p.type, p.key)] = p.time
                    printed += 1
                out.flush()
            while count is None or printed < count:
                if not sock.poll(500):
                    if up and gone(Path(runtime_dir)):
                        if count is not None:
                            raise click.ClickException(
                                f"the gateway at {runtime_dir} stopped after {printed} of "
                                f"{count} points"
                            )
                        say(
                            "warning",
                            f"the gateway at {runtime_dir} stopped: waiting for it to start "
                            "again (Ctrl-C ends)",
                        )
                    up = not gone(Path(runtime_dir))
                    continue
                up = True
                frames = sock.recv_multipart()
                try:
                    if len(frames) != 2:
                        raise BadBatch(f"expected 2 frames, got {len(frames)}")
                    points = points_from_maps(unpack_limited(frames[1]))
                except BadBatch as e:
                    say("warning", f"tail: skipped a malformed batch: {e}")
                    continue
                for p in points:
                    if node is not None and p.node != node:
                        continue
                    if shown and p.time <= shown.get((p.node, p.type, p.key), -1):
                        continue  # shown already as the latest value
                    out.write(show(p) + "\n")
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
@click.option(
    "--last",
    is_flag=True,
    help="First the latest value of every point (as `edgert values`), then the live flow.",
)
def tail(
    config: str | None, runtime_dir: str | None, node: str | None, count: int | None, last: bool
) -> None:
    """Print the points flowing through a running gateway, live, one per line:
    time (UTC), node, type, key, value. Reads the local bus, so it works while
    NATS is down. Ctrl-C stops it.

    \b
    Example:
      edgert tail                   # the only running gateway, or /etc/edgert/gateway.toml
      edgert tail --config configs/demo.toml --node meter
      edgert tail --last --node meter   # its current values first, then what changes
      edgert tail --runtime-dir /run/edgert/gw1 --count 10
    """
    from edgert.cli.locate import locate

    rdir = str(locate(config, runtime_dir, must_run=last))
    if _bridgeless(rdir):
        raise click.ClickException(
            f"the gateway at {rdir} runs without a bridge ([nats] enabled = false): no "
            "points flow to tail (its drivers discard them); edgert status shows the drivers"
        )
    try:
        follow(rdir, node, count, sys.stdout, last=last, tty=sys.stdout.isatty())
    except KeyboardInterrupt:
        pass


def _bridgeless(runtime_dir: str) -> bool:
    """True when a gateway runs at `runtime_dir` with no bridge configured: tail would
    wait forever. A gateway not running, or not answering, is waited for."""
    if (Path(runtime_dir) / "tail.sock").exists():
        return False
    from edgert.control import ControlError, request

    try:
        actors = request(runtime_dir, "status", timeout=2.0)["status"]["actors"]
    except (ControlError, KeyError, TypeError):
        return False
    return not any(a.get("kind") == "bridge" for a in actors)
