"""The embedded nats-server is the supervisor's own child, with no Python process minding it.

A `ProgramSpec` child is forked as an actor is and execs its program: it is
running while it lives, a SIGKILL of it is a failure that restarts it, an exec
that fails says why, and `stop` ends it with SIGTERM. Real processes throughout.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from edgert.config import SupervisorSection
from edgert.proc import ProgramSpec
from edgert.supervisor import ChildSpec, Supervisor
from edgert.testing import pid_alive, running_gateway, status, wait_for
from edgert.testing.configs import nats_section, sim_driver, supervisor
from edgert.testing.nats import free_port


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_a_killed_embedded_server_is_restarted_and_gone_after_stop(make_config) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    cfg = make_config(
        supervisor(0.1, backoff_max=10.0, intensity=5)
        + nats_section(url, embedded=True)
        + sim_driver()
    )
    with running_gateway(cfg):
        nats = wait_for(lambda: (a := status(cfg)["by_name"]["nats"])["pid"] and a, 15, "nats")
        first = nats["pid"]
        assert nats["state"] == "running"
        wait_for(lambda: _comm(first) == "nats-server", 10, "the exec")  # from its fork
        wait_for(
            lambda: status(cfg)["by_name"]["bridge"]["stats"].get("nats") == "connected",
            20,
            "bridge connected to the embedded server",
        )
        os.kill(first, signal.SIGKILL)
        again = wait_for(
            lambda: (a := status(cfg)["by_name"]["nats"])["pid"] not in (None, first) and a,
            15,
            "a new nats-server",
        )
        assert again["restarts"] == 1 and again["state"] == "running"
        assert "nats-server killed by signal 9 (no error in its log " in again["last_error"]
        assert "Server is ready" not in again["last_error"]  # its start-up is no reason
        wait_for(lambda: _comm(again["pid"]) == "nats-server", 10, "the exec")
        wait_for(
            lambda: status(cfg)["by_name"]["bridge"]["stats"].get("nats") == "connected",
            20,
            "bridge connected to the new server",
        )
    assert not pid_alive(again["pid"])  # stopped with the gateway


def _supervise(tmp_path: Path, spec: ProgramSpec, critical: bool = False):
    section = SupervisorSection(backoff_min=0.05, backoff_max=0.1, intensity=2, failed_retry=0)
    sup = Supervisor([ChildSpec(spec, "permanent", tier=0, critical=critical)], section)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            sup.run()
        except BaseException as e:  # noqa: BLE001 - looked at by the test
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    return sup, t, errors


def test_a_program_that_cannot_be_run_fails_saying_why(tmp_path: Path) -> None:
    spec = ProgramSpec("srv", ("/nonexistent/server", "-x"), str(tmp_path))
    sup, t, errors = _supervise(tmp_path, spec)
    try:
        a = wait_for(
            lambda: (s := sup.snapshot()["actors"][0])["state"] == "failed" and s, 15, "failed"
        )
    finally:
        sup.stop()
        t.join(15)
    assert not t.is_alive() and not errors
    assert a["restarts"] == 2
    assert "could not run /nonexistent/server: No such file or directory" in a["last_error"]


def test_a_program_runs_until_stopped_with_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "srv.log"
    script = (
        f"trap 'echo got TERM >> {log}; exit 0' TERM; echo started > {log}; "
        "while :; do sleep 0.05; done"
    )
    spec = ProgramSpec("srv", ("/bin/sh", "-c", script), str(tmp_path), dirs=(str(tmp_path / "d"),))
    sup, t, errors = _supervise(tmp_path, spec)
    try:
        wait_for(lambda: log.exists() and "started" in log.read_text(), 15, "the program ran")
        a = sup.snapshot()["actors"][0]
        assert a["state"] == "running" and a["restarts"] == 0
        assert (tmp_path / "d").is_dir()  # made before the exec
        pid = a["pid"]
        assert Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"/bin/sh\0")
    finally:
        sup.stop()
        t.join(15)
    assert not t.is_alive() and not errors
    assert "got TERM" in log.read_text()
    assert not pid_alive(pid)


def test_a_program_that_exits_by_itself_fails_with_the_end_of_its_log(tmp_path: Path) -> None:
    log = tmp_path / "srv.log"
    script = f"echo line1 > {log}; echo 'port in use' >> {log}; exit 3"
    spec = ProgramSpec("srv", ("/bin/sh", "-c", script), str(tmp_path), log_path=str(log))
    sup, t, errors = _supervise(tmp_path, spec, critical=True)
    t.join(30)
    assert not t.is_alive()
    assert len(errors) == 1  # critical: given up on, the group is torn down
    assert "sh exited with code 3: line1 | port in use" in str(errors[0])


def test_a_programs_exit_names_the_error_lines_of_its_log(tmp_path: Path) -> None:
    """The error lines of the log, not whatever it logged last; none: where its log is."""
    log = tmp_path / "server.log"
    log.write_text(
        "[1] [INF] Starting nats-server\n[1] [ERR] Error listening on port: 4222, "
        "address already in use\n[1] [INF] Server is ready\n"
    )
    spec = ProgramSpec("nats", ("/usr/bin/nats-server",), str(tmp_path), log_path=str(log))
    said = spec.exit_error(1)
    assert said == (
        "nats-server exited with code 1: [1] [ERR] Error listening on port: 4222, "
        "address already in use"
    )
    log.write_text(
        log.read_text() + "[2] [INF] Starting nats-server\n[2] [INF] Server is ready\n"
    )  # a later run of it: the error above was the one before's
    assert spec.exit_error(-9) == f"nats-server killed by signal 9 (no error in its log {log})"
    assert spec.exit_error(2) == (  # no error logged: its log's end, which may say why
        "nats-server exited with code 2: [1] [INF] Server is ready | "
        "[2] [INF] Starting nats-server | [2] [INF] Server is ready"
    )
