"""What `edgert check` looks at beyond the config's syntax: what `run` would fail on.

A config can be valid and still unable to run here: `[nats] embedded = true`
with no `nats-server` installed, the embedded server's port already taken by
another program, a data or runtime directory this user cannot create (a
read-only file system, /proc, a parent that is a file), a runtime directory
another user could tamper with. Each of those makes `run` fail (and, under
systemd, restart in a loop), so `check` reports them as errors, and `run`
calls the same `preflight` and refuses to start on them, creating nothing.
What may still appear later (a serial adapter not yet plugged in) is a warning.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from edgert.config import GatewayConfig, runtime_dir_for
from edgert.rundir import running_dir_of

__all__ = [
    "Finding",
    "preflight",
    "private_problem",
    "spool_room",
    "embedded_address",
    "embedded_port_busy",
]


@dataclass(frozen=True)
class Finding:
    level: Literal["error", "warning"]
    message: str


def preflight(cfg: GatewayConfig) -> list[Finding]:
    """Everything found that would stop `edgert run CONFIG` here, errors first."""
    found: list[Finding] = []
    rdir = runtime_dir_for(cfg.gateway)
    # This gateway running (maybe started from another environment: systemd's /run)
    # holds its own ports: not a reason to refuse.
    running = running_dir_of(cfg.gateway.id, cfg.gateway.runtime_dir) is not None
    found += _writable("[gateway] data_dir", cfg.data_dir)
    found += _writable("[gateway] runtime_dir", rdir)
    if why := private_problem(rdir):
        found.append(Finding("error", f"[gateway] runtime_dir: {why}"))
    for key in ("runtime_dir", "data_dir"):
        if (value := getattr(cfg.gateway, key)) and not Path(value).is_absolute():
            found.append(Finding("warning", _relative(key, value)))
    if cfg.nats.enabled and (room := spool_room(cfg)):
        found.append(Finding("warning", room))
    if cfg.nats.enabled and cfg.nats.embedded:
        found += _embedded_nats(cfg, check_port=not running)
    for d in cfg.drivers:
        found += [Finding("warning", f"[[driver]] {d.name!r}: {w}") for w in _devices(d.config)]
    if why := msgpack_interpreted():
        found.append(Finding("warning", why))
    return sorted(found, key=lambda f: f.level != "error")


def msgpack_interpreted() -> str | None:
    """A warning when msgpack runs without its C extension (a source build without a
    compiler, or MSGPACK_PUREPYTHON set): it then packs and unpacks in Python, 10 to 25
    times slower a call (a point map unpacked in 25 µs instead of 1.8 on an x86-64 test
    host); the point path itself leans on it little (README, Dependencies)."""
    import msgpack

    if not msgpack.Unpacker.__module__.endswith(".fallback"):
        return None
    return (
        "msgpack is running without its C extension (msgpack.fallback): what it packs "
        "and unpacks takes 10 to 25 times longer; install a msgpack wheel (pip) "
        "or python3-msgpack (apt), or unset MSGPACK_PUREPYTHON"
    )


def _relative(key: str, value: str) -> str:
    return (
        f'[gateway] {key} = "{value}" is relative: it is taken from the working directory '
        f"({os.getcwd()}), not from the config file's, so a command run from another "
        "directory (edgert status --config ...) looks elsewhere; give an absolute path"
    )


def spool_room(cfg: GatewayConfig) -> str | None:
    """A warning when `spool_max_bytes` is more than `data_dir`'s disk can hold."""
    try:
        st = os.statvfs(_nearest_existing(Path(cfg.data_dir)))
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


def _nearest_existing(path: Path) -> Path:
    """`path` if it exists, else its nearest parent that does (what it would be made in)."""
    p = path
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


def _writable(what: str, path: Path) -> list[Finding]:
    """`path` exists as a directory this user can write in, or can be made by this user.

    Tried, not guessed from permission bits: a directory is made and removed in
    `path` (or in the nearest parent that exists), so a read-only file system,
    /proc or /sys, and root's own limits all show as they would to `run`.
    """
    p = _nearest_existing(path)
    named = f'{what} = "{path}"'
    if p.exists() and not p.is_dir():
        return [Finding("error", f"{named}: {p} is not a directory")]
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".edgert-check-", dir=p))
    except OSError as e:
        verb = "write in" if p == path else "create a directory in"
        why = e.strerror or type(e).__name__
        return [
            Finding("error", f"{named}: this user (uid {os.getuid()}) cannot {verb} {p} ({why})")
        ]
    return []


def private_problem(rdir: Path) -> str | None:
    """Why the runtime directory is not safe to use, or None.

    It holds the sockets every process of the gateway connects to, so no other
    local user may own it or be able to rename in its parent. The parent may be
    root's when only its owner can rename in it (a sticky /tmp), never another
    user's. What does not exist yet is made by this user, and so passes.
    """
    uid = os.getuid()
    parent = rdir.parent
    try:
        st = os.stat(parent)
    except OSError:
        return None
    if st.st_uid not in (uid, 0):
        return (
            f"runtime directory parent {parent} is owned by uid {st.st_uid}, not by this "
            f"gateway's user (uid {uid}); remove it or set [gateway] runtime_dir"
        )
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        return (
            f"runtime directory parent {parent} is writable by other users "
            f"(mode {stat.S_IMODE(st.st_mode):o}); make it 0755 or 0700"
        )
    try:
        st = os.stat(rdir)
    except OSError:
        return None
    if st.st_uid != uid:
        return (
            f"runtime directory {rdir} is owned by uid {st.st_uid}, not by this gateway's "
            f"user (uid {uid}); remove it or set [gateway] runtime_dir"
        )
    return None


def _embedded_nats(cfg: GatewayConfig, check_port: bool) -> list[Finding]:
    from edgert.natsserver import find_nats_server

    out: list[Finding] = []
    try:
        find_nats_server()
    except FileNotFoundError as e:
        out.append(Finding("error", f"[nats] embedded = true: {e}"))
    try:
        busy = embedded_port_busy(cfg) if check_port else None
    except ValueError as e:
        return out + [Finding("error", str(e))]
    if busy:
        out.append(Finding("error", busy))
    return out


def embedded_address(cfg: GatewayConfig) -> tuple[str, int]:
    """Where the embedded nats-server listens: the first `[nats] url`'s host and port."""
    url = urlsplit(cfg.nats.urls[0])
    try:
        port = url.port or 4222
    except ValueError:
        raise ValueError(f"[nats] url: {cfg.nats.urls[0]!r} has a bad port") from None
    return url.hostname or "127.0.0.1", port


def embedded_port_busy(cfg: GatewayConfig) -> str | None:
    """One line saying why the embedded server cannot listen, naming what holds its
    port when this user can see it; None when the port is free (or no server is embedded).

    `check` reports it, and `run` refuses to start on it: restarting the server
    cannot free a port another program holds.
    """
    if not (cfg.nats.enabled and cfg.nats.embedded):
        return None
    host, port = embedded_address(cfg)
    why = _port_busy(host, port)
    if why is None:
        return None
    holder = port_holder(port)
    held = f" (held by {holder})" if holder else ""
    return (
        f"[nats] embedded = true: {host}:{port} ({cfg.nats.urls[0]}) {why}{held}: "
        "stop what listens there, or set embedded = false and point url at that server"
    )


def port_holder(port: int) -> str | None:
    """`pid N (name)` of a process listening on TCP `port`, when /proc shows it to this user."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            # local_address is HEX_IP:HEX_PORT; state 0A is LISTEN; field 9 is the inode
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{f[9]}]")
    if not inodes:
        return None
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            fds = list((pid_dir / "fd").iterdir())
        except OSError:
            continue  # another user's process, or gone
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    name = (pid_dir / "comm").read_text().strip()
                    return f"pid {pid_dir.name} ({name})"
            except OSError:
                continue
    return "a process of another user" if os.getuid() != 0 else None


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
