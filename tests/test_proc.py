"""Actor process plumbing without a gateway: the link, the zygote's import path, and what
the supervisor's process imports."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from edgert.actor import Actor, Stop
from edgert.context import Context
from edgert.control import ControlError, request
from edgert.proc import ActorProcess, ActorSpec, Link, decode_link
from edgert.proc.zygote import Zygote, clean_path, fingerprint
from edgert.testing import descendants, open_fds, running_gateway, status, wait_for


def test_sends_to_a_child_that_does_not_read_never_block_and_status_is_latest_wins() -> None:
    ours, theirs = Link.pair()
    proc = ActorProcess(ActorSpec("x", "m:C", None, "/tmp"))
    ours.sock.setblocking(False)
    proc.link = ours
    try:
        big = "x" * 50_000
        t0 = time.monotonic()
        for i in range(200):  # far more than the socket buffer holds
            proc.send("status", {"n": i, "pad": big})
        proc.send("stop")
        assert time.monotonic() - t0 < 5  # returned every time: nothing waited for the reader
        assert proc.pending
        got = []
        while proc.pending or theirs.poll():
            while theirs.poll():
                got.append(decode_link(theirs.recv_bytes()))
            proc.flush()
        kinds = [k for k, _ in got]
        assert kinds.count("stop") == 1
        statuses = [d["n"] for k, d in got if k == "status"]
        assert statuses[-1] == 199  # the newest always arrives
        assert len(statuses) < 200  # the ones overtaken while the link was full were dropped
        assert statuses == sorted(statuses)
    finally:
        proc.close()
        theirs.close()


def test_the_zygote_path_leaves_out_the_working_directory(tmp_path) -> None:
    path = ["", str(tmp_path), "/usr/lib/python3", str(tmp_path) + "/", "/usr/lib/python3"]
    assert clean_path(path, cwd=str(tmp_path), pythonpath="") == ["/usr/lib/python3"]
    # unless PYTHONPATH names it: a driver tested from its own folder
    explicit = clean_path(path, cwd=str(tmp_path), pythonpath=f"/x{os.pathsep}{tmp_path}")
    assert explicit == [str(tmp_path), "/usr/lib/python3", str(tmp_path) + "/"]


def test_a_fingerprint_changes_with_the_code(tmp_path, monkeypatch) -> None:
    pkg = tmp_path / "fpdrv"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = fingerprint("fpdrv.sub")
    assert before and before == fingerprint("fpdrv")
    (pkg / "sub.py").write_text("Y = 2\n")
    assert fingerprint("fpdrv") != before
    assert fingerprint("no_such_package_here") == ()


LEAN = """
import sys
import edgert.actor  # the driver API itself: what a driver module costs anyway
base = set(sys.modules)
from edgert.config import load
from edgert.runtime import Runtime
import edgert.supervisor, edgert.proc
rt = Runtime(load(sys.argv[1]))
rt.children()
new = set(sys.modules) - base
heavy = {"asyncio", "nats", "sqlite3", "_sqlite3", "click", "edgert.bridge", "edgert.spool"}
bad = sorted(m for m in sys.modules if m.split(".")[0] in heavy or m in heavy)
bad_new = sorted(m for m in new if m.split(".")[0] in heavy)
print(bad, bad_new)
assert not [m for m in bad if not m.startswith("asyncio")], bad
assert not bad_new, bad_new
scan = sorted(m for m in ("importlib.metadata", "email", "zipfile") if m in sys.modules)
assert not scan, scan  # shipped driver types resolve without scanning every distribution
"""


def test_the_supervisor_does_not_import_nats_sqlite_or_the_bridge(tmp_path) -> None:
    """The supervisor's modules, with the demo's config loaded and its children built,
    import neither nats, sqlite3, click nor the bridge (asyncio: only if the driver API
    itself does), nor importlib.metadata for the shipped driver types."""
    demo = os.path.join(os.path.dirname(__file__), "..", "configs", "demo.toml")
    r = subprocess.run(
        [sys.executable, "-P", "-c", LEAN, demo], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr


def test_the_shipped_driver_types_are_the_entry_points_edgert_registers() -> None:
    from importlib.metadata import distribution

    from edgert.config import ENTRY_POINT_GROUP, SHIPPED, resolve_driver

    eps = distribution("edgert").entry_points.select(group=ENTRY_POINT_GROUP)
    assert {ep.name: ep.value for ep in eps} == SHIPPED
    assert {resolve_driver(t).__name__ for t in SHIPPED} == {
        "SimDriver",
        "ModbusDriver",
        "GpioDriver",
    }


class ModulesProbe(Actor):
    """Reports which heavy modules its process has loaded."""

    def run(self, ctx: Context) -> None:
        heavy = ("click", "edgert.cli", "pytest", "_pytest", "multiprocessing")
        ctx.report(loaded=[m for m in heavy if m in sys.modules])
        while not isinstance(ctx.receive(), Stop):
            pass


def test_a_driver_process_loads_neither_the_cli_nor_the_test_runner(make_config) -> None:
    cfg = make_config(
        '[nats]\nenabled = false\n[[driver]]\nname = "probe"\ntype = "test_proc:ModulesProbe"\n'
    )
    with running_gateway(cfg):
        a = wait_for(
            lambda: (a := status(cfg)["by_name"]["probe"])["stats"].get("loaded") is not None and a,
            20,
            "the probe's report",
        )
    assert a["stats"]["loaded"] == []


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def _edgert_run(short_dir: Path, gateway_id: str, nats: str) -> subprocess.Popen[str]:
    """`edgert run` of a gateway with one sim driver, `gen`, and `nats` as its [nats]."""
    cfg = short_dir / "gw.toml"
    cfg.write_text(
        f'[gateway]\nid = "{gateway_id}"\nruntime_dir = "{short_dir}/run"\n'
        f'data_dir = "{short_dir}/data"\n[nats]\n{nats}\n[[driver]]\nname = "gen"\n'
        'type = "sim"\n[[driver.signal]]\nname = "n"\nrate = 5.0\n'
    )
    return subprocess.Popen(
        [sys.executable, "-m", "edgert", "run", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _all_running(short_dir: Path, actors: int) -> dict | None:
    """The status, once it shows `actors` actors, all running."""
    try:
        s = request(short_dir / "run", "status")["status"]
    except ControlError:
        return None
    ok = len(s["actors"]) == actors and all(a["state"] == "running" for a in s["actors"])
    return s if ok else None


def test_edgert_run_is_its_own_zygote_and_its_actors_keep_none_of_its_descriptors(
    short_dir: Path,
) -> None:
    """`edgert run` forks its actors itself (they share its pages; no zygote process): each
    is its child, bears its name, and kept none of its descriptors but stdio and its
    link (no pidfd, no socket of the supervisor's)."""
    proc = _edgert_run(short_dir, "fz", "enabled = false")
    try:
        gen = wait_for(lambda: _all_running(short_dir, 1), 30, "the driver running")["actors"][0]
        kids = descendants(proc.pid)
        assert [_comm(p) for p in kids] == ["gen"], {p: _comm(p) for p in kids}
        assert _ppid(gen["pid"]) == proc.pid
        theirs = open_fds(gen["pid"])
        ours = set(open_fds(proc.pid).values())
        inherited = {fd: t for fd, t in theirs.items() if fd > 2 and t in ours}
        assert inherited == {}, (theirs, ours)
        assert not any("pidfd" in t for t in theirs.values()), theirs
        assert sum(t.startswith("socket:") for t in theirs.values()) >= 1  # its link, at least
    finally:
        proc.terminate()
        code = proc.wait(timeout=20)
    assert code == 0, proc.stderr.read() if proc.stderr else ""


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _maps_any(pid: int, names: tuple[str, ...]) -> set[str]:
    """Which of `names` (parts of a file name) the process `pid` has mapped."""
    with open(f"/proc/{pid}/maps") as f:
        text = f.read()
    return {n for n in names if n in text}


def test_only_the_bridge_loads_asyncio_nats_and_sqlite(short_dir: Path, nats_server) -> None:
    """The supervisor (the zygote of `edgert run`) imports what the drivers need, not the
    bridge's asyncio, nats, ssl and sqlite3 (shared, they would cost every process the
    pages it touches of them): the bridge imports them after its fork (sqlite3 only once it has
    something to spool: not while NATS takes every point; OpenSSL only for TLS, which
    this gateway does not use); no driver maps them."""
    proc = _edgert_run(short_dir, "lz", f'url = "{nats_server.url}"')
    heavy = ("_asyncio.", "_sqlite3.", "_ssl.", "_hashlib.", "libcrypto", "libssl")
    try:
        running = wait_for(lambda: _all_running(short_dir, 2), 60, "running")
        pids = {a["name"]: a["pid"] for a in running["actors"]}
        assert [p for p in descendants(proc.pid) if _comm(p) == "edgert-zygote"] == []
        assert _maps_any(proc.pid, heavy) == set()
        assert _maps_any(pids["gen"], heavy) == set()
        assert _maps_any(pids["bridge"], heavy) == {"_asyncio."}
    finally:
        proc.terminate()
        code = proc.wait(timeout=20)
    assert code == 0, proc.stderr.read() if proc.stderr else ""


def test_a_zygote_asked_to_fork_a_process_with_threads_starts_a_new_interpreter() -> None:
    """Forking copies no other thread, but every lock one held: with threads, no fork."""
    done = threading.Event()
    t = threading.Thread(target=done.wait)
    t.start()
    z = Zygote([], fork=True)
    try:
        z.start()
        assert z.pid is not None and not z.forked
        assert b"edgert.proc.zygote" in _cmdline(z.pid)
    finally:
        z.close()
        done.set()
        t.join()
