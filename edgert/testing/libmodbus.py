"""libmodbus as an independent Modbus peer: a small C server and client, built on demand.

`build(directory)` compiles `libmodbus_peer.c` (next to this module) against
the system's libmodbus (Debian: `apt-get install libmodbus-dev`) and returns
the binary's path, or raises `Unavailable` saying what is missing.

`libmodbus_server(binary, "tcp" | "rtu")` runs its server for the block and
yields a `CServer`: the driver connects to 127.0.0.1:`tcp_port`, or opens
`port`, one end of a pty pair whose other end libmodbus holds (a relay
process copies the bytes between them, as a null-modem cable would). The
server prints each request and what every write left in its memory;
`CServer.wait(prefix)` reads those lines. `libmodbus_client(binary, ...)` runs
the client on a list of commands and returns one result line per command.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgert_drivers.modbus.sim import raw_pty

__all__ = ["Unavailable", "build", "CServer", "libmodbus_server", "libmodbus_client"]

SOURCE = Path(__file__).with_name("libmodbus_peer.c")


class Unavailable(Exception):
    """No C compiler or no libmodbus development files on this machine."""


def build(directory: Path) -> Path:
    """Compile the peer into `directory` (once); its path."""
    binary = directory / "libmodbus_peer"
    if binary.exists():
        return binary
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise Unavailable("no C compiler (gcc)")
    flags = ["-I/usr/include/modbus", "-lmodbus"]
    if shutil.which("pkg-config"):
        got = subprocess.run(
            ["pkg-config", "--cflags", "--libs", "libmodbus"], capture_output=True, text=True
        )
        if got.returncode != 0:
            raise Unavailable("libmodbus is not installed (apt-get install libmodbus-dev)")
        flags = got.stdout.split()
    elif not Path("/usr/include/modbus/modbus.h").exists():
        raise Unavailable("libmodbus is not installed (apt-get install libmodbus-dev)")
    out = subprocess.run(
        [cc, "-O1", "-o", str(binary), str(SOURCE), *flags], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise Unavailable(f"building the libmodbus peer failed: {out.stderr.strip()[-500:]}")
    return binary


class CServer:
    """The test's handle on the running C server: its address and its output lines."""

    def __init__(self, proc: subprocess.Popen[str], port: str, tcp_port: int) -> None:
        self.proc = proc
        self.port = port
        self.tcp_port = tcp_port
        self.lines: list[str] = []
        self._buf = ""

    def _pump(self, timeout: float) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        if select.select([fd], [], [], max(timeout, 0))[0]:
            data = os.read(fd, 65536).decode()
            if not data:
                raise RuntimeError(f"the libmodbus server exited ({self.proc.poll()})")
            self._buf += data
            *done, self._buf = self._buf.split("\n")
            self.lines += done

    def wait(self, prefix: str, timeout: float = 10.0, start: int = 0) -> str:
        """The first output line from index `start` on that begins with `prefix`."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[start:]:
                if line.startswith(prefix):
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line {prefix!r} from the libmodbus server in {timeout:g} s")
            self._pump(left)

    def drain(self) -> list[str]:
        """Every line printed so far."""
        while True:
            n = len(self.lines) + len(self._buf)
            self._pump(0.05)
            if len(self.lines) + len(self._buf) == n:
                return self.lines


@contextlib.contextmanager
def libmodbus_server(binary: Path, transport: str, unit: int = 1) -> Iterator[CServer]:
    """The C server for the block (see the module's doc)."""
    with contextlib.ExitStack() as stack:
        port, tcp_port = "", 0
        if transport == "tcp":
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                tcp_port = s.getsockname()[1]
            args = ["server", "tcp", str(tcp_port)]
        else:
            port, theirs = stack.enter_context(pty_cable())
            args = ["server", "rtu", theirs, str(unit)]
        proc = stack.enter_context(
            subprocess.Popen([str(binary), *args], stdout=subprocess.PIPE, text=True)
        )
        stack.callback(_end, proc)
        server = CServer(proc, port, tcp_port)
        server.wait("ready", 10)
        yield server


def _end(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def libmodbus_client(binary: Path, where: list[str], unit: int, *commands: str) -> list[str]:
    """Run the C client against `where` (["tcp", host, port] or ["rtu", device]);
    one result line per command ("ok ..." or "err ...")."""
    out = subprocess.run(
        [str(binary), "client", *where, str(unit), *commands],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        raise RuntimeError(f"libmodbus client failed: {out.stderr.strip()}")
    return out.stdout.splitlines()


# -- a null-modem cable between two ptys, in its own process ---------------------------


@contextlib.contextmanager
def pty_cable() -> Iterator[tuple[str, str]]:
    """Two pty paths joined like a null-modem cable, for the block: (ours, theirs)."""
    mp = multiprocessing.get_context("spawn")
    ours, theirs = mp.Pipe()
    proc = mp.Process(target=_cable, args=(theirs,), daemon=True)
    proc.start()
    theirs.close()
    try:
        if not ours.poll(20):
            raise RuntimeError("the pty cable did not start")
        yield ours.recv()
    finally:
        ours.close()  # the cable ends when its pipe does
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()


def _cable(conn: Any) -> None:
    a, a_slave = raw_pty()
    b, b_slave = raw_pty()
    conn.send((os.ttyname(a_slave), os.ttyname(b_slave)))
    poll = select.poll()
    for fd in (a, b, conn.fileno()):
        poll.register(fd, select.POLLIN)
    peer = {a: b, b: a}
    while True:
        for fd, _ev in poll.poll():
            if fd == conn.fileno():
                return
            try:
                data = os.read(fd, 4096)
            except (BlockingIOError, OSError):
                time.sleep(0.005)  # EIO: the other side is not open yet
                continue
            with contextlib.suppress(OSError):
                os.write(peer[fd], data)
