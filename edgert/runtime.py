"""The runtime: a whole gateway as one Run/Stop object.

`Runtime(config).run()` blocks: it prepares the runtime directory (mode 0700,
locked so two gateways never share it) and the data directory, then supervises
every actor — the embedded nats-server when asked for, the bridge, and one
process per `[[driver]]` — until `stop()` (from another thread, or SIGTERM/SIGINT
in `edgert run`), and removes its sockets and lock on the way out. Outbox ring
files a crash left (`edgert.bus.ring`) stay for the next start, whose drivers
send what they hold; those of actors no longer configured are dropped. It raises
`GroupFailed` when the supervisor tore the group down, and `RuntimeBusy`, starting
nothing, when the runtime directory or the embedded server's port is taken. Nothing
is global: a test starts a gateway, drives it, stops it and starts another in the
same interpreter.

With `[fleet] enabled = true` the gateway runs the local file overlaid with the
desired config kept in its data directory (`edgert.fleet.store`: the revision
being tried, else the last applied one), at start and on every reload, and a
fleet actor watches the KV bucket for new revisions. A revision still pending
at start is rolled back first: it may be what stopped the gateway.

Actors beat at most every `HEARTBEAT_MAX` seconds; the environment variable
`EDGERT_HEARTBEAT_MAX` shortens that for tests, which wait on the figures the
beats carry.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import natsserver
from .bus.ring import discard, filesystem
from .config import ConfigError, GatewayConfig, SupervisorSection, driver_nodes, load, overlay
from .envtime import env_seconds
from .fleet.store import Store
from .freshcheck import fresh_keys, keys_of
from .preflight import embedded_port_busy, preflight, private_problem
from .proc import ActorSpec, Build
from .proc.zygote import clean_path, fingerprint
from .rundir import CONFIG_NOTE
from .supervisor import ChildSpec, GroupFailed, Supervisor
from .supervisor.tally import load_losses, save_losses
from .systemd import Notifier

__all__ = ["Runtime", "GroupFailed", "RuntimeBusy"]

log = logging.getLogger("edgert.runtime")

# seconds between an actor's heartbeats at most (a quarter of heartbeat_timeout when
# that is less): what `edgert status` shows of an actor's figures is this old at most,
# and each beat costs the actor, the supervisor (and a small device) a little work
HEARTBEAT_MAX = 2.0


def heartbeat_max(default: float = HEARTBEAT_MAX) -> float:
    """`default`, or EDGERT_HEARTBEAT_MAX (for tests that wait on an actor's figures in
    the status) when it is a number from 0.05 to 60; anything else there is ignored.
    Read at each start and reload of the gateway."""
    return env_seconds("EDGERT_HEARTBEAT_MAX", default, 0.05, 60)


class RuntimeBusy(Exception):
    """The gateway cannot start here, and nothing was started or left behind: what
    `edgert check` reports as errors (`edgert.preflight`: a directory that cannot be
    made, a runtime directory not safe to use, the embedded NATS server's port taken
    by another program, no nats-server), or another gateway holds the runtime
    directory. One problem per line."""


def _check_private(rdir: Path) -> None:
    """Refuse a runtime dir (or its parent) that another local user owns or can write
    (`edgert.preflight.private_problem`), checked again once it is made."""
    if why := private_problem(rdir):
        raise RuntimeBusy(why)


def _missing(path: Path) -> list[Path]:
    """`path` and the parents of it that do not exist, deepest first: what a
    `mkdir(parents=True)` would make."""
    out = []
    while not path.exists() and path.parent != path:
        out.append(path)
        path = path.parent
    return out


def _unmake(made: list[Path]) -> None:
    """Remove the directories a refused start made, deepest first, if still empty
    (the runtime and data directories may share parents it made)."""
    for d in sorted(set(made), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty (someone else's now), or gone
            d.rmdir()


def _private_dir(path: Path) -> None:
    """Create `path` 0700 (points are private); tighten it if it is ours and looser."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = os.stat(path)
    if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)


RESTART = (
    "a restart of the gateway applies it (`systemctl restart edgert`, or stop and start "
    "`edgert run`): a reload reads the config with the driver code the gateway started with"
)


def overlaid(local: GatewayConfig) -> tuple[GatewayConfig, int | None]:
    """`local` overlaid with the fleet's desired config in its data directory, if managed;
    and that config's revision (what the runtime runs, and what a reload is checked on)."""
    if not local.fleet.enabled:
        return local, None
    d = Store(local.data_dir).current()
    if d is None:
        return local, None
    where = d.where(local.fleet.bucket, local.gateway.id)
    return overlay(local, d.toml, where), d.revision


def _refused_by_old_code(path: str, error: ConfigError) -> None:
    """`error` refused a reload: when it is about a driver and a new interpreter (the
    code installed now) reads the file, raise one saying a restart applies it; else
    return (the file is wrong)."""
    if "[[driver]]" not in str(error):
        return
    try:
        fresh_keys(path, clean_path())
    except ConfigError:
        return
    raise ConfigError(
        f"{error}; the driver code installed since the gateway started reads this file: {RESTART}"
    ) from None


class Runtime:
    def __init__(
        self, config: GatewayConfig, *, log_level: int | None = None, fork_zygote: bool = False
    ) -> None:
        """`fork_zygote`: this process may be its own zygote and fork the actors itself, so
        they share its pages (what `edgert run` does: its process does nothing else, and
        logs to stderr only), while it has a single thread."""
        self.local = config  # the local file, as read
        self.config = config  # what runs: the local file, overlaid when fleet-managed
        self.revision: int | None = None  # the desired config's revision in it, if any
        self.fork_zygote = fork_zygote
        self.log_level = (
            log_level if log_level is not None else logging.getLogger().getEffectiveLevel()
        )
        self._supervisor: Supervisor | None = None
        self._stopped = False
        # each driver module's code (files, mtimes, sizes) as this process imported it
        self._code: dict[str, tuple[Any, ...]] = {}
        self._fresh: dict[str, dict[str, Any]] = {}  # the last new interpreter's answer
        self._born = time.time_ns()  # files changed after it: not the code imported before

    def stop(self, err: BaseException | None = None) -> None:
        """Stop the gateway; returns at once. Safe before, during and after `run`."""
        self._stopped = True
        sup = self._supervisor
        if sup is not None:
            sup.stop(err)

    def run(self) -> None:
        # What `edgert check` reports as errors refuses the start before anything is
        # made; a refusal later on removes the directories this start made.
        self._preflight(self.local)
        rdir = self.local.runtime_dir
        made = _missing(rdir) + _missing(self.local.data_dir)
        started = False
        try:
            with (
                _runtime_dir(rdir, self.local.path, rdir in made),
                contextlib.closing(Notifier()) as notifier,
            ):
                try:
                    _private_dir(self.local.data_dir)
                except OSError as e:
                    raise RuntimeBusy(
                        f'[gateway] data_dir = "{self.local.data_dir}": cannot create it '
                        f"({e.strerror or e})"
                    ) from None
                if self.local.fleet.enabled:
                    self._boot_fleet()
                cfg = self.config
                if cfg is not self.local:  # the fleet's desired config: check it too
                    self._preflight(cfg)
                # A port another program holds (checked again: a gateway killed with
                # its sockets left made `preflight` skip it): restarts cannot help.
                try:
                    busy = embedded_port_busy(cfg)
                except ValueError as e:
                    raise ConfigError(f"{cfg.path}: {e}") from None
                if busy:
                    raise RuntimeBusy(busy)
                started = True
                self._supervise(cfg, rdir, notifier)
        finally:
            if not started:
                _unmake(made)

    def _preflight(self, cfg: GatewayConfig) -> None:
        """Refuse (RuntimeBusy, every error a line) what `edgert check` reports as
        errors; log its warnings."""
        findings = preflight(cfg)
        errors = [f.message for f in findings if f.level == "error"]
        if errors:
            raise RuntimeBusy("\n".join(errors))
        for f in findings:
            log.warning("%s", f.message)

    def _supervise(self, cfg: GatewayConfig, rdir: Path, notifier: Notifier) -> None:
        """Run the supervisor over the actors of `cfg` until it stops."""
        children = self.children()
        _sweep_outboxes(rdir, {cs.spec.name for cs in children}, cfg.data_dir / "losses.json")
        fs = filesystem(rdir)
        ring = cfg.nats.enabled and cfg.gateway.crash_safe_outbox
        if ring and fs not in (None, "tmpfs", "ramfs"):
            log.warning(
                "runtime directory %s is on %s, not a tmpfs: the kernel writes the "
                "drivers' outbox files back to that disk; set [gateway] runtime_dir "
                "under /run (systemd: RuntimeDirectory=) to spare an SD card",
                rdir,
                fs,
            )
        sup = Supervisor(
            children,
            cfg.supervisor,
            gateway_id=cfg.gateway.id,
            control_path=str(rdir / "control.sock"),
            reload=self._reread,
            notifier=notifier,
            losses_path=str(cfg.data_dir / "losses.json"),
            config_revision=self.revision,
            fork_zygote=self.fork_zygote,
        )
        self._supervisor = sup
        if self._stopped:
            sup.stop()
        log.info("gateway %r starting %d actors", cfg.gateway.id, len(sup.children))
        try:
            sup.run()
        finally:
            self._supervisor = None
        log.info("gateway %r stopped", cfg.gateway.id)

    def reload(self) -> None:
        """Re-read the config file (SIGHUP); returns at once.

        Unchanged actors keep running, changed ones restart with their new
        config, removed ones stop, new ones start. A broken config is refused
        (logged) and nothing changes. `[gateway]` cannot change while running.
        """
        sup = self._supervisor
        if sup is not None:
            sup.reload()

    def _reread(self) -> tuple[list[ChildSpec], SupervisorSection, int | None]:
        """Runs in the supervisor's loop: the new config's children, or raise."""
        imported = set(sys.modules)
        try:
            local = load(self.local.path)
        except ConfigError as e:
            _refused_by_old_code(self.local.path, e)
            raise
        if local.gateway != self.local.gateway:
            raise ConfigError(
                f"{local.path}: [gateway] changed; that needs a restart of the gateway"
            )
        new, revision = overlaid(local)
        self._check_new_code(new, local.path, imported, revision)
        self.local, self.config, self.revision = local, new, revision
        return self.children(), new.supervisor, revision

    def _check_new_code(
        self, cfg: GatewayConfig, path: str, imported: set[str], revision: Any
    ) -> None:
        """Raise ConfigError when a driver's code changed since this process imported it
        and the new code does not load, or reads its config with other keys: a reload
        would run it with a config this process's classes made (see `edgert.freshcheck`).
        `cfg`: what would run (overlaid when managed); `path`: the local file;
        `imported`: the modules this process had before it read the file."""
        changed: dict[str, tuple[Any, ...]] = {}
        for d in cfg.drivers:
            mod = d.cls.__module__
            code = fingerprint(mod)
            if mod not in self._code:
                if mod in imported and any(mtime > self._born for _, mtime, _ in code):
                    changed[d.type] = code  # imported before, and its files changed since
                    continue
                self._code[mod] = code  # imported by this read, or unchanged since
            elif self._code[mod] != code:
                changed[d.type] = code
        if not changed:
            return
        key = repr((Path(path).read_bytes(), revision, sorted(changed.items())))
        fresh = self._fresh.get(key)
        if fresh is None:
            try:
                fresh = fresh_keys(path, clean_path())
            except ConfigError as e:
                raise ConfigError(
                    f"the driver code installed since the gateway started does not load: {e}"
                ) from None
            self._fresh = {key: fresh}  # the last answer: the next reload may ask again
        for d in cfg.drivers:
            if d.type in changed and fresh.get(d.type) != keys_of(d.cls):
                raise ConfigError(
                    f"driver type {d.type!r}: the code installed since the gateway started "
                    f"reads its config with other keys; {RESTART}"
                )

    # -- the fleet's desired config -----------------------------------------------------
    def _boot_fleet(self) -> None:
        """At start: roll back a revision left pending, then run the last applied one
        (or the local file alone, if that one cannot run here any more)."""
        store = Store(self.local.data_dir)
        if out := store.boot():
            log.warning("fleet: %s: rolled back", out.error)
        try:
            self.config, self.revision = overlaid(self.local)
        except ConfigError as e:
            log.error("fleet: the last applied config cannot run: %s; running the local file", e)
            self.config, self.revision = self.local, None
        if self.revision is not None:
            log.info("fleet: running revision %d of the desired config", self.revision)

    # -- what to run ------------------------------------------------------------------
    def _fleet_actor(self) -> bool:
        """The fleet actor runs when the local file says the gateway is managed."""
        return self.local.fleet.enabled and self.local.nats.enabled

    def children(self) -> list[ChildSpec]:
        cfg = self.config
        sp = cfg.supervisor
        rdir = str(cfg.runtime_dir)
        hb = max(0.05, min(heartbeat_max(), sp.heartbeat_timeout / 4))
        # with no bridge, nobody acknowledges: a stopping driver need not wait for it
        drain = max(0.1, sp.shutdown_timeout / 2) if cfg.nats.enabled else 0.0

        def spec(name: str, cls: type | str, conf: Any) -> ActorSpec:
            return ActorSpec(
                name=name,
                cls=cls,
                config=conf,
                runtime_dir=rdir,
                heartbeat_interval=hb,
                drain_timeout=drain,
                crash_safe=cfg.nats.enabled and cfg.gateway.crash_safe_outbox,
                log_level=self.log_level,
            )

        # The bridge and the embedded server are named, not imported: the supervisor
        # never loads asyncio, nats or sqlite3; their processes do.
        runtime_code = fingerprint("edgert")
        out: list[ChildSpec] = []
        if cfg.nats.embedded:  # nats-server itself, no Python process minding it
            server = natsserver.program(cfg.nats, str(cfg.data_dir), rdir)
            out.append(ChildSpec(server, "permanent", tier=0, kind="nats", critical=True))
        if cfg.nats.enabled:
            bconf = Build(
                "edgert.bridge.actor:BridgeConfig",
                {
                    "gateway_id": cfg.gateway.id,
                    "clock": cfg.gateway.clock,
                    "clock_hold": float(cfg.gateway.clock_hold),
                    "runtime_dir": rdir,
                    "data_dir": str(cfg.data_dir),
                    "nats": cfg.nats,
                    "routes": {node: d.name for d in cfg.drivers for node in driver_nodes(d)},
                    "service": not self._fleet_actor(),
                },
            )
            out.append(
                ChildSpec(
                    spec("bridge", "edgert.bridge.actor:Bridge", bconf),
                    "permanent",
                    tier=1,
                    kind="bridge",
                    critical=True,
                    code=runtime_code,
                    wants_status=True,
                    preload=False,  # asyncio, nats, sqlite3: imported after its fork
                )
            )
        if self._fleet_actor():
            # Its config comes from the local file alone (its own [nats] included), so a
            # pushed config never cuts the gateway off from the fleet that manages it.
            local = self.local
            fconf = Build(
                "edgert.fleet.actor:FleetConfig",
                {
                    "gateway_id": local.gateway.id,
                    "runtime_dir": rdir,
                    "data_dir": str(local.data_dir),
                    "config_path": local.path,
                    "nats": local.nats,
                    "fleet": local.fleet,
                },
            )
            out.append(
                ChildSpec(
                    spec("fleet", "edgert.fleet.actor:Fleet", fconf),
                    "permanent",
                    tier=1,
                    kind="fleet",
                    code=runtime_code,
                    wants_status=True,
                    preload=False,
                )
            )
        for d in cfg.drivers:  # the code each module had when this process imported it
            code = fingerprint(d.cls.__module__)
            conf = d.config
            if self._code.setdefault(d.cls.__module__, code) != code:
                # new code since: its config made in its process, by its own class
                conf = Build(
                    "edgert.config:driver_config",
                    {"type_name": d.type, "table": d.raw, "where": f"[[driver]] {d.name!r}"},
                )
            out.append(
                ChildSpec(
                    spec(d.name, d.cls, conf),
                    d.restart,
                    tier=2,
                    kind=d.type,
                    critical=d.critical,
                    code=code,
                )
            )
        return out


@contextlib.contextmanager
def _runtime_dir(rdir: Path, config_path: str, made: bool) -> Iterator[None]:
    """Create the runtime directory 0700, hold its lock, note the config file's path
    (`edgert cmd` finds it there), clean its sockets after, and remove it when it is
    left empty if this start `made` it (ring files kept after a crash keep it)."""
    try:
        rdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise RuntimeBusy(
            f'[gateway] runtime_dir = "{rdir}": cannot create it ({e.strerror or e})'
        ) from None
    _check_private(rdir)
    os.chmod(rdir, 0o700)
    lock_path = rdir / "lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise RuntimeBusy(
                f"another gateway (pid {pid}) is running with runtime directory {rdir}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _remove_sockets(rdir)
        note = rdir / CONFIG_NOTE
        with contextlib.suppress(OSError):
            note.unlink(missing_ok=True)
            if os.path.isfile(config_path):
                note.write_text(os.path.abspath(config_path) + "\n")
        try:
            yield
        finally:
            _remove_sockets(rdir)
            with contextlib.suppress(OSError):
                note.unlink()
            with contextlib.suppress(OSError):
                os.unlink(lock_path)
            for d in (rdir / "outbox", rdir) if made else (rdir / "outbox",):
                with contextlib.suppress(OSError):  # not empty: a ring file kept, or more
                    d.rmdir()
    finally:
        os.close(fd)


def _sweep_outboxes(rdir: Path, names: set[str], losses_path: Path) -> None:
    """Drop the ring files of actors no longer in the config (a crash left them); their
    points count as lost at stop (`losses_path`, as the supervisor counts them)."""
    lost_by_name: dict[str, int] = {}
    for p in (rdir / "outbox").glob("*.ring*"):
        name = p.name.removesuffix(".ring")
        if not p.name.endswith(".ring"):  # a recovery that died before its rename
            p.unlink(missing_ok=True)
            continue
        if name in names:
            continue  # its actor sends what it holds when it starts
        lost = discard(p)
        if lost:
            log.warning("lost %d points of actor %r, which is no longer configured", lost, name)
            lost_by_name[name] = lost
    if lost_by_name:
        losses = load_losses(losses_path)
        for name, lost in lost_by_name.items():
            losses[name] = losses.get(name, 0) + lost
        save_losses(losses_path, losses)


def _remove_sockets(rdir: Path) -> None:
    for p in rdir.glob("*.sock"):
        with contextlib.suppress(OSError):
            p.unlink()
