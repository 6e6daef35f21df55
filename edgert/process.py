"""Running one actor in its own OS process: start, watch, signal, reap.

Children start from multiprocessing's forkserver, which preloads edgert and the
drivers once, so a start is a fork of a warm interpreter (milliseconds, shared
pages) and the supervisor, which holds a ZeroMQ context and threads, never forks
itself. Each child:

- sets `PR_SET_PDEATHSIG(SIGKILL)`; its parent is the forkserver, which exits as
  soon as the supervisor's process is gone, so a child dies within a moment of a
  SIGKILLed supervisor even when the actor hangs. It also checks its parent is
  still there after setting it (the signal never fires for a parent that already died);
- leads its own process group, so the driver's own subprocesses are killed with it;
- talks to the supervisor over a duplex pipe (the *link*) in msgpack: it sends
  `running`, heartbeats with its figures, and `exit` with the traceback of an
  error; it receives `stop` and `status`. EOF on the link means the supervisor
  is gone, and the actor is stopped;
- creates its own ZeroMQ context (never inherited) when the actor uses the bus.

`ActorProcess` is the supervisor's handle: signals go through a pidfd (no PID
reuse races) and the process group; exit codes come from multiprocessing.
"""

from __future__ import annotations

import ctypes
import io
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from multiprocessing import context, forkserver, popen_forkserver, reduction, spawn, util
from typing import Any

import msgpack

__all__ = ["ActorSpec", "ActorProcess", "encode_link", "decode_link", "mp_context"]

log = logging.getLogger("edgert.process")

PR_SET_PDEATHSIG = 1
PRELOAD = ["edgert", "edgert.actor", "edgert.bus", "edgert.process", "zmq", "msgpack"]


def encode_link(kind: str, data: Any = None) -> bytes:
    return msgpack.packb([kind, data], use_bin_type=True)


def decode_link(data: bytes) -> list[Any]:
    msg = msgpack.unpackb(data, raw=False)
    if not isinstance(msg, list) or len(msg) != 2 or not isinstance(msg[0], str):
        raise ValueError("malformed link message")
    return msg


def mp_context(extra_preload: list[str] = ()) -> mp.context.BaseContext:  # type: ignore[assignment]
    """The forkserver context, preloading edgert and the given driver modules."""
    ctx = mp.get_context("forkserver")
    mods = PRELOAD + [m for m in extra_preload if m not in PRELOAD]
    ctx.set_forkserver_preload(mods + ["edgert._forkserver_ready"])
    return ctx


class _Popen(popen_forkserver.Popen):
    """Forkserver start that does not re-run the parent's `__main__` in the child.

    multiprocessing re-imports the parent's main script in every child (for
    functions defined there). An actor's class is always importable by its
    module name, so that import is pure cost: under `edgert` it pulls the CLI and
    click into every driver, under pytest the whole of pytest. This is the
    stdlib's `_launch` with the main-module entries left out of the preparation data.
    """

    def _launch(self, process_obj: Any) -> None:
        prep_data = spawn.get_preparation_data(process_obj._name)
        prep_data.pop("init_main_from_path", None)
        prep_data.pop("init_main_from_name", None)
        buf = io.BytesIO()
        context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            context.set_spawning_popen(None)
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)
        _parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, util.close_fds, (_parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _ActorProcessObj(context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> _Popen:  # noqa: N802 - the stdlib's name
        return _Popen(process_obj)


@dataclass
class ActorSpec:
    """What a child process needs to build and run its actor."""

    name: str
    cls: type
    config: Any
    runtime_dir: str
    heartbeat_interval: float = 1.0
    outbox_max_points: int = 100_000
    drain_timeout: float = 2.0
    log_level: int = logging.INFO


def set_pdeathsig() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the link's EOF still stops the actor
        pass


def _child_main(spec: ActorSpec, link: mp.connection.Connection, parent_pid: int) -> None:
    """Entry point of every actor process (runs in the child)."""
    set_pdeathsig()
    if os.getppid() != parent_pid:  # the forkserver died before PDEATHSIG was set
        os._exit(1)
    _drop_forkserver_alive_fd()
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C goes to the supervisor
    logging.basicConfig(
        level=spec.log_level,
        format=f"%(asctime)s %(levelname)s {spec.name}[%(process)d] %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    code = 0
    try:
        _run_actor(spec, link)
        _send(link, "exit", None)
    except BaseException as e:  # noqa: BLE001 - every failure is reported to the supervisor
        code = 1
        text = "".join(traceback.format_exception(e)).rstrip()
        logging.getLogger(f"edgert.actor.{spec.name}").error("failed: %s", text)
        _send(link, "exit", text)
    finally:
        link.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _drop_forkserver_alive_fd() -> None:
    """Close the copy of the supervisor's end of the forkserver's alive pipe.

    multiprocessing hands every forkserver child that write end (so a child could
    start processes of its own). While any child holds it, the forkserver never
    sees EOF when the supervisor dies, never exits, and PDEATHSIG never fires.
    Actors do not start processes through multiprocessing, so they let it go.
    """
    fs = forkserver._forkserver  # type: ignore[attr-defined]
    fd = getattr(fs, "_forkserver_alive_fd", None)
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
        fs._forkserver_alive_fd = None


def _send(link: mp.connection.Connection, kind: str, data: Any) -> None:
    try:
        link.send_bytes(encode_link(kind, data))
    except OSError:
        pass


def _run_actor(spec: ActorSpec, link: mp.connection.Connection) -> None:
    from .bus import Outbox, bus_endpoint, new_epoch
    from .context import Context

    actor = spec.cls(spec.config, name=spec.name)
    signal.signal(signal.SIGTERM, lambda *_: actor.stop())
    zctx = sock = outbox = None
    if getattr(actor, "uses_bus", True):
        import zmq

        zctx = zmq.Context(1)
        sock = zctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, spec.name.encode())
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, 20)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        sock.connect(bus_endpoint(spec.runtime_dir))
        outbox = Outbox(sock, new_epoch(spec.name), max_points=spec.outbox_max_points)
    ctx = Context(
        actor,
        name=spec.name,
        config=spec.config,
        outbox=outbox,
        link=link,
        heartbeat_interval=spec.heartbeat_interval,
    )
    try:
        _send(link, "running", time.monotonic())
        actor.run(ctx)
        if outbox is not None and spec.drain_timeout > 0 and not outbox.drain(spec.drain_timeout):
            ctx.log.warning(
                "stopped with %d points not acknowledged by the bridge", outbox.stats()["buffered"]
            )
    finally:
        ctx._close()
        if sock is not None:
            sock.close(0)
        if zctx is not None:
            zctx.term()


class ActorProcess:
    """The supervisor's handle on one running actor process."""

    def __init__(self, mpctx: Any, spec: ActorSpec) -> None:
        self.spec = spec
        self.link, child_link = mpctx.Pipe(duplex=True)
        self.proc = _ActorProcessObj(
            target=_child_main,
            args=(spec, child_link, _forkserver_pid()),
            name=f"edgert:{spec.name}",
            daemon=False,
        )
        self._child_link = child_link
        self.pid: int = 0
        self.pidfd: int = -1
        self.exit_error: str | None = None
        self.exitcode: int | None = None

    def start(self) -> None:
        self.proc.start()
        self._child_link.close()
        self.pid = self.proc.pid or 0
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except (OSError, AttributeError):
            self.pidfd = -1

    @property
    def sentinel(self) -> int:
        return self.proc.sentinel

    def messages(self) -> list[list[Any]]:
        """Every link message waiting now (non-blocking). EOF yields nothing."""
        out: list[list[Any]] = []
        try:
            while self.link.poll():
                try:
                    out.append(decode_link(self.link.recv_bytes()))
                except ValueError:
                    log.warning("%s: malformed message on the link", self.spec.name)
        except (EOFError, OSError):
            pass
        return out

    def send(self, kind: str, data: Any = None) -> bool:
        try:
            self.link.send_bytes(encode_link(kind, data))
            return True
        except (OSError, ValueError):
            return False

    def alive(self) -> bool:
        return self.proc.exitcode is None and self.proc.is_alive()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the actor's whole process group (its own subprocesses too)."""
        if self.exitcode is not None:
            return
        try:
            if self.pidfd >= 0:
                signal.pidfd_send_signal(self.pidfd, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            return
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def reap(self) -> int:
        """After the sentinel fired: collect the exit code and the error, close handles."""
        for kind, data in self.messages():
            if kind == "exit" and data:
                self.exit_error = data
        self.proc.join(5)
        code = self.proc.exitcode
        self.exitcode = -1 if code is None else code
        try:  # the group may hold the driver's own subprocesses still
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.close()
        return self.exitcode

    def close(self) -> None:
        self.link.close()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        try:
            self.proc.close()
        except ValueError:
            pass


def _forkserver_pid() -> int:
    forkserver.ensure_running()
    return forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
