"""Reload (SIGHUP, `edgert reload`): unchanged drivers keep running, changed ones
restart with their new config, removed ones stop, new ones start, a broken config
is refused and changes nothing."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgert.config import ConfigError, GatewayConfig
from edgert.control import ControlError, request
from edgert.testing import pid_alive, running_gateway, status, wait_for


def sim(name: str, rate: float = 20.0) -> str:
    return (
        f'[[driver]]\nname = "{name}"\ntype = "sim"\n'
        f'[[driver.signal]]\nname = "n"\nshape = "counter"\nrate = {rate}\n'
    )


def rewrite(cfg: GatewayConfig, body: str) -> None:
    """Keep the file's [gateway] table, replace everything after it."""
    path = Path(cfg.path)
    head = path.read_text().split("\n\n", 1)[0]
    path.write_text(f"{head}\n\n{body}")


def running(cfg: GatewayConfig, *names: str) -> dict | None:
    s = status(cfg)["by_name"]
    ok = all(n in s and s[n]["state"] == "running" and s[n]["pid"] for n in names)
    return s if ok else None


def test_reload_keeps_unchanged_restarts_changed_adds_and_removes(make_config, caplog) -> None:
    caplog.set_level(logging.INFO, logger="edgert.supervisor")
    cfg = make_config("[nats]\nenabled = false\n" + sim("keep") + sim("change") + sim("drop"))
    with running_gateway(cfg) as rt:
        before = wait_for(lambda: running(cfg, "keep", "change", "drop"), 20, "all running")
        rewrite(cfg, "[nats]\nenabled = false\n" + sim("keep") + sim("change", 5.0) + sim("new"))
        rt.reload()
        after = wait_for(
            lambda: (
                (s := running(cfg, "keep", "change", "new"))
                and "drop" not in s
                and s["change"]["pid"] != before["change"]["pid"]
                and s
            ),
            20,
            "the reload applied",
        )
        assert after["keep"]["pid"] == before["keep"]["pid"]
        assert after["keep"]["restarts"] == 0
        wait_for(lambda: not pid_alive(before["drop"]["pid"]), 5, "the removed driver gone")
        wait_for(lambda: not pid_alive(before["change"]["pid"]), 5, "the old process gone")
    said = [r.getMessage() for r in caplog.records]  # what each process did, in the log
    assert "change: stopped for the reload (exit code 0)" in said, said
    assert "drop: stopped for the reload (exit code 0)" in said and "drop: removed" in said


def test_broken_config_is_refused_and_nothing_changes(make_config) -> None:
    cfg = make_config("[nats]\nenabled = false\n" + sim("a") + sim("b"))
    edgert = [sys.executable, "-m", "edgert", "reload", "--config", cfg.path]
    with running_gateway(cfg):
        before = wait_for(lambda: running(cfg, "a", "b"), 20, "all running")
        rewrite(cfg, "[nats]\nenabled = false\n" + sim("a") + sim("b", -1.0))
        r = subprocess.run(edgert, capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "'rate' must be > 0" in r.stderr, r.stderr
        # the gateway itself refuses it too (SIGHUP takes this path)
        with pytest.raises(ControlError, match="reload refused.*'rate' must be > 0"):
            request(cfg.runtime_dir, "reload")
        rewrite(cfg, "[nats]\nenabled = false\n" + sim("a") + sim("b"))
        path = Path(cfg.path)
        path.write_text(path.read_text().replace('id = "gw"', 'id = "other"'))
        with pytest.raises(ControlError, match=r"\[gateway\] changed"):
            request(cfg.runtime_dir, "reload")
        s = status(cfg)["by_name"]
        assert {n: s[n]["pid"] for n in "ab"} == {n: before[n]["pid"] for n in "ab"}
        assert s["a"]["restarts"] == s["b"]["restarts"] == 0
        path.write_text(path.read_text().replace('id = "other"', 'id = "gw"'))
        rewrite(cfg, "[nats]\nenabled = false\n" + sim("a"))
        r = subprocess.run(edgert, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "removed: b" in r.stdout, r.stderr
        wait_for(lambda: "b" not in status(cfg)["by_name"], 10, "b removed")


def test_sighup_to_edgert_run_reloads(short_dir: Path) -> None:
    path = short_dir / "gw.toml"
    head = (
        f'[gateway]\nid = "hup"\nruntime_dir = "{short_dir}/run"\n'
        f'data_dir = "{short_dir}/data"\n[nats]\nenabled = false\n'
    )
    path.write_text(head + sim("a"))
    edgert = [sys.executable, "-m", "edgert"]
    proc = subprocess.Popen(
        [*edgert, "run", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        from edgert.config import load

        cfg = load(path)
        wait_for(lambda: running(cfg, "a"), 20, "a running")
        path.write_text(head + sim("a") + sim("b"))
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: running(cfg, "a", "b"), 20, "b started by SIGHUP")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


UPGRADABLE = """
from edgert.actor import Actor, Stop


class Up(Actor):
    def run(self, ctx):
        ctx.report(version={version!r})
        while not isinstance(ctx.receive(0.05), Stop):
            pass
"""


def test_reload_after_an_upgrade_runs_the_new_code(make_config, short_dir, monkeypatch) -> None:
    """`pip install -U mydriver && edgert reload`: the driver restarts with its new code
    (a new zygote preloads it), while a driver whose code did not change keeps running."""
    pkgs = short_dir / "site"
    src = pkgs / "updrv" / "__init__.py"
    src.parent.mkdir(parents=True)
    src.write_text(UPGRADABLE.format(version="one"))
    monkeypatch.setenv("PYTHONPATH", str(pkgs))
    monkeypatch.syspath_prepend(str(pkgs))
    body = '[nats]\nenabled = false\n[[driver]]\nname = "up"\ntype = "updrv:Up"\n' + sim("keep")
    cfg = make_config(body)

    def version() -> tuple[str, int] | None:
        a = status(cfg)["by_name"]["up"]
        return (a["stats"].get("version"), a["pid"]) if a["state"] == "running" else None

    with running_gateway(cfg) as rt:
        v, pid = wait_for(lambda: (v := version()) and v[0] and v, 20, "the driver's version")
        assert v == "one"
        keep = wait_for(lambda: running(cfg, "keep"), 20, "keep running")["keep"]["pid"]
        src.write_text(UPGRADABLE.format(version="two, upgraded"))
        st = src.stat()
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
        rt.reload()
        v2, pid2 = wait_for(
            lambda: (v := version()) and v[1] != pid and v[0] and v, 20, "the restarted driver"
        )
        assert v2 == "two, upgraded"
        assert status(cfg)["by_name"]["keep"]["pid"] == keep


KEYED = """
from dataclasses import dataclass, field

print("keyed: imported")  # a driver may print: the check's answer is on a line of its own

from edgert.actor import Actor, Stop


@dataclass
class UpConfig:
    gain: float = 1.0
{more}

class Up(Actor[UpConfig]):
    def run(self, ctx):
        ctx.report(version={version!r}{report})
        while not isinstance(ctx.receive(0.05), Stop):
            pass
"""
TAGS = '    tags: list[str] = field(default_factory=list, metadata={"doc": "tags"})\n'


def test_a_reload_the_installed_code_reads_otherwise_is_refused_and_says_restart(
    make_config, short_dir, monkeypatch
) -> None:
    """New driver code that reads its config with other keys, or does not load: a reload
    would hand it a config made by the old class, or replace a healthy driver with one
    that fails at every start. Refused, the driver untouched, the reason named (checked
    in a new interpreter, as a restart would load the code)."""
    pkgs = short_dir / "site"
    src = pkgs / "keyed" / "__init__.py"  # a module no other test imports
    src.parent.mkdir(parents=True)
    monkeypatch.setenv("PYTHONPATH", str(pkgs))
    monkeypatch.syspath_prepend(str(pkgs))

    def install(text: str) -> None:
        src.write_text(text)
        st = src.stat()  # a later mtime, whatever the file system's resolution
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))

    install(KEYED.format(more="", version="one", report=""))
    body = '[nats]\nenabled = false\n[[driver]]\nname = "up"\ntype = "keyed:Up"\n'
    cfg = make_config(body)
    with running_gateway(cfg):
        up = wait_for(lambda: running(cfg, "up"), 20, "up running")["up"]
        install(KEYED.format(more=TAGS, version="two", report=", tags=len(ctx.config.tags)"))
        with pytest.raises(ControlError, match=r"'keyed:Up'.* other keys; a restart .*applies"):
            request(cfg.runtime_dir, "reload")
        install("from edgert.actor import Actor\nclass Up(Actor)\n")  # no colon
        with pytest.raises(ControlError, match=r"does not load: .*__init__.py, line 2"):
            request(cfg.runtime_dir, "reload")
        install(KEYED.format(more=TAGS, version="two", report=""))
        rewrite(cfg, body + 'tags = ["a"]\n')  # a key the old class does not know
        with pytest.raises(ControlError, match=r"unknown key 'tags'.*a restart .*applies"):
            request(cfg.runtime_dir, "reload")
        s = status(cfg)["by_name"]["up"]
        assert (s["pid"], s["restarts"], s["stats"].get("version")) == (up["pid"], 0, "one")


SLOW = """
import time

from edgert.actor import Actor, Stop

time.sleep({seconds})  # a heavy import (a numerical library on a small device)


class Slow(Actor):
    def run(self, ctx):
        while not isinstance(ctx.receive(0.05), Stop):
            pass
"""


def test_a_reload_that_waits_for_new_code_kills_no_healthy_driver(
    make_config, short_dir, monkeypatch
) -> None:
    """The check of new code (a new interpreter importing it) and the new zygote's preload
    keep the supervisor from reading heartbeats for longer than `heartbeat_timeout`:
    that time is not the drivers', and none of them is killed as hung for it."""
    pkgs = short_dir / "site"
    src = pkgs / "slowdrv" / "__init__.py"
    src.parent.mkdir(parents=True)
    src.write_text(SLOW.format(seconds=0.0))
    monkeypatch.setenv("PYTHONPATH", str(pkgs))
    monkeypatch.syspath_prepend(str(pkgs))
    body = (
        "[supervisor]\nheartbeat_timeout = 1.0\n[nats]\nenabled = false\n"
        '[[driver]]\nname = "slow"\ntype = "slowdrv:Slow"\n' + sim("keep")
    )
    cfg = make_config(body)
    with running_gateway(cfg):
        before = wait_for(lambda: running(cfg, "slow", "keep"), 20, "both running")
        src.write_text(SLOW.format(seconds=1.5))  # new code: checked, then preloaded
        st = src.stat()
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
        reply = request(cfg.runtime_dir, "reload", timeout=60)
        assert reply["changes"]["changed"] == ["slow"], reply
        after = wait_for(
            lambda: (
                (s := running(cfg, "slow", "keep"))
                and s["slow"]["pid"] != before["slow"]["pid"]
                and s
            ),
            30,
            "slow restarted with its new code",
        )
        assert after["keep"]["pid"] == before["keep"]["pid"]
        assert after["keep"]["restarts"] == 0 and after["keep"]["last_error"] in (None, "")


POST_INIT = """    scale: float = field(init=False)

    def __post_init__(self):
        self.scale = self.gain * 2
"""


def test_new_driver_code_gets_a_config_made_by_its_own_class(
    make_config, short_dir, monkeypatch
) -> None:
    """New code whose config class reads the same keys but makes more of them (an
    `init=False` field set in `__post_init__`): the reload applies, and the restarted
    driver's config is made in its process by its new class, not unpickled from the
    supervisor's old one (which has no `scale`)."""
    pkgs = short_dir / "site"
    src = pkgs / "scaled" / "__init__.py"  # a module no other test imports
    src.parent.mkdir(parents=True)
    monkeypatch.setenv("PYTHONPATH", str(pkgs))
    monkeypatch.syspath_prepend(str(pkgs))
    src.write_text(KEYED.format(more="", version="one", report=""))
    body = '[nats]\nenabled = false\n[[driver]]\nname = "up"\ntype = "scaled:Up"\ngain = 3.0\n'
    cfg = make_config(body)
    with running_gateway(cfg):
        up = wait_for(lambda: running(cfg, "up"), 20, "up running")["up"]
        src.write_text(
            KEYED.format(more=POST_INIT, version="two", report=", scale=ctx.config.scale")
        )
        st = src.stat()
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
        reply = request(cfg.runtime_dir, "reload")
        assert reply["changes"]["changed"] == ["up"], reply
        stats = wait_for(
            lambda: (
                (a := status(cfg)["by_name"]["up"])["pid"] != up["pid"]
                and a["stats"].get("version") == "two"
                and a["stats"]
            ),
            20,
            "the new code running",
        )
        assert stats["scale"] == 6.0
        assert status(cfg)["by_name"]["up"]["restarts"] == 0  # started once, never failed


def test_the_check_of_new_code_reads_the_fleets_desired_config_as_the_gateway_runs_it(
    short_dir: Path,
) -> None:
    """A managed gateway runs its local file with the fleet's desired config on top, where
    pushed drivers live: the new interpreter's check reads that, not the file alone."""
    from edgert.fleet.store import Desired, Store
    from edgert.freshcheck import fresh_keys
    from edgert.proc.zygote import clean_path

    path = short_dir / "gw.toml"
    path.write_text(
        f'[gateway]\nid = "fl"\nruntime_dir = "{short_dir}/run"\n'
        f'data_dir = "{short_dir}/data"\n[fleet]\nenabled = true\n'
    )
    assert fresh_keys(str(path), clean_path()) == {}  # the local file runs no driver
    (short_dir / "data").mkdir()
    Store(str(short_dir / "data")).accept(Desired(1, sim("pushed")))
    keys = fresh_keys(str(path), clean_path())
    assert list(keys) == ["sim"] and ["driver.signal", "rate"] in [k[:2] for k in keys["sim"]]
    Store(str(short_dir / "data")).try_(Desired(2, sim("pushed").replace('"sim"', '"nosuch"')))
    with pytest.raises(ConfigError, match="nosuch"):  # the revision being tried is read
        fresh_keys(str(path), clean_path())
