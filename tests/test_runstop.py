"""A gateway is a Run/Stop pair: `run` owns what it opens, `stop` is safe at any time.

`stop()` before `run` makes `run` return without starting a process; `stop()`
during `run` stops everything; `stop()` and `reload()` after `run` returned touch
nothing (they once wrote into a descriptor number the process had reused)."""

from __future__ import annotations

import os
import threading

from edgert.config import SupervisorSection
from edgert.runtime import Runtime
from edgert.supervisor import Supervisor
from edgert.testing import descendants, pid_alive, status, wait_for

SIM = (
    '[nats]\nenabled = false\n[[driver]]\nname = "gen"\ntype = "sim"\n'
    '[[driver.signal]]\nname = "n"\nrate = 20.0\n'
)


def gateway_processes(cfg) -> set[int]:
    """The running gateway's processes: its actors, its zygote, and what they started."""
    roots = {a["pid"] for a in status(cfg)["actors"] if a["pid"]}
    for p in descendants(os.getpid()):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if b"edgert.proc.zygote" in f.read():
                    roots.add(p)
        except OSError:
            pass
    return roots.union(*(descendants(p) for p in roots))


def test_stop_before_run_starts_nothing(make_config) -> None:
    cfg = make_config(SIM)
    rt = Runtime(cfg)
    rt.stop()
    before = descendants(os.getpid())
    rt.run()
    assert descendants(os.getpid()) - before == set()
    rt.stop()  # after run: harmless


def test_stop_from_another_thread_leaves_no_process(make_config) -> None:
    cfg = make_config(SIM)
    rt = Runtime(cfg)
    t = threading.Thread(target=rt.run)
    t.start()
    try:
        a = wait_for(lambda: (a := status(cfg)["by_name"]["gen"])["points_out"] >= 5 and a, 20)
        kids = gateway_processes(cfg)
        assert len(kids) == 2  # the driver and the zygote
    finally:
        rt.stop()
        rt.stop()
        t.join(20)
    assert not t.is_alive()
    assert not pid_alive(a["pid"])
    wait_for(lambda: not any(pid_alive(p) for p in kids), 2, "no process left")
    assert not (cfg.runtime_dir / "control.sock").exists()


def test_stop_and_reload_after_run_write_to_nothing() -> None:
    sup = Supervisor([], SupervisorSection())
    sup.stop()
    sup.run()
    pipes = [os.pipe() for _ in range(8)]  # reuse the descriptor numbers run freed
    try:
        for r, _ in pipes:
            os.set_blocking(r, False)
        sup.stop()
        sup.reload()
        for r, _ in pipes:
            try:
                data = os.read(r, 16)
            except BlockingIOError:  # empty: nothing was written into it
                data = b""
            assert data == b"", "stop() after run wrote into a reused descriptor"
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)


def test_a_wake_from_a_signal_handler_that_interrupted_a_wake_returns() -> None:
    """A second SIGTERM whose handler wakes the loop while the first one's handler is
    inside `wake()` (same thread, the Waker's lock held): it must not wait for itself
    (a gateway stopped with two SIGTERMs in quick succession hung there)."""
    from edgert.waker import Waker

    w = Waker()
    done = threading.Event()

    def nested() -> None:
        with w._lock:  # where the interrupted wake() was
            w.wake()
            w.close()
            w.wake()  # closed meanwhile: ignored
        done.set()

    t = threading.Thread(target=nested, daemon=True)
    t.start()
    t.join(5)
    assert done.is_set()
    assert w.fileno() == -1
