"""The zygote's ways to create an actor: clone(CLONE_PARENT), the double fork, and a
fork of the supervisor itself when it is its own zygote (`edgert run`).

Each must give the supervisor (here: this test process) an actor that is its own
child and runs as after `os.fork()`: Python's fork handlers ran (a fresh random
seed), the C library's view of the main thread is the child's own (a signal sent
to the main thread from another thread arrives), ZeroMQ starts its threads, and
the actor stops when asked.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edgert.actor import Actor, Stop
from edgert.context import Context
from edgert.proc import ActorProcess, ActorSpec
from edgert.proc.zygote import Zygote, make_subreaper
from edgert.testing import open_fds, wait_for


class ForkFacts(Actor):
    """Reports what a freshly created process looks like from inside."""

    def run(self, ctx: Context) -> None:
        got: list[int] = []
        signal.signal(signal.SIGUSR1, lambda *_: got.append(1))
        main = threading.main_thread().ident
        assert main is not None
        t = threading.Thread(target=signal.pthread_kill, args=(main, signal.SIGUSR1))
        t.start()
        t.join()
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.001)  # the handler runs in the main thread, between bytecodes
        ctx.report(
            ppid=os.getppid(),
            random=random.random(),
            main_thread_signalled=bool(got),
            native_id_is_pid=threading.get_native_id() == os.getpid(),
            config_size=len(ctx.config or ""),
            spec_fds=[t for t in open_fds(os.getpid()).values() if "edgert-spec" in t],
        )
        while not isinstance(ctx.receive(), Stop):
            pass


THREAD_AT_IMPORT = """
import threading
_stop = threading.Event()
threading.Thread(target=_stop.wait, daemon=True).start()
"""


def _facts(proc: ActorProcess) -> dict[str, Any] | None:
    for kind, data in proc.messages():
        if kind == "hb" and isinstance(data, dict) and "ppid" in data:
            return data
        if kind == "exit":
            raise AssertionError(f"the actor exited: {data}")
    return None


def _run_two(zygote: Zygote, runtime_dir: Path, config: Any = None) -> list[dict[str, Any]]:
    """Start two actors from `zygote`, take their reports, stop them; their facts."""
    make_subreaper()  # the double fork re-parents the actor to its creator's subreaper
    facts = []
    for i in range(2):
        spec = ActorSpec(
            f"facts{i}",
            "test_clone:ForkFacts",
            config,
            str(runtime_dir),
            crash_safe=False,
            drain_timeout=0,
        )
        proc = ActorProcess(spec)
        proc.start(zygote)
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                ppid = next(int(x.split()[1]) for x in f if x.startswith("PPid:"))
            assert ppid == os.getpid()  # ours from the reply on: a pidfd on it is race-free
            facts.append(wait_for(lambda p=proc: _facts(p), 20, "the actor's report"))
            proc.send("stop")
            wait_for(lambda p=proc: p.poll_exit() is not None, 20, "the actor stopped")
            assert proc.exitcode == 0, proc.exit_error
        finally:
            proc.kill()
            wait_for(lambda p=proc: p.poll_exit() is not None, 20, "the actor reaped")
    return facts


@pytest.mark.parametrize("clone", [True, False], ids=["clone", "fork-twice"])
def test_an_actor_is_the_supervisors_child_and_runs_as_after_a_fork(
    clone: bool, short_dir: Path
) -> None:
    z = Zygote(["test_clone"], clone=clone)
    try:
        z.start()
        assert z.method == "clone" if clone else z.method.startswith("fork twice")
        facts = _run_two(z, short_dir)
        assert z.method == "clone" if clone else z.method.startswith("fork twice")
    finally:
        z.close()
    for f in facts:
        assert f["ppid"] == os.getpid()
        assert f["main_thread_signalled"]  # the C library's main thread is the child's
        assert f["native_id_is_pid"]
    assert facts[0]["random"] != facts[1]["random"]  # the fork handlers reseeded each


def test_a_zygote_process_takes_a_spec_larger_than_a_datagram(short_dir: Path) -> None:
    """A spec travels to a zygote process in a memfd (a datagram holds ~200 kB; 500
    Modbus devices' registers pickle to megabytes): the actor gets all of it, and no
    process keeps the memfd."""
    z = Zygote(["test_clone"])
    try:
        z.start()
        assert z.pid is not None  # a process of its own: the datagram path
        facts = _run_two(z, short_dir, config="x" * 1_000_000)
    finally:
        z.close()
    assert [(f["config_size"], f["spec_fds"]) for f in facts] == [(1_000_000, [])] * 2


def test_a_zygote_with_a_thread_creates_actors_by_forking_twice(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver module that starts a thread when imported: a clone copies no lock that
    thread may hold either, so the zygote falls back (and says why)."""
    site = short_dir / "site"
    site.mkdir()
    (site / "threadatimport.py").write_text(THREAD_AT_IMPORT)
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.syspath_prepend(str(site))
    z = Zygote(["threadatimport", "test_clone"])
    try:
        z.start()
        assert z.method == "fork twice (more than one thread)"
        facts = _run_two(z, short_dir)
    finally:
        z.close()
    assert [f["ppid"] for f in facts] == [os.getpid()] * 2


HERE = """
import json, sys, threading
from pathlib import Path
import test_clone
from edgert.proc.zygote import Zygote
z = Zygote(["test_clone"], fork=True)
z.start()
out = {"forked": z.forked, "pid": z.pid, "method": z.method}
out["facts"] = test_clone._run_two(z, Path(sys.argv[1]))
done = threading.Event()
t = threading.Thread(target=done.wait)
t.start()  # forking this process is no longer safe: the next actor comes from a new zygote
try:
    out["then"] = test_clone._run_two(z, Path(sys.argv[1]))
    out["then_zygote"] = [z.forked, z.pid is not None, z.method]
finally:
    z.close()
    done.set()
    t.join()
print(json.dumps(out))
"""


def test_a_single_threaded_supervisor_is_its_own_zygote_until_a_thread_starts(
    short_dir: Path,
) -> None:
    """`Zygote(fork=True)` in a process with one thread: the process forks its actors
    itself (no zygote process: they share its pages), each runs as after a fork; once
    the process has a second thread, the next actor comes from a new interpreter."""
    import json
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    r = subprocess.run(
        [sys.executable, "-c", HERE, str(short_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=short_dir,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    assert [out["forked"], out["pid"], out["method"]] == [True, None, "fork"]
    for f in out["facts"] + out["then"]:  # _run_two checked each was the process's child
        assert f["main_thread_signalled"] and f["native_id_is_pid"]
    assert out["facts"][0]["random"] != out["facts"][1]["random"]  # reseeded by each fork
    assert out["then_zygote"] == [False, True, "clone"]


PROBE_IMPORTS = """
import sys
from edgert.proc.clone import Cloner, _multiarch
cloner, why = Cloner.probe()
print(_multiarch(), cloner is not None or why, any(m.startswith("_sysconfigdata") for m in sys.modules))
"""


def test_the_probe_knows_the_abi_without_loading_sysconfigs_build_variables() -> None:
    """sysconfig's first lookup loads and copies every build variable (1.4 MB the forked
    zygote kept): the platform triplet comes from sys.implementation instead."""
    import subprocess
    import sys
    import sysconfig

    r = subprocess.run(
        [sys.executable, "-c", PROBE_IMPORTS], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    arch, ok, loaded = r.stdout.split()
    assert arch == (sysconfig.get_config_var("MULTIARCH") or "")
    assert ok == "True" and loaded == "False", r.stdout
