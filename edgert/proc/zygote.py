"""An owned zygote: a warm interpreter that forks actor processes on request.

The supervisor forks an actor itself only where that is safe (see
`Zygote(fork=True)` below: one thread, the modules of the config it runs).
Otherwise `Zygote.start()` starts `python -P` with a clean import path (the
supervisor's, without the working directory), which imports edgert and every
configured driver module once, runs a driver's publish path once on stand-in
sockets and a scratch ring file (`edgert.proc.rehearsal`: what Python writes
into the code and caches it runs for the first times is then shared, not
copied by every actor), freezes what it loaded out of the garbage collector's
reach (`gc.freeze()`, so children do not copy the pages they share with it),
returns the C heap's free pages (`malloc_trim`), and waits for requests on a
socket. A start is then a fork of that warm interpreter:
milliseconds, and shared pages. Its lifetime is the
supervisor's `run`: `close()` stops it, and it dies with the supervisor
(`PR_SET_PDEATHSIG`, and EOF on its socket). A reload that brings new driver
code starts a fresh one; the actors already running are not its children and
are not touched.

`Zygote(fork=True)` (what `edgert run` asks for its first zygote) makes the
supervisor its own zygote when it has a single thread (as under `edgert run`;
the supervisor itself starts none): it imports what is left to preload,
rehearses, freezes and trims as a zygote would, and each start is then a fork
of the supervisor. The actors share its pages (the interpreter, edgert,
pyzmq, the drivers, already imported to read the config), and no zygote
process keeps a copy of every page they all write (each process writes its
own copy of the pages it touches; a zygote kept the originals too: 2 MB of the
demo). The new actor closes every descriptor it inherited but stdio and its
link, restores the default signal handlers (the supervisor's are blocked
across the fork), drops the working directory from its import path and
freezes what it inherited out of its collector's reach. A process that has
started a thread since is not forked: its next start brings up a zygote of its
own, as does a reload with new driver code (the supervisor's modules are the
old ones): a new interpreter.

How children are owned (no PID reuse races, no orphans):

- the supervisor makes itself a child subreaper (`PR_SET_CHILD_SUBREAPER`);
- the supervisor that is its own zygote forks the actor: its own child;
- for each start a zygote process creates the actor with `clone(CLONE_PARENT)`
  (`edgert.proc.clone`): one process creation, and the new process is the
  supervisor's child from its first instruction;
- where that cannot be had (an ABI or C library it does not know, a kernel or
  seccomp policy that refuses it; `Zygote.method` says which and why), the
  zygote forks an intermediate process, which forks the actor and exits at
  once; the zygote reaps the intermediate and only then replies with the
  actor's pid. The orphaned actor has been re-parented to the nearest
  subreaper, the supervisor, before the reply is sent;
- every way, every actor is the supervisor's own child: nobody else can reap it, its
  pid cannot be reused before the supervisor reaps it, and `os.pidfd_open`
  on it is race-free. The supervisor waits on the pidfd and collects the exit
  status with `waitid(P_PIDFD)`, never blocking;
- the actor sets `PR_SET_PDEATHSIG(SIGKILL)` once its parent is the supervisor
  (see `edgert.proc.child`), so a SIGKILLed supervisor takes every actor with
  it at once, whatever the zygote is doing.

The protocol on the zygote's `SOCK_SEQPACKET` socket is msgpack: the zygote
says `["ready", {module: error}]` once preloaded; the supervisor sends
`["spawn", size]` with the child's end of its link and a memfd holding the
pickled ActorSpec attached (SCM_RIGHTS: a datagram holds ~200 kB, and a
driver's config can be megabytes, e.g. 500 Modbus devices of 30 registers)
and gets `["started", pid, method]` or `["error", text]`; the ready message
carries the method too (`"clone"`, or `"fork twice (reason)"`).
"""

from __future__ import annotations

import _signal
import ctypes
import errno
import gc
import importlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import traceback
from collections.abc import Iterable
from typing import Any

import msgpack

from .child import _libc, set_name, set_pdeathsig
from .clone import Cloner
from .rehearsal import rehearse

__all__ = [
    "Zygote",
    "ZygoteError",
    "PRELOAD",
    "clean_path",
    "fingerprint",
    "fixed_mmap_threshold",
]

PRELOAD = [
    "edgert",
    "edgert.actor",
    "edgert.bus",
    "edgert.logs",  # the child sets up its logging with it: not imported after each fork
    "edgert.proc.child",
    "zmq",
    "msgpack",
]
PR_SET_CHILD_SUBREAPER = 36
REFUSED = (errno.EPERM, errno.ENOSYS, errno.EINVAL)  # a clone refused by policy, not by load
MAX_MESSAGE = 1 << 20
BOOT = (
    "import sys, json; a = json.loads(sys.argv[1]); sys.path[:] = a['path']; "
    "from edgert.proc.zygote import serve; serve(a)"
)


class ZygoteError(Exception):
    """The zygote could not be started, or did not answer."""


def clean_path(
    path: Iterable[str] | None = None, cwd: str | None = None, pythonpath: str | None = None
) -> list[str]:
    """The import path for the zygote: this one without the working directory.

    The working directory stays only where PYTHONPATH names it explicitly (a driver
    under development, tested from its own folder); never by accident ('' or the
    entry `python -m`/`-c` adds)."""
    here = os.path.realpath(cwd or os.getcwd())
    if pythonpath is None:
        pythonpath = os.environ.get("PYTHONPATH", "")
    explicit = {os.path.realpath(p) for p in pythonpath.split(os.pathsep) if p}
    out = []
    for p in sys.path if path is None else path:
        if not p or p in out:
            continue
        real = os.path.realpath(p)
        if real != here or real in explicit:
            out.append(p)
    return out


def fingerprint(module: str) -> tuple[tuple[str, int, int], ...]:
    """The (file, mtime, size) of every source file of `module`'s top-level package.

    Changes when that package is upgraded or edited; empty when it is not found.
    """
    top = module.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return ()
    if spec is None:
        return ()
    files: list[str] = []
    if spec.submodule_search_locations:
        for base in spec.submodule_search_locations:
            for d, _, names in os.walk(base):
                files.extend(os.path.join(d, n) for n in names if n.endswith(".py"))
    elif spec.origin and os.path.isfile(spec.origin):
        files.append(spec.origin)
    out = []
    for f in sorted(files):
        try:
            st = os.stat(f)
        except OSError:
            continue
        out.append((f, st.st_mtime_ns, st.st_size))
    return tuple(out)


def make_subreaper() -> None:
    """Orphaned descendants of this process are re-parented to it (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise ZygoteError(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")


class Zygote:
    """The supervisor's handle on its zygote. Used only by the supervisor's loop."""

    def __init__(
        self,
        preload: Iterable[str],
        *,
        fork: bool = False,
        clone: bool = True,
        start_timeout: float = 60.0,
        spawn_timeout: float = 10.0,
    ) -> None:
        self.preload = list(dict.fromkeys([*PRELOAD, *preload]))
        self.fork = fork  # be this process when it is safe (see the module's doc)
        self.clone = clone  # create actors with clone(CLONE_PARENT) where it can
        self.method = ""  # how the running zygote creates actors ("clone", or why not)
        self.why = ""  # why the method changed last
        self.start_timeout = start_timeout  # preloading, on a slow device
        self.spawn_timeout = spawn_timeout  # a fork; a zygote this slow is replaced
        self.failed_imports: dict[str, str] = {}
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._here: list[str] | None = None  # this process is the zygote: the actors' path

    @property
    def forked(self) -> bool:
        """This process is the zygote: it forks the actors itself."""
        return self._here is not None

    @property
    def running(self) -> bool:
        return self._sock is not None or self._here is not None

    @property
    def pid(self) -> int | None:
        """The zygote's process; None while there is none, or when it is this process."""
        return self._proc.pid if self._proc is not None else None

    def fileno(self) -> int | None:
        """Readable when the zygote is gone (EOF); None when it is this process."""
        return self._sock.fileno() if self._sock is not None else None

    def start(self) -> None:
        """Start it and wait until it has preloaded; raise ZygoteError if it cannot."""
        if self.fork and _single_threaded():
            self.failed_imports = _prepare_here(self.preload)
            self._here = clean_path()
            self.method = "fork"
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        args = {
            "fd": theirs.fileno(),
            "supervisor": os.getpid(),
            "path": clean_path(),
            "preload": self.preload,
            "clone": self.clone,
        }
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-P", "-c", BOOT, json.dumps(args)],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        except OSError as e:
            ours.close()
            raise ZygoteError(f"could not start the zygote: {e}") from e
        finally:
            theirs.close()
        self._sock = ours
        kind, data, *rest = self._recv(self.start_timeout)
        if kind != "ready":
            self.close()
            raise ZygoteError(f"the zygote did not start: {data}")
        self.failed_imports = dict(data or {})
        self.method = rest[0] if rest else ""

    def spawn(self, spec_bytes: bytes, link_fd: int) -> int:
        """Fork an actor process that runs `spec_bytes` with `link_fd` as its link; its pid."""
        if self._here is not None:
            if _single_threaded():
                return _fork_here(spec_bytes, link_fd, self._here)
            # a thread started in this process since: forking it is no longer safe
            self._here, self.fork = None, False
            self.why = "this process has started a thread: a zygote process creates them"
            self.start()
        if self._sock is None:
            raise ZygoteError("the zygote is not running")
        spec_fd = os.memfd_create("edgert-spec", os.MFD_CLOEXEC)
        try:
            with open(spec_fd, "wb", closefd=False) as f:
                f.write(spec_bytes)
            msg = msgpack.packb(["spawn", len(spec_bytes)])
            socket.send_fds(self._sock, [msg], [link_fd, spec_fd])
        except OSError as e:
            self.close()
            raise ZygoteError(f"the zygote is gone: {e}") from e
        finally:
            os.close(spec_fd)
        kind, data, *rest = self._recv(self.spawn_timeout)
        if kind != "started":
            raise ZygoteError(f"the zygote could not fork: {data}")
        if rest and rest[0] != self.method:
            self.method, self.why = rest[0], "the kernel refused a clone"
        return int(data)

    def _recv(self, timeout: float) -> list[Any]:
        assert self._sock is not None
        self._sock.settimeout(timeout)
        try:
            data = self._sock.recv(MAX_MESSAGE)
        except OSError as e:  # the timeout included
            self.close()
            raise ZygoteError(f"the zygote did not answer: {e}") from e
        if not data:
            self.close()
            raise ZygoteError("the zygote exited")
        msg = msgpack.unpackb(data, raw=False)
        if not isinstance(msg, list) or len(msg) < 2:
            self.close()
            raise ZygoteError(f"the zygote said {msg!r}")
        return msg

    def close(self) -> None:
        """Stop the zygote (EOF on its socket) and reap it. Idempotent."""
        self._here = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.wait(2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def trim() -> None:
    """Give the C heap's free pages back to the system (glibc), so a fork shares fewer."""
    try:
        _libc().malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def fixed_mmap_threshold(size: int = 128 * 1024) -> None:
    """glibc: blocks of `size` bytes and more get mappings of their own, unmapped when
    freed, and free memory past `size` at the heap's top is given back. Left to itself
    glibc raises the threshold to the largest such block freed, and from then on
    keeps blocks that size in the heap, where they stay when freed (the bridge's heap
    held 0.16 MB more at idle). No-op without glibc."""
    try:
        libc = _libc()
        libc.mallopt(M_MMAP_THRESHOLD, size)
        libc.mallopt(M_TRIM_THRESHOLD, size)
    except (OSError, AttributeError):
        pass


def _single_threaded() -> bool:
    """This process has one thread (a fork of it copies no lock another thread holds)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _prepare_here(preload: Iterable[str]) -> dict[str, str]:
    """Make this process the zygote (see the module's doc); the modules that failed."""
    _libc().prctl  # noqa: B018 - set_name's and set_pdeathsig's function, made once
    return _warm(preload)


def _warm(preload: Iterable[str]) -> dict[str, str]:
    """What every actor would do first, done once before the forks so that what it makes
    is shared (every page an actor writes after its fork costs a copy): import what is
    not imported yet, rehearse a driver's first run, freeze what is made out of the
    collector's reach and trim the C heap. {module: error} of the imports that failed."""
    failed = _preload(preload)
    rehearse()  # a driver's first run, so that what it writes is shared (see there)
    gc.collect()
    gc.freeze()  # the collector would write into every page we share
    trim()
    return failed


def _preload(preload: Iterable[str]) -> dict[str, str]:
    """Import what is not imported yet; {module: error} of those that failed."""
    failed: dict[str, str] = {}
    for mod in preload:
        if mod in sys.modules:  # imported to read the config: nothing to do
            continue
        try:
            importlib.import_module(mod)
        except BaseException as e:  # noqa: BLE001 - reported; the actor's start shows it too
            failed[mod] = "".join(traceback.format_exception_only(e)).strip()
    return failed


def _close_all_but(keep: int) -> None:
    """Close every descriptor this process has open but stdio and `keep`: those listed in
    /proc/self/fd (a range up to the open files' limit costs a close() per number where
    the kernel or the C library lacks close_range, and a container's limit may be 2**30)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: the whole range
        os.closerange(3, keep)
        os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
        return
    for fd in fds:
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:  # the listing's own descriptor, closed once it was read
                pass


# signals this process may handle, blocked across the fork: the actor resets them first
FORK_BLOCKED = {signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT}


def _fork_here(spec_bytes: bytes, link_fd: int, path: list[str]) -> int:
    """Fork this single-threaded process into the actor of `spec_bytes`; its pid."""
    for stream in (sys.stdout, sys.stderr):  # or both would write what is buffered
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    me = os.getpid()
    old = _signal.pthread_sigmask(_signal.SIG_BLOCK, FORK_BLOCKED)
    try:
        pid = os.fork()
        if pid == 0:  # the actor
            try:
                _close_all_but(link_fd)  # this process's descriptors are not the actor's
                for sig in FORK_BLOCKED:  # `signal.signal` converts to and from enums
                    _signal.signal(sig, _signal.SIG_DFL)
                # a terminal's ^C is for the supervisor (a pending one included)
                _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
                # born with SIGTERM blocked, as from the zygote (see `edgert.proc.child`)
                _signal.pthread_sigmask(_signal.SIG_SETMASK, old | {_signal.SIGTERM})
                sys.path[:] = path
                gc.freeze()  # what it shares stays out of its own collector's reach
                from .child import main

                main(spec_bytes, link_fd, me, 0)
            finally:
                os._exit(1)
        return pid
    finally:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, old)


# -- the zygote process --------------------------------------------------------------
def serve(args: dict[str, Any]) -> None:
    """The zygote's main: preload, then fork on request until EOF. Runs in the zygote."""
    set_pdeathsig()
    supervisor = int(args["supervisor"])
    if os.getppid() != supervisor:
        os._exit(1)
    set_name("edgert-zygote")
    _signal.signal(signal.SIGINT, _signal.SIG_IGN)
    sock = socket.socket(fileno=int(args["fd"]))
    failed = _warm(args["preload"])
    cloner, why = Cloner.probe() if args.get("clone", True) else (None, "not asked to clone")
    term = {_signal.SIGTERM}
    method = "clone" if cloner is not None else f"fork twice ({why})"
    sock.sendall(msgpack.packb(["ready", failed, method]))
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 2)
        except InterruptedError:
            continue
        if not data:
            os._exit(0)
        try:
            kind, size = msgpack.unpackb(data, raw=False)
            if kind != "spawn" or len(fds) != 2:
                raise ValueError(f"bad request {kind!r} with {len(fds)} fds")
            spec_bytes = os.pread(fds[1], size, 0)  # the offset is the writer's: read at 0
            os.close(fds.pop())  # before the fork: no actor keeps the spec's memfd open
            if len(spec_bytes) != size:
                raise ValueError(f"the spec has {len(spec_bytes)} of its {size} bytes")
            pid = 0
            # the actor starts with SIGTERM blocked: one that comes before it can stop
            # its actor waits for it (see `edgert.proc.child`) instead of killing it
            old = _signal.pthread_sigmask(_signal.SIG_BLOCK, term)
            try:
                if cloner is not None:
                    try:
                        pid = _spawn(sock, spec_bytes, fds[0], supervisor, cloner)
                    except OSError as e:
                        if e.errno not in REFUSED:
                            raise
                        cloner, method = None, f"fork twice ({e})"  # from now on
                if not pid:
                    pid = _fork_twice(sock, spec_bytes, fds[0], supervisor)
            finally:
                _signal.pthread_sigmask(_signal.SIG_SETMASK, old)
            reply = ["started", pid, method]
        except Exception as e:  # noqa: BLE001 - the supervisor gets the reason
            reply = ["error", f"{type(e).__name__}: {e}"]
        finally:
            for fd in fds:
                os.close(fd)
        sock.sendall(msgpack.packb(reply))


def _spawn(
    sock: socket.socket, spec_bytes: bytes, link_fd: int, supervisor: int, cloner: Cloner
) -> int:
    """Create the actor's process as the supervisor's child in one step (see `clone`)."""
    pid = cloner.fork()
    if pid == 0:  # the actor
        try:
            sock.close()
            from .child import main

            main(spec_bytes, link_fd, supervisor, 0)
        finally:
            os._exit(1)
    return pid


def _fork_twice(sock: socket.socket, spec_bytes: bytes, link_fd: int, supervisor: int) -> int:
    """The fallback: fork an intermediate that forks the actor and exits, so the actor
    is re-parented to the supervisor (its child subreaper) before its pid is told."""
    r, w = os.pipe()
    mid = os.fork()
    if mid == 0:  # the intermediate: fork the actor, say its pid, exit
        try:
            os.close(r)
            me = os.getpid()
            pid = os.fork()
            if pid == 0:
                os.close(w)
                sock.close()
                from .child import main

                main(spec_bytes, link_fd, supervisor, me)
            os.write(w, pid.to_bytes(4, "little"))
        finally:
            os._exit(0)
    os.close(w)
    try:
        data = os.read(r, 4)
    finally:
        os.close(r)
        os.waitpid(mid, 0)  # after this the actor is the supervisor's child
    if len(data) != 4:
        raise OSError("the intermediate process died before forking")
    return int.from_bytes(data, "little")
