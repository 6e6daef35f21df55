"""The desired config a fleet-managed gateway runs, kept in its data directory.

Three small JSON files under `<data_dir>/fleet/`, each written whole
(`edgert.files.write_private_atomic`: a temporary file, fsync, rename) with
mode 0600, since a config may carry credentials:

- `applied.json`: the last config from the KV bucket that was applied and
  healthy: `{"revision", "toml", "time"}`. A gateway that boots without NATS
  runs this one, and says its revision in status.
- `pending.json`: a revision being tried now: `{"revision", "toml", "time"}`.
  While it exists the runtime runs it; the fleet actor turns it into `applied`
  or removes it (rollback). It survives a restart of the bridge or of the fleet
  actor, so the outcome is still decided and reported. If the whole gateway
  restarts while one is pending, `boot()` rolls it back: a config that took the
  gateway down is not tried again.
- `outcome.json`: the last outcome to report in bucket `edgert-applied`:
  `{"revision", "state", "error", "time", "reported"}`, kept until NATS took it.

Only the standard library: the supervisor's process reads these files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ..files import write_private_atomic

__all__ = ["Desired", "Outcome", "Store", "now_text"]

State = Literal["applied", "refused", "rolled_back"]


def now_text() -> str:
    """UTC now as RFC 3339 with milliseconds, as the micro protocol writes times."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Desired:
    """One revision of the desired config: its KV revision and TOML text."""

    revision: int
    toml: str
    time: str = ""

    def where(self, bucket: str, gateway: str) -> str:
        """How errors name this config."""
        return f"KV {bucket} key {gateway} revision {self.revision}"


@dataclass(frozen=True)
class Outcome:
    """What became of one revision, as reported in bucket `edgert-applied`."""

    revision: int
    state: State
    error: str | None = None
    time: str = ""
    reported: bool = False

    def report(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "state": self.state,
            "error": self.error,
            "time": self.time,
        }


class Store:
    """The files of one gateway's data directory; no state of its own beyond the path."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(data_dir) / "fleet"

    # -- the desired configs ------------------------------------------------------------
    def applied(self) -> Desired | None:
        return self._desired("applied")

    def pending(self) -> Desired | None:
        return self._desired("pending")

    def current(self) -> Desired | None:
        """What the runtime runs: the revision being tried, else the last applied."""
        return self.pending() or self.applied()

    def try_(self, d: Desired) -> None:
        """`d` is being tried: the runtime's next reload runs it."""
        self._write("pending", asdict(d))

    def accept(self, d: Desired) -> None:
        """`d` proved healthy: it becomes the last good config."""
        self._write("applied", asdict(d))
        self._remove("pending")

    def drop_pending(self) -> Desired | None:
        """Forget the revision being tried (the runtime's next reload runs the last
        applied again); returns it."""
        d = self.pending()
        self._remove("pending")
        return d

    def boot(self) -> Outcome | None:
        """At gateway start: a revision still pending when the gateway stopped is rolled
        back (it may be what stopped it); returns that outcome."""
        d = self.drop_pending()
        if d is None:
            return None
        out = Outcome(
            d.revision,
            "rolled_back",
            f"the gateway restarted while revision {d.revision} was being tried",
            now_text(),
        )
        self.record(out)
        return out

    # -- outcomes ---------------------------------------------------------------------
    def outcome(self) -> Outcome | None:
        raw = self._read("outcome")
        if raw is None:
            return None
        try:
            return Outcome(**raw)
        except TypeError:
            return None

    def record(self, out: Outcome) -> None:
        self._write("outcome", asdict(out))

    # -- files --------------------------------------------------------------------------
    def _desired(self, name: str) -> Desired | None:
        raw = self._read(name)
        if raw is None:
            return None
        try:
            d = Desired(**raw)
        except TypeError:
            return None
        return d if isinstance(d.revision, int) and isinstance(d.toml, str) else None

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            raw = json.loads((self.dir / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None
        return raw if isinstance(raw, dict) else None

    def _write(self, name: str, data: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private_atomic(self.dir / f"{name}.json", json.dumps(data).encode())

    def _remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dir / f"{name}.json")
