"""What `edgert check` looks at beyond the config's syntax: what `run` would fail on.

A config can be valid and still unable to run here: `[nats] embedded = true`
with no `nats-server` installed, the embedded server's port already taken by
another program, a data or runtime directory this user cannot create. Each of
those makes `run` fail (and, under systemd, restart in a loop), so `check`
reports them as errors. What may still appear later (a serial adapter not yet
plugged in) is a warning.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgert.config import GatewayConfig, runtime_dir_for

__all__ = ["Finding", "preflight", "spool_room"]


@dataclass(frozen=True)
class Finding:
    level: Literal["error", "warning"]
    message: str


def preflight(cfg: GatewayConfig) -> list[Finding]:
    """Everything found that would stop `edgert run CONFIG` here, errors first."""
    found: list[Finding] = []
    rdir = runtime_dir_for(cfg.gateway)
    running = (rdir / "control.sock").exists()
    found += _writable("[gateway] data_dir", cfg.data_dir)
    found += _writable("[gateway] runtime_dir", rdir)
    if cfg.nats.enabled and (room := spool_room(cfg)):
        found.append(Finding("warning", room))
    if cfg.nats.enabled and cfg.nats.embedded:
        found += _embedded_nats(cfg, check_port=not running)
    for d in cfg.drivers:
        found += [Finding("warning", f"[[driver]] {d.name!r}: {w}") for w in _devices(d.config)]
    return sorted(found, key=lambda f: f.level != "error")


def spool_room(cfg: GatewayConfig) -> str | None:
    """A warning when `spool_max_bytes` is more than `data_dir`'s disk can hold."""
    p = Path(cfg.data_dir)
    while not p.exists() and p.parent != p:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    spool = Path(cfg.data_dir) / "spool.db"
    for f in (spool, spool.with_name("spool.db-wal")):
        try:
            free += f.stat().st_size  # what the spool holds now is room for it
        except OSError:
            pass
    want = cfg.nats.spool_max_bytes
    if want <= free:
        return None
    return (
        f"[nats] spool_max_bytes = {want} is more than the {free} bytes free for "
        f"{cfg.data_dir}: in a long outage the disk fills first (the spool then "
        "holds new points and the drivers drop them, counted)"
    )


def _writable(what: str, path: Path) -> list[Finding]:
    """`path` exists as a writable directory, or can be made by this user."""
    p = path
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    if p.exists() and not p.is_dir():
        return [Finding("error", f"{what}: {p} is not a directory")]
    if not os.access(p, os.W_OK | os.X_OK):
        verb = "write to" if p == path else f"create {path} in"
        return [Finding("error", f"{what}: this user (uid {os.getuid()}) cannot {verb} {p}")]
    return []


def _embedded_nats(cfg: GatewayConfig, check_port: bool) -> list[Finding]:
    from edgert.natsserver import NatsServerConfig, find_nats_server

    out: list[Finding] = []
    try:
        find_nats_server()
    except FileNotFoundError as e:
        out.append(Finding("error", f"[nats] embedded = true: {e}"))
    try:
        conf = NatsServerConfig.from_section(cfg.nats, str(cfg.data_dir))
    except ValueError as e:
        return out + [Finding("error", str(e))]
    if check_port and (why := _port_busy(conf.host, conf.port)):
        out.append(
            Finding(
                "error",
                f"[nats] embedded = true: {conf.host}:{conf.port} ({cfg.nats.urls[0]}) {why}: "
                "stop what listens there, or set embedded = false and point url at that server",
            )
        )
    return out


def _port_busy(host: str, port: int) -> str | None:
    """Why the embedded server could not listen on host:port, or None if it could."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        return f"does not resolve ({e})"
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nats-server does
        try:
            s.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return "is already in use by another program"
            return f"cannot be listened on ({e.strerror})"
    return None


def _devices(conf: Any) -> list[str]:
    """Device paths named in a driver's config (a `port = "/dev/..."`) that do not exist yet."""
    if not dataclasses.is_dataclass(conf):
        return []
    out = []
    for f in dataclasses.fields(conf):
        v = getattr(conf, f.name, None)
        if isinstance(v, str) and v.startswith("/dev/") and not Path(v).exists():
            out.append(f"{f.name} {v} does not exist (yet): the driver will wait for it")
    return out
