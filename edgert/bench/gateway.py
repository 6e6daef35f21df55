"""A gateway under test: `edgert run CONFIG` as a child process, as a user runs it.

`GatewayProcess(text, directory)` writes the config, checks it, and for the
length of a `with` block runs `python -m edgert run` on it, so every process
of the gateway (supervisor, fork server, drivers, bridge) is this child or
below it and its CPU can be summed from /proc. `status()` asks it over its
control socket, `pids()` lists its processes, `wait_running()` waits until
every actor runs. On leaving the block the gateway is sent SIGTERM, then
SIGKILL if it does not stop, and every process seen below it is checked gone
(and killed if not): nothing outlives the block, even when it ends by an error.

`config_text()` builds the TOML the suites use: an external NATS, a short
shutdown timeout, and the drivers given.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgert.bench.procfs import alive, start_time
from edgert.config import GatewayConfig, loads
from edgert.testing import descendants, status, wait_for

__all__ = ["GatewayProcess", "config_text", "producer", "sim_counter"]


def config_text(
    directory: str | Path,
    url: str,
    drivers: str,
    *,
    gateway_id: str = "bench",
    jetstream: bool = False,
    spool_max_bytes: int = 1 << 30,
    ring: bool = True,
    run: str | Path | None = None,
) -> str:
    """A gateway config for a benchmark: NATS at `url`, these `[[driver]]` tables;
    `ring=False`: the drivers' outboxes without their crash-safe ring files; `run`:
    the runtime directory (default: `run` in `directory`)."""
    d = Path(directory)
    run = run or f"{d}/run"
    return (
        f'[gateway]\nid = "{gateway_id}"\nruntime_dir = "{run}"\ndata_dir = "{d}/data"\n'
        f"crash_safe_outbox = {str(ring).lower()}\n"
        f"[supervisor]\nshutdown_timeout = 2.0\n"
        f'[nats]\nurl = "{url}"\njetstream = {str(jetstream).lower()}\n'
        f"spool_max_bytes = {spool_max_bytes}\n{drivers}"
    )


def producer(name: str, rate: float, tick: float = 0.01) -> str:
    """A `[[driver]]` table: the benchmark producer (one point per publish call)."""
    from edgert.bench.producer import TYPE

    return f'[[driver]]\nname = "{name}"\ntype = "{TYPE}"\nrate = {rate}\ntick = {tick}\n'


def sim_counter(name: str, rate: float) -> str:
    """A `[[driver]]` table: a `sim` driver with one counter signal `n`."""
    return (
        f'[[driver]]\nname = "{name}"\ntype = "sim"\n'
        f'[[driver.signal]]\nname = "n"\nshape = "counter"\nrate = {rate}\n'
    )


class GatewayProcess:
    """`edgert run` on a benchmark config, in a child process, for a `with` block."""

    def __init__(self, text: str, directory: str | Path, stop_timeout: float = 30.0) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "gateway.toml"
        self.path.write_text(text)
        self.config: GatewayConfig = loads(text, str(self.path))  # a bad config fails here
        self.log = self.directory / "gateway.log"
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen: dict[int, int | None] = {}  # every pid seen in the gateway -> its start time

    # -- the block -----------------------------------------------------------------
    def __enter__(self) -> GatewayProcess:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgert", "run", str(self.path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        self.seen[self.proc.pid] = start_time(self.proc.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the gateway (SIGTERM, then SIGKILL) and make sure no process of it is left."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        self.pids(proc)  # remember the latest children before they go
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        left = lambda: [p for p, t in self.seen.items() if alive(p, t)]  # noqa: E731
        try:
            wait_for(lambda: not left(), 5, "the gateway's processes to exit", interval=0.05)
        except TimeoutError:
            for pid in left():
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not left(), 5, "the gateway's processes to die", interval=0.05)

    # -- looking at it ---------------------------------------------------------------
    def pids(self, proc: subprocess.Popen[bytes] | None = None) -> list[int]:
        """Every live process of the gateway: `edgert run` and all below it."""
        proc = proc or self.proc
        if proc is None:
            return []
        out = [proc.pid, *sorted(descendants(proc.pid))]
        for pid in out:
            if pid not in self.seen:
                self.seen[pid] = start_time(pid)
        return out

    def status(self) -> dict[str, Any]:
        """The gateway's status snapshot (actors by name under "by_name")."""
        self._check_running()
        return status(self.config)

    def wait_running(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the bridge and every driver are running; return that status."""
        names = {"bridge", *(d.name for d in self.config.drivers)}

        def ready() -> dict[str, Any] | None:
            s = self.status()
            running = {a["name"] for a in s["actors"] if a["state"] == "running" and a["pid"]}
            return s if names <= running else None

        return wait_for(ready, timeout, "the gateway running", interval=0.05)

    def _check_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the gateway exited with code {self.proc.returncode}:\n{tail}")
