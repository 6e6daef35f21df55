"""The main of every actor process, from its fork to `os._exit`.

The child is the supervisor's own child: a fork of the supervisor when it is
its own zygote (`edgert run`), or created by a zygote process with
`clone(CLONE_PARENT)`, or by forking an intermediate process that forks the
child and exits at once, so the child is re-parented to the supervisor (a
child subreaper, see `edgert.proc.zygote`). The child then:

- waits until its parent is the supervisor (after the intermediate's exit; at
  once after a clone), sets `PR_SET_PDEATHSIG(SIGKILL)` and checks its parent
  again (the signal never fires for a parent that died before the call), so it
  dies with the supervisor even when its actor hangs;
- leads its own process group, so the driver's own subprocesses die with it;
- ignores SIGINT (a terminal's ^C is for the supervisor) and stops its actor
  on SIGTERM (the zygote creates it with SIGTERM blocked, unblocked once the
  actor exists: a SIGTERM to the whole process group that reaches it before
  then stops the actor as the supervisor's stop would, it does not kill it);
- unpickles its `ActorSpec`, creates its own ZeroMQ context (never inherited),
  opens its outbox's ring file (`edgert.bus.ring`: what a previous process of
  the actor left unacknowledged is sent first), builds the actor's Context and
  runs the actor, telling the supervisor over the link `running`, heartbeats,
  and `exit` with the traceback of an error. EOF on the link means the
  supervisor is gone, and the actor is stopped.
- after a clean stop it waits for the bridge to acknowledge what it holds
  (`drain_timeout`) and deletes its ring file when all was; what the bridge
  did not acknowledge stays in the file, as after an exception or a SIGKILL,
  so the next process of the actor sends it (without a ring, it is reported
  as lost).

A child asked to run a program (`ProgramSpec`) does the first three steps, then
points its stdio at /dev/null, restores default signal handlers and `exec`s
the program: PDEATHSIG and the process group survive the exec. When the exec
fails, the reason goes over the link and it exits 127.
"""

from __future__ import annotations

import _signal
import ctypes
import functools
import logging
import os
import pickle
import signal
import sys
import time
import traceback
from typing import Any

from .link import Link, encode_link
from .spec import ProgramSpec

__all__ = ["main", "set_name", "set_pdeathsig"]

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library, loaded once: the zygote loads it, and every child it creates finds
    it loaded (loading it again in each child costs a restart ~0.4 ms of page copies)."""
    return ctypes.CDLL(None, use_errno=True)


def set_pdeathsig(sig: int = signal.SIGKILL) -> None:
    """Have the kernel send `sig` to this process when its parent (thread) exits."""
    try:
        _libc().prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the link's EOF still stops the actor
        pass


def set_name(name: str) -> None:
    """Name this process in `ps -o comm`, top and /proc/PID/comm (15 bytes at most)."""
    try:
        _libc().prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def main(spec_bytes: bytes, link_fd: int, supervisor_pid: int, intermediate_pid: int) -> None:
    """Run in the new child; never returns. `intermediate_pid` is 0 after a clone."""
    code = 1
    try:
        while os.getppid() == intermediate_pid:  # it exits right after forking us
            time.sleep(0.0002)
        set_pdeathsig()
        if os.getppid() != supervisor_pid:  # the supervisor died before PDEATHSIG was set
            os._exit(1)
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
        _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
        _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
        link = Link.from_fd(link_fd)
        code = _main(spec_bytes, link)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _main(spec_bytes: bytes, link: Link) -> int:
    name = "?"
    try:
        spec = pickle.loads(spec_bytes)
        name = spec.name
        if isinstance(spec, ProgramSpec):
            return _exec(spec, link)
        set_name(name)
        from ..logs import handler

        logging.basicConfig(
            level=spec.log_level,
            handlers=[
                handler(f"%(asctime)s %(levelname)s {spec.name}[%(process)d] %(name)s: %(message)s")
            ],
            force=True,
        )
        _run_actor(spec, link)
        _send(link, "exit", None)
        return 0
    except BaseException as e:  # noqa: BLE001 - every failure is reported to the supervisor
        text = "".join(traceback.format_exception(e)).rstrip()
        if isinstance(e, BaseExceptionGroup):  # its traceback ends in a divider line
            text += "\n" + error_line(e)
        logging.getLogger(f"edgert.actor.{name}").error("failed: %s", text)
        _send(link, "exit", text)
        return 1
    finally:
        link.close()


def _exec(spec: ProgramSpec, link: Link) -> int:
    """Become the program (returns only when the exec fails: its exit code)."""
    for d in spec.dirs:
        os.makedirs(d, mode=0o700, exist_ok=True)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # it logs to its own file, as it was told
        os.dup2(null, fd)
    os.close(null)
    os.set_inheritable(link.fileno(), False)  # gone with the exec
    for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # a stop asked meanwhile ends it
    try:
        os.execv(spec.argv[0], spec.argv)
    except OSError as e:
        _send(link, "exit", f"could not run {spec.argv[0]}: {e.strerror or e}")
    return 127


def error_line(e: BaseException) -> str:
    """`Type: message` of an exception; of a group, of its innermost exceptions."""
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(dict.fromkeys(error_line(x) for x in e.exceptions))
    return "".join(traceback.format_exception_only(e)).strip().splitlines()[-1]


def _send(link: Link, kind: str, data: Any) -> None:
    try:
        link.send_bytes(encode_link(kind, data))
    except OSError:
        pass


def _open_ring(spec: Any) -> Any:
    """The actor's ring file, or None (logged) when it cannot be had."""
    from ..bus import new_epoch
    from ..bus.ring import Ring, ring_capacity, ring_path

    path = ring_path(spec.runtime_dir, spec.name)
    log = logging.getLogger(f"edgert.actor.{spec.name}")
    try:
        ring = Ring.open(path, new_epoch(spec.name), ring_capacity(spec.outbox_max_points))
    except OSError as e:
        log.error("outbox file %s: %s; points are kept in memory only", path, e)
        return None
    if ring.recovered.points:
        log.info(
            "recovered %d points a previous run left unacknowledged (%s): sending them first",
            ring.recovered.points,
            ring.epoch,
        )
    return ring


def _run_actor(spec: Any, link: Link) -> None:
    from ..bus import Outbox, ack_endpoint, bus_endpoint, new_epoch
    from ..context import Context

    cls = spec.actor_class()
    config = spec.actor_config()
    actor = cls(config, name=spec.name)
    _signal.signal(_signal.SIGTERM, lambda *_: actor.stop())
    # born with SIGTERM blocked (by the zygote): one sent since (a SIGTERM to the whole
    # process group before this process led its own) now stops the actor, which sees
    # the stop at its first `receive`, as one over the link
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, {_signal.SIGTERM})
    zctx = sock = acks = outbox = ring = None
    clean = False
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
        acks = zctx.socket(zmq.DEALER)  # the bridge's acks, read when the actor wakes
        acks.setsockopt(zmq.ROUTING_ID, spec.name.encode())
        acks.setsockopt(zmq.LINGER, 0)
        acks.setsockopt(zmq.RECONNECT_IVL, 20)
        acks.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        acks.connect(ack_endpoint(spec.runtime_dir))
        ring = _open_ring(spec) if spec.crash_safe else None
        epoch = ring.epoch if ring is not None else new_epoch(spec.name)
        outbox = Outbox(sock, epoch, max_points=spec.outbox_max_points, ring=ring, acks=acks)
    ctx = Context(
        actor,
        name=spec.name,
        config=config,
        outbox=outbox,
        link=link,
        heartbeat_interval=spec.heartbeat_interval,
    )
    try:
        _send(link, "running", time.monotonic())
        actor.run(ctx)
        clean = True
        if outbox is not None and spec.drain_timeout > 0 and not outbox.drain(spec.drain_timeout):
            ctx.log.warning(
                "stopped with %d points not acknowledged by the bridge%s",
                outbox.stats()["buffered"],
                " (kept in the outbox file for the next run)" if outbox.crash_safe else "",
            )
    finally:
        # With the ring, what the bridge has not acknowledged stays for the next run to
        # send, after a crash or a stop alike (a stop while the bridge cannot take points
        # loses nothing); without it, it is lost and counted.
        kept = outbox is not None and outbox.crash_safe and (not clean or outbox.buffered > 0)
        if outbox is not None and outbox.buffered > 0 and not kept:
            _send(link, "lost", outbox.buffered)  # counted by the supervisor
        if ring is not None:
            ring.close(remove=not kept)
        ctx._close()
        for s in (sock, acks):
            if s is not None:
                s.close(0)
        if zctx is not None:
            zctx.term()
