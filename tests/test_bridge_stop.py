"""A stop reaches the bridge at any moment of its start-up, and ends it cleanly.

Each test starts a real `edgert run` (its own session, a real nats-server or
none reachable), waits for the log line of one stage of the bridge's start-up,
then sends the stop as a terminal or a service manager would: SIGINT or
SIGTERM to the whole process group. The bridge must stop by itself (never
"did not stop in time: SIGKILL"), and nothing of the gateway may be left.

A stop the bridge's tasks swallow is caught by `edgert.tasks.cancel_all`,
tested here with the way Python 3.11 loses a cancellation (`asyncio.wait_for`
whose result comes at the moment it is cancelled).
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli_interrupt import session_members

from edgert.tasks import cancel_all
from edgert.testing import wait_for
from edgert.testing.holdimport import hold_import
from edgert.testing.nats import NatsProcess, free_port

CONFIG = """
[gateway]
id = "st"
runtime_dir = "{d}/run"
data_dir = "{d}/data"

[supervisor]
shutdown_timeout = 10

[nats]
url = "{url}"
jetstream = {jetstream}
"""


class Gateway:
    """`edgert run` in its own session, its log read line by line."""

    def __init__(
        self,
        d: Path,
        url: str,
        jetstream: bool = True,
        env: dict[str, str] | None = None,
        extra: str = "",
    ) -> None:
        cfg = d / "gw.toml"
        cfg.write_text(CONFIG.format(d=d, url=url, jetstream=str(jetstream).lower()) + extra)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgert", "run", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=env,
        )
        assert self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), False)
        self.log = b""

    def wait_line(self, text: str, timeout: float = 30.0) -> None:
        """Read the log until a line has `text` (the stage is reached)."""
        fd = self.proc.stderr.fileno()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while text.encode() not in self.log:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.kill()
                pytest.fail(f"no log line with {text!r}:\n{self.log.decode()}")
            if select.select([fd], [], [], left)[0]:
                self.log += os.read(fd, 65536)

    def stop(self, sig: int) -> str:
        """Send `sig` to the whole group; the rest of the log once every process is gone."""
        os.killpg(self.proc.pid, sig)
        os.set_blocking(self.proc.stderr.fileno(), True)  # type: ignore[union-attr]
        _, rest = self.proc.communicate(timeout=60)
        wait_for(lambda: not session_members(self.proc.pid), 10, "every process of it gone")
        return (self.log + rest).decode()

    def kill(self) -> None:
        with_group = self.proc.poll() is None
        if with_group:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def without_nats_client_errors(log: str) -> str:
    """The log without the records of nats-py's own logger (and their tracebacks).

    nats-py 2.16 logs "InvalidStateError" with a traceback when the PONG of a
    flush that was cancelled comes back (nats-io/nats.py#624, #853): a stop
    during a flush may show it; it is the client's noise, not the bridge's.
    """
    out, skipping = [], False
    for line in log.splitlines():
        if line[:4].isdigit():  # a record's first line starts with its time
            skipping = " nats.aio.client: " in line
        if not skipping:
            out.append(line)
    return "\n".join(out)


def check_clean(log: str, code: int) -> None:
    log = without_nats_client_errors(log)
    assert code == 0, log
    assert "did not stop in time" not in log, log
    assert "bridge: stopped (exit code 0)" in log, log
    assert "Traceback" not in log and ": failed:" not in log and "lost" not in log, log
    assert "the zygote exited" not in log, log  # expected at stop: not worth a warning
    assert "gateway 'st' stopped" in log, log


@pytest.mark.parametrize(
    "stage",
    [
        "bridge: started",  # the bridge process exists, its loop may not yet
        "NATS: connected to",  # its session starting (the JetStream stream next)
        "JetStream: created stream",  # its session's tasks starting
    ],
)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_at_each_stage_of_the_start_ends_the_bridge_by_itself(
    short_dir: Path, nats_server: NatsProcess, stage: str, sig: int
) -> None:
    gw = Gateway(short_dir, nats_server.url)
    try:
        gw.wait_line(stage)
        log = gw.stop(sig)
    finally:
        gw.kill()
    check_clean(log, gw.proc.returncode)


def test_a_stop_while_nats_cannot_be_reached_ends_the_bridge_by_itself(short_dir: Path) -> None:
    gw = Gateway(short_dir, f"nats://127.0.0.1:{free_port()}")  # nothing listens there
    try:
        gw.wait_line("NATS: cannot reach the server")
        log = gw.stop(signal.SIGINT)
    finally:
        gw.kill()
    check_clean(log, gw.proc.returncode)


SIM = """
[[driver]]
name = "gen"
type = "sim"
[[driver.signal]]
name = "n"
shape = "counter"
rate = 200.0
"""


@pytest.mark.parametrize("stage", ["gen: started", "JetStream: created stream"])
def test_a_group_sigterm_stops_a_driver_as_the_supervisor_would(
    short_dir: Path, nats_server: NatsProcess, stage: str
) -> None:
    """Drivers stop by the supervisor's stop or by the signal itself (one that has not
    yet made its own process group gets it): either way cleanly, nothing lost."""
    gw = Gateway(short_dir, nats_server.url, extra=SIM)
    try:
        gw.wait_line(stage)
        log = gw.stop(signal.SIGTERM)
    finally:
        gw.kill()
    check_clean(log, gw.proc.returncode)
    assert "gen: stopped (exit code 0)" in log, log
    assert "not acknowledged" not in log, log


def _sigterm_while_importing(short_dir: Path, module: str, what: str) -> tuple[int, int, str]:
    """`edgert run` with `module`'s import held, and a SIGTERM to its process group while it
    is: (the pid that held it, `edgert run`'s pid, the log of the clean stop)."""
    env, mark = hold_import(short_dir, module)
    gw = Gateway(short_dir, f"nats://127.0.0.1:{free_port()}", env=env)
    try:
        wait_for(mark.exists, 30, what)
        holder = int(mark.read_text())
        os.killpg(gw.proc.pid, signal.SIGTERM)
        mark.unlink()
        log = gw.stop(signal.SIGTERM)
    finally:
        mark.unlink(missing_ok=True)
        gw.kill()
    assert gw.proc.returncode == 0, log
    assert "Traceback" not in log and "gateway 'st' stopped" in log, log
    return holder, gw.proc.pid, log


def test_a_group_sigterm_while_the_bridge_imports_is_a_clean_stop(short_dir: Path) -> None:
    """The bridge dies of it before it runs: the gateway stops, it does not fail."""
    # edgert.bridge.actor: imported by the bridge after its fork, not by the supervisor
    holder, pid, log = _sigterm_while_importing(short_dir, "edgert.bridge.actor", "the bridge")
    assert holder != pid  # the bridge holds, not `edgert run`
    assert "error" not in log, log


def test_a_stop_while_the_supervisor_prepares_to_fork_starts_no_actor(short_dir: Path) -> None:
    """`edgert run` is its own zygote: a SIGTERM while it preloads and rehearses (held
    here at an import its rehearsal makes) stops the gateway before any actor starts."""
    # edgert.timers: first imported by the rehearsal (no driver here imports it before)
    holder, pid, log = _sigterm_while_importing(short_dir, "edgert.timers", "the rehearsal")
    assert holder == pid
    assert "started" not in log, log


def test_cancel_all_ends_a_task_that_swallowed_its_cancellation() -> None:
    async def main() -> tuple[bool, bool]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        reached = asyncio.Event()

        async def stubborn() -> None:
            try:
                await asyncio.wait_for(fut, 3600)
            except asyncio.CancelledError:  # 3.12 and later keep the cancellation
                pass
            reached.set()  # past the wait: the cancellation is spent
            await asyncio.Event().wait()  # and on to a wait that never ends by itself

        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)  # it waits in wait_for
        fut.set_result(1)  # its result comes at the very moment it is cancelled
        task.cancel()
        await reached.wait()
        after_one = not task.done()  # one cancellation was not enough
        async with asyncio.timeout(30):
            await cancel_all([task], every=0.01)
        return after_one, task.cancelled()

    after_one, cancelled = asyncio.run(main())
    assert after_one and cancelled


def test_cancel_all_of_tasks_done_or_none_returns() -> None:
    async def main() -> None:
        done = asyncio.create_task(asyncio.sleep(0))
        await done
        await cancel_all([done])
        await cancel_all([])

    asyncio.run(main())
