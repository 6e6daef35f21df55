"""A simulated GPIO chip that other processes drive, and the backend that requests its lines.

A simulated chip is a directory: `sim:NAME` is `<base>/NAME`, where `<base>`
is `$EDGERT_GPIO_SIM_DIR`, else `$XDG_RUNTIME_DIR/edgert-gpio-sim`, else
`/tmp/edgert-gpio-sim-<uid>`; `sim:/some/dir` names the directory itself. In it:

    chip               "lines N": how many lines the chip has
    levels             N bytes, b"0" or b"1": each line's physical level
    lock               flock held while `levels` changes and events go out
    line-<offset>      flock held by the request that holds the line (its
                       direction, pid and consumer written inside)
    events-<pid>-<id>.sock
                       a request's datagram socket: edge events come in here

`SimChip` is the outside world (a test, `edgert sim gpio`): it creates the
chip, sets the levels of lines that no request drives as outputs, reads every
level, and lists who holds which line. Each change of level goes, as one
datagram "offset level time_ns" per changed line, to every request's socket
(a stale socket of a process that died is removed on the way).

`SimBackend` requests lines the way the kernel does: exclusively (a line held by
another live request is EBUSY; the flock dies with its process, so a driver
killed with SIGKILL and restarted gets its lines back), with logical values
(`active_low`), edge events on a pollable fd (the socket), filtered by `edge`
and debounced like the kernel's software debouncer: a line reports a new value
once it has held it for `debounce` seconds, stamped at that moment.
`bias` is recorded but does not move levels.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .backend import EdgeEvent, LineRequest, LineSettings

__all__ = ["Holder", "SimBackend", "SimChip", "SimChipError", "SimRequest", "chip_dir", "base_dir"]

ENV_DIR = "EDGERT_GPIO_SIM_DIR"
MAX_LINES = 4096
SEND_TIMEOUT = 2.0  # seconds a set waits for a request whose socket queue is full


class SimChipError(Exception):
    """A simulated chip that does not exist, or a change it refuses."""


def _pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (its flocks are gone with it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # gone, or caught mid-exit with an empty stat
        return False


def base_dir() -> Path:
    """Where `sim:NAME` chips live."""
    if d := os.environ.get(ENV_DIR):
        return Path(d)
    if d := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(d) / "edgert-gpio-sim"
    return Path(f"/tmp/edgert-gpio-sim-{os.getuid()}")


def chip_dir(name: str) -> Path:
    """The directory of simulated chip `name` (a name under `base_dir()`, or an absolute path)."""
    return Path(name) if name.startswith("/") else base_dir() / name


@dataclass(frozen=True)
class Holder:
    """Who holds a line: a live request's direction, process and consumer label."""

    direction: str
    pid: int
    consumer: str


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class SimChip:
    """A simulated chip seen from outside: create it, drive its inputs, read its levels."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @classmethod
    def named(cls, name: str) -> SimChip:
        """The chip `sim:NAME` names (NAME without the "sim:")."""
        return cls(chip_dir(name.removeprefix("sim:")))

    @classmethod
    def create(cls, path: str | os.PathLike[str], lines: int) -> SimChip:
        """Make a chip with `lines` lines, all low; an existing chip of that size is kept."""
        if not 1 <= lines <= MAX_LINES:
            raise SimChipError(f"a chip has 1 to {MAX_LINES} lines, not {lines}")
        chip = cls(path)
        chip.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _locked(chip.path / "lock"):
            if (chip.path / "chip").exists():
                if chip.lines != lines:
                    raise SimChipError(f"{chip.path} exists with {chip.lines} lines, not {lines}")
                return chip
            tmp = chip.path / "levels.tmp"
            tmp.write_bytes(b"0" * lines)
            tmp.rename(chip.path / "levels")
            (chip.path / "chip").write_text(f"lines {lines}\n")
        return chip

    def exists(self) -> bool:
        return (self.path / "chip").is_file() and (self.path / "levels").is_file()

    def _check(self) -> None:
        if not self.exists():
            raise SimChipError(
                f"no simulated GPIO chip at {self.path} (create one: edgert sim gpio NAME create)"
            )

    @property
    def lines(self) -> int:
        self._check()
        text = (self.path / "chip").read_text().split()
        if len(text) != 2 or text[0] != "lines" or not text[1].isdigit():
            raise SimChipError(f"{self.path / 'chip'}: not a simulated chip description")
        return int(text[1])

    def levels(self) -> list[bool]:
        """The physical level of every line, by offset."""
        self._check()
        return [b == ord("1") for b in (self.path / "levels").read_bytes()]

    def holders(self) -> dict[int, Holder]:
        """The lines held by live requests."""
        out: dict[int, Holder] = {}
        for p in self.path.glob("line-*"):
            try:
                off = int(p.name[5:])
                direction, pid, consumer = p.read_text().split(" ", 2)
            except (ValueError, OSError):
                continue
            if _pid_alive(int(pid)):
                out[off] = Holder(direction, int(pid), consumer.strip())
        return out

    def set(self, values: Mapping[int, bool | int]) -> int:
        """Set physical levels of lines no live request drives as outputs.

        Sends the changes to every request as edge material; returns how many
        lines changed. Raises SimChipError for a bad offset or an output line.
        """
        n = self.lines
        for off in values:
            if not 0 <= off < n:
                raise SimChipError(f"{self.path}: no line {off} (the chip has lines 0..{n - 1})")
        held = self.holders()
        for off in values:
            h = held.get(off)
            if h is not None and h.direction == "output":
                raise SimChipError(
                    f"line {off} is an output of {h.consumer!r} (pid {h.pid}); its level is theirs"
                )
        with _locked(self.path / "lock"):
            changed = _write_levels(self.path, {o: bool(v) for o, v in values.items()})
            if changed:
                _send_events(self.path, changed)
        return len(changed)

    def remove(self) -> None:
        """Delete the chip's directory (its requests keep their open files until they close)."""
        for p in self.path.iterdir():
            with contextlib.suppress(OSError):
                p.unlink()
        with contextlib.suppress(OSError):
            self.path.rmdir()


def _write_levels(path: Path, values: Mapping[int, bool]) -> list[tuple[int, bool, int]]:
    """Write levels (the caller holds the lock); the changes as (offset, level, time_ns)."""
    fd = os.open(path / "levels", os.O_RDWR)
    try:
        now = time.time_ns()
        changed = []
        for off, level in values.items():
            old = os.pread(fd, 1, off) == b"1"
            if old != level:
                os.pwrite(fd, b"1" if level else b"0", off)
                changed.append((off, level, now))
        return changed
    finally:
        os.close(fd)


def _send_events(path: Path, changes: list[tuple[int, bool, int]]) -> None:
    data = "".join(f"{o} {int(v)} {t}\n" for o, v, t in changes).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.settimeout(SEND_TIMEOUT)
        for sock in path.glob("events-*.sock"):
            try:
                s.sendto(data, str(sock))
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    sock.unlink()  # its process died without closing it
            except TimeoutError as e:
                raise SimChipError(f"{sock.name}: its requester reads no events") from e


class SimBackend:
    """Requests lines of a simulated chip, as the kernel would of a real one."""

    def __init__(self, name: str) -> None:
        self.chip = f"sim:{name}"
        self.path = chip_dir(name)

    def request(self, consumer: str, settings: Mapping[int, LineSettings]) -> SimRequest:
        chip = SimChip(self.path)
        if not chip.exists():
            raise OSError(
                errno.ENOENT,
                f"no simulated GPIO chip {self.chip} at {self.path}"
                f" (create it: edgert sim gpio {self.path} create --lines N)",
            )
        n = chip.lines
        for off in settings:
            if not 0 <= off < n:
                raise OSError(errno.EINVAL, f"{self.chip} has lines 0..{n - 1}, not {off}")
        return SimRequest(self.path, consumer, dict(settings))


@dataclass
class _Input:
    settings: LineSettings
    raw: bool  # physical level, as the events told
    value: bool  # debounced logical value
    settle_at: float | None = None  # monotonic; when a pending change is reported
    changed_ns: int = 0  # when the raw level last changed


class SimRequest(LineRequest):
    """Lines held on a simulated chip; see the module's description."""

    def __init__(self, path: Path, consumer: str, settings: dict[int, LineSettings]) -> None:
        self.path = path
        self._settings = settings
        self._inputs: dict[int, _Input] = {}
        self._ready: list[EdgeEvent] = []
        self._closed = False
        with contextlib.ExitStack() as undo:
            self._line_fds = self._hold_lines(consumer, undo)
            self._sock_path = path / f"events-{os.getpid()}-{os.urandom(4).hex()}.sock"
            if len(os.fsencode(self._sock_path)) > 107:
                raise OSError(errno.ENAMETOOLONG, f"{self._sock_path}: too long for a socket")
            self._sock = undo.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
            self._sock.setblocking(False)
            with _locked(path / "lock"):
                self._sock.bind(str(self._sock_path))
                undo.callback(self._unlink_socket)
                levels = SimChip(path).levels()
                outputs = {
                    o: s.initial != s.active_low
                    for o, s in settings.items()
                    if s.direction == "output"
                }
                _write_levels(path, outputs)
            for o, s in settings.items():
                if s.direction == "input":
                    self._inputs[o] = _Input(s, levels[o], levels[o] != s.active_low)
            undo.pop_all()

    def _hold_lines(self, consumer: str, undo: contextlib.ExitStack) -> list[int]:
        fds = []
        for off, s in sorted(self._settings.items()):
            fd = os.open(self.path / f"line-{off}", os.O_RDWR | os.O_CREAT, 0o600)
            undo.callback(os.close, fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                who = os.pread(fd, 200, 0).decode(errors="replace").strip()
                raise OSError(
                    errno.EBUSY, f"line {off} of {self.path} is busy (held: {who or '?'})"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{s.direction} {os.getpid()} {consumer}\n".encode(), 0)
            fds.append(fd)
        return fds

    def _unlink_socket(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._sock_path)

    # -- LineRequest ----------------------------------------------------------------
    def fileno(self) -> int:
        return self._sock.fileno()

    def read_events(self) -> list[EdgeEvent]:
        self._drain()
        out, self._ready = self._ready, []
        return out

    def deadline(self) -> float | None:
        return min((i.settle_at for i in self._inputs.values() if i.settle_at), default=None)

    def get(self, offsets: Iterable[int]) -> dict[int, bool]:
        self._drain()
        offs = list(offsets)
        levels = SimChip(self.path).levels()
        out = {}
        for o in offs:
            s = self._settings[o]
            inp = self._inputs.get(o)
            if inp is not None and s.debounce > 0:
                out[o] = inp.value
            else:
                out[o] = levels[o] != s.active_low
        return out

    def set(self, values: Mapping[int, bool]) -> None:
        for o in values:
            if self._settings.get(o, LineSettings()).direction != "output":
                raise ValueError(f"line {o} is not requested as an output")
        with _locked(self.path / "lock"):
            _write_levels(
                self.path, {o: v != self._settings[o].active_low for o, v in values.items()}
            )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._unlink_socket()
        self._sock.close()
        for fd in self._line_fds:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # releases the line's flock

    # -- events and debouncing -------------------------------------------------------
    def _drain(self) -> None:
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                break
            for rec in data.decode(errors="replace").splitlines():
                try:
                    off_s, level_s, t_s = rec.split()
                    off, level, t_ns = int(off_s), level_s == "1", int(t_s)
                except ValueError:
                    continue
                inp = self._inputs.get(off)
                if inp is not None and level != inp.raw:
                    inp.raw = level
                    inp.changed_ns = t_ns
                    if inp.settings.debounce > 0:
                        inp.settle_at = time.monotonic() + inp.settings.debounce
                    else:
                        self._report(off, inp, t_ns)
        now = time.monotonic()
        for off, inp in self._inputs.items():
            if inp.settle_at is not None and inp.settle_at <= now:
                inp.settle_at = None
                self._report(off, inp, inp.changed_ns + int(inp.settings.debounce * 1e9))

    def _report(self, off: int, inp: _Input, t_ns: int) -> None:
        value = inp.raw != inp.settings.active_low
        if value == inp.value:
            return
        inp.value = value
        edge = inp.settings.edge
        if edge == "both" or (edge == "rising" and value) or (edge == "falling" and not value):
            self._ready.append(EdgeEvent(off, value, t_ns))
