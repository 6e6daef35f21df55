"""The control socket: the supervisor serves it, `edgert status`/`reload` ask it.

The supervisor binds `ipc://<runtime_dir>/control.sock` (a ROUTER) in its
`run` and reads requests from its loop (`requests`, `answer`); a request is a
msgpack map `{"op": "status"}` and the answer `{"ok": true, "status": {...}}` or
`{"ok": false, "error": "..."}`. `request()` is the client: it opens a socket,
asks, and closes it; it raises `ControlError` with a clear message when no
gateway answers. `format_status` prints a snapshot as the status table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgpack
import zmq

__all__ = ["ControlError", "request", "format_status", "requests", "answer"]


class ControlError(Exception):
    """No gateway answered on the control socket, or it refused the request."""


def request(runtime_dir: str | os.PathLike[str], op: str, timeout: float = 3.0, **args: Any) -> Any:
    path = Path(runtime_dir) / "control.sock"
    if not path.exists():
        raise ControlError(
            f"no gateway is running with runtime directory {runtime_dir} (no {path})"
        )
    zctx = zmq.Context(1)
    try:
        sock = zctx.socket(zmq.DEALER)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(f"ipc://{path}")
            sock.send_multipart([b"", msgpack.packb({"op": op, **args}, use_bin_type=True)])
            if not sock.poll(int(timeout * 1000)):
                raise ControlError(
                    f"the gateway at {runtime_dir} did not answer within {timeout:g}s"
                )
            frames = sock.recv_multipart()
        finally:
            sock.close(0)
    finally:
        zctx.term()
    reply = msgpack.unpackb(frames[-1], raw=False)
    if not reply.get("ok"):
        raise ControlError(reply.get("error") or "request refused")
    return reply


def requests(sock: zmq.Socket) -> list[tuple[bytes, str | None]]:
    """Every request waiting on the server socket now: (who, op); op None when malformed."""
    from ..point import unpack_limited

    out: list[tuple[bytes, str | None]] = []
    while True:
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return out
        if len(frames) < 2:
            continue
        try:
            req = unpack_limited(frames[-1])
            op = req.get("op") if isinstance(req, dict) else None
        except Exception:  # noqa: BLE001 - any garbage gets an error reply
            op = None
        out.append((frames[0], op if isinstance(op, str) else None))


def answer(sock: zmq.Socket, who: bytes, reply: dict[str, Any]) -> None:
    """Send `reply` to `who`, never waiting (a client that went away loses it)."""
    try:
        sock.send_multipart([who, msgpack.packb(reply, use_bin_type=True)], zmq.NOBLOCK)
    except zmq.ZMQError:
        pass


def now_note(actor: dict[str, Any]) -> str:
    """What an actor says of its present state, from the figures it reports: its own
    note (`ctx.report(now=...)`), the NATS link (bridge), what it waits for, a closed
    port (Modbus), drops."""
    from ..table import age

    s = actor.get("stats") or {}
    notes = [f"DUPLICATE ID: also {s['duplicate_id']}"] if s.get("duplicate_id") else []
    notes += [str(s["now"])] if s.get("now") else []
    if s.get("nats"):
        notes.append(f"nats {s['nats']}")
    if s.get("clock") == "unsynchronized":
        held = f", holding {s.get('clock_held', 0)} points" if s.get("clock_holding") else ""
        notes.append(f"clock unsynchronized{held}")
    if s.get("waiting"):
        notes.append(f"waiting: {s['waiting']}")
    if s.get("port") not in (None, "open"):
        notes.append(f"port {s['port']}: {s.get('port_error') or '?'}")
    if actor.get("state") == "failed":
        retry = actor.get("retry_in")
        notes.append("given up" if retry is None else f"retry in {age(retry)}")
    if actor.get("dropped"):
        notes.append(f"dropped {actor['dropped']}")
    if actor.get("lost_at_stop"):
        notes.append(f"lost at stop {actor['lost_at_stop']}")
    return "; ".join(notes)


def format_status(status: dict[str, Any], tty: bool = False, width: int | None = None) -> str:
    """The status snapshot as a table, one row per actor (`edgert.table.render`): on a
    terminal fitted to its width, the NOW and LAST_ERROR columns wrapping, states in
    colour, and under the table a warning for a duplicate gateway id or an
    unsynchronized clock; otherwise one line per actor, nothing cut."""
    from ..table import STATE_STYLES, age, render

    headers = (
        "NAME",
        "KIND",
        "PID",
        "STATE",
        "RESTARTS",
        "UPTIME",
        "POINTS_OUT",
        "BUFFERED",
        "NOW",
        "LAST_ERROR",
    )
    rows = []
    for a in status["actors"]:
        err = (a.get("last_error") or "").strip().splitlines()
        rows.append(
            (
                a["name"],
                a.get("kind", ""),
                str(a["pid"] or "-"),
                a["state"],
                str(a["restarts"]),
                age(a["uptime"]) if a["uptime"] else "-",
                str(a["points_out"]),
                str(a["buffered"]),
                now_note(a),
                err[-1] if err else "",
            )
        )
    table = render(
        headers,
        rows,
        tty=tty,
        width=width,
        wrap=("NOW", "LAST_ERROR"),
        right=("PID", "RESTARTS", "UPTIME", "POINTS_OUT", "BUFFERED"),
        styles={"STATE": STATE_STYLES},
    )
    notes = []  # for a person at a terminal; piped, the rows alone (NOW says it too)
    stats = [a.get("stats") or {} for a in status["actors"]] if tty else []
    for twin in [s["duplicate_id"] for s in stats if s.get("duplicate_id")][:1]:
        notes.append(
            f"WARNING: another gateway with this id is on NATS ({twin}): commands reach "
            "either and the points of both mix; give each its own [gateway] id"
        )
    if "unsynchronized" in [s.get("clock") for s in stats]:
        notes.append(
            "warning: the clock is unsynchronized (points go out with Edgert-Clock: unsynced)"
        )
    rev = status.get("config_revision")
    head = f"gateway {status['gateway']}" + (f", config revision {rev}" if rev is not None else "")
    return "\n".join([head, table, *notes])
