"""`edgert run`, `check` and `status` as a user runs them: real subprocesses, real signals.

What only prints text (help, refused configs) runs in-process with click's
CliRunner; what the commands import is checked in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from edgert.cli import LAZY, cli
from edgert.testing import descendants, pid_alive, wait_for
from edgert.testing.configs import fault_driver, gateway_toml, sim_driver, supervisor

EDGERT = [sys.executable, "-m", "edgert"]


def write(
    d: Path, mode: str = "run", after: float = 0.0, intensity: int = 5, critical: bool = False
) -> Path:
    """Gateway "cli" in `d`: a sim counter and `flaky`, a FaultActor in `mode`."""
    sup = supervisor(0.05, 0.2, intensity=intensity, period=30, shutdown_timeout=2, failed_retry=60)
    flaky = fault_driver("flaky", mode=mode, after=after, critical=critical)
    p = d / "gw.toml"
    p.write_text(gateway_toml(d, sup + sim_driver() + flaky, "cli"))
    return p


def edgert(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGERT, *args], capture_output=True, text=True, timeout=timeout)


def invoke(*args: str) -> Result:
    """`edgert ARGS` in this process, stdout and stderr apart."""
    try:
        runner = CliRunner(mix_stderr=False)  # click < 8.2 mixes them by default
    except TypeError:
        runner = CliRunner()  # click >= 8.2 always keeps them apart
    return runner.invoke(cli, list(args), prog_name="edgert")


def status_json(cfg: Path) -> dict:
    r = edgert("status", "--config", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def start(cfg: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*EDGERT, "run", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def all_running(cfg: Path) -> dict | None:
    try:
        s = status_json(cfg)
    except AssertionError:
        return None
    return s if all(a["state"] == "running" for a in s["actors"]) else None


def kill_tree(proc: subprocess.Popen[str], kids: set[int]) -> None:
    proc.kill()
    proc.wait()
    for p in kids:
        if pid_alive(p):
            os.kill(p, signal.SIGKILL)


def test_sigterm_stops_cleanly(short_dir: Path) -> None:
    cfg = write(short_dir)
    proc = start(cfg)
    try:
        wait_for(lambda: all_running(cfg), 20, "all actors running")
        kids = descendants(proc.pid)
        assert len(kids) >= 3  # bridge, drivers: forked by `edgert run` itself
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=2 + 10)  # shutdown_timeout, and room for a loaded machine
    finally:
        if proc.poll() is None:
            kill_tree(proc, descendants(proc.pid))
    assert code == 0, proc.stderr.read()
    wait_for(lambda: not any(pid_alive(p) for p in kids), 5, "no child left")
    run = short_dir / "run"
    assert not list(run.glob("*.sock")) and not (run / "lock").exists()


def test_sigkill_of_edgert_run_takes_every_child_with_it(short_dir: Path) -> None:
    cfg = write(short_dir)
    proc = start(cfg)
    try:
        wait_for(lambda: all_running(cfg), 20, "all actors running")
        kids = descendants(proc.pid)
        assert kids
        proc.kill()
        proc.wait()
        # A child left behind fails this; a loaded machine's slow reaping does not.
        wait_for(lambda: not any(pid_alive(p) for p in kids), 5, "every child gone", 0.01)
    finally:
        kill_tree(proc, kids)


def test_a_critical_driver_given_up_on_tears_down_and_exits_1(short_dir: Path) -> None:
    cfg = write(short_dir, mode="crash", after=0.05, intensity=3, critical=True)
    proc = start(cfg)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            seen |= descendants(proc.pid)
            try:
                proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            kill_tree(proc, seen)
    err = proc.stderr.read()
    assert code == 1, err
    assert "torn down" in err and "'flaky'" in err and "FaultActor crashed on purpose" in err
    wait_for(lambda: not any(pid_alive(p) for p in seen), 2, "no child left")


def test_a_failed_driver_is_shown_and_the_gateway_keeps_running(short_dir: Path) -> None:
    cfg = write(short_dir, mode="crash", after=0.0, intensity=2)
    proc = start(cfg)
    try:

        def failed() -> dict | None:
            by = {a["name"]: a for a in status_json(cfg)["actors"]}
            return by if by["flaky"]["state"] == "failed" else None

        by = wait_for(failed, 30, "flaky failed")
        assert by["flaky"]["pid"] is None and by["flaky"]["retry_in"] > 0
        assert by["gen"]["state"] == "running" and by["gen"]["restarts"] == 0
        table = edgert("status", "--config", str(cfg))
        assert table.returncode == 0, table.stderr
        row = next(line for line in table.stdout.splitlines() if line.startswith("flaky"))
        assert " failed " in row and "retry in" in row and "crashed on purpose" in row
        assert proc.poll() is None  # still running
    finally:
        proc.terminate()
        code = proc.wait(timeout=10)
    assert code == 0


def test_drivers_start_whatever_the_working_directory_holds(short_dir: Path) -> None:
    """A folder named `edgert` or `drivers/sim` in the working directory is not imported."""
    cwd = short_dir / "home"
    for pkg in ("edgert", "drivers", "drivers/sim", "edgert_drivers", "edgert_drivers/sim"):
        (cwd / pkg).mkdir(parents=True)
        (cwd / pkg / "__init__.py").write_text("raise ImportError('the wrong package')\n")
    cfg = write(short_dir)
    exe = Path(sys.executable).parent / "edgert"  # as installed: not `python -m` from cwd
    proc = subprocess.Popen(
        [str(exe), "run", str(cfg)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        s = wait_for(lambda: all_running(cfg), 30, "every actor running")
        assert {a["name"] for a in s["actors"]} == {"bridge", "gen", "flaky"}
        assert all(a["restarts"] == 0 for a in s["actors"])
    finally:
        proc.terminate()
        code = proc.wait(timeout=10)
    assert code == 0, proc.stderr.read()


def test_status_json_reflects_a_restart_after_kill(short_dir: Path) -> None:
    cfg = write(short_dir)
    proc = start(cfg)
    try:
        s = wait_for(lambda: all_running(cfg), 20, "all actors running")
        by = {a["name"]: a for a in s["actors"]}
        assert set(by["gen"]) >= {
            "name",
            "pid",
            "state",
            "restarts",
            "last_error",
            "uptime",
            "points_out",
            "buffered",
        }
        assert s["gateway"] == "cli"
        old = by["gen"]["pid"]
        os.kill(old, signal.SIGKILL)

        def restarted() -> dict | None:
            g = {a["name"]: a for a in status_json(cfg)["actors"]}["gen"]
            return (
                g
                if g["restarts"] == 1 and g["pid"] not in (None, old) and g["state"] == "running"
                else None
            )

        g = wait_for(restarted, 15, "restart visible in status")
        assert "SIGKILL" in g["last_error"]
        table = edgert("status", "--config", str(cfg))
        assert table.returncode == 0 and "gen" in table.stdout and "running" in table.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kill_tree(proc, descendants(proc.pid))


def test_status_without_a_gateway_is_a_clear_error(short_dir: Path) -> None:
    r = edgert("status", "--runtime-dir", str(short_dir / "nothing"))
    assert r.returncode == 1
    assert "no gateway is running" in r.stderr and "Traceback" not in r.stderr


BAD = {
    "unknown key": ('[[driver]]\nname = "a"\ntype = "sim"\nbogus = 1\n', "unknown key 'bogus'"),
    "wrong type": ('[supervisor]\nintensity = "five"\n', "key 'intensity' must be an integer"),
    "duplicate name": (
        '[[driver]]\nname = "a"\ntype = "sim"\n[[driver]]\nname = "a"\ntype = "sim"\n',
        "duplicate driver name 'a'",
    ),
    "unknown driver type": (
        '[[driver]]\nname = "a"\ntype = "nosuch"\n',
        "unknown driver type 'nosuch'",
    ),
    "bad name chars": ('[[driver]]\nname = "a b"\ntype = "sim"\n', "key 'name' value 'a b'"),
    "bad signal key": (
        '[[driver]]\nname = "a"\ntype = "sim"\n[[driver.signal]]\nname = "x"\nrate = -1\n',
        "key 'rate' must be > 0",
    ),
    "not toml": ("[[driver\n", "not valid TOML"),
    "critical not a bool": (
        '[[driver]]\nname = "a"\ntype = "sim"\ncritical = "yes"\n',
        "key 'critical' must be true or false",
    ),
    "negative failed_retry": ("[supervisor]\nfailed_retry = -1.0\n", "key 'failed_retry'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_is_refused_with_exit_2(short_dir: Path, case: str) -> None:
    body, expected = BAD[case]
    cfg = short_dir / "bad.toml"
    cfg.write_text(gateway_toml(short_dir, body, "bad"))
    for cmd in ("check", "run"):
        r = invoke(cmd, str(cfg))
        assert r.exit_code == 2, (cmd, r.stdout, r.stderr)
        assert expected in r.stderr and str(cfg) in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    assert not (short_dir / "run").exists()  # nothing started


def test_check_accepts_a_good_config(short_dir: Path) -> None:
    r = edgert("check", str(write(short_dir)))
    assert r.returncode == 0 and "ok" in r.stdout


def test_help_has_examples() -> None:
    commands = (
        *("run", "check", "status", "reload", "drivers", "tail", "values", "cmd", "bench"),
        "new-driver",
    )
    for cmd in (*commands, "sim modbus", "sim gpio"):
        r = invoke(*cmd.split(), "--help")
        assert r.exit_code == 0 and "Example" in r.stdout, (cmd, r.output)


def test_top_level_help_lists_every_command_with_its_own_summary() -> None:
    lazy = invoke("--help").stdout  # may or may not have loaded the commands before
    for name in LAZY:
        assert cli.get_command(None, name) is not None, name  # type: ignore[arg-type]
    loaded = invoke("--help").stdout  # every summary now from the command itself
    assert lazy == loaded
    for name in ("run", "check", "status", "reload", "drivers", *LAZY):
        assert f"\n  {name} " in loaded, name


LEAN_PROBE = """
import json, sys
from edgert.cli import main
sys.argv = ["edgert", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""
HEAVY = {
    "asyncio",
    "nats",
    "sqlite3",
    "ssl",
    "edgert.bridge",
    "edgert.spool",
    "edgert.actor",
    "rich",
}


@pytest.mark.parametrize(
    "args",
    [["--help"], ["status", "--runtime-dir", "/nonexistent/edgert"], ["drivers", "--help"]],
    ids=["help", "status", "drivers-help"],
)
def test_the_cli_starts_without_loading_the_runtime(args: list[str]) -> None:
    r = subprocess.run(
        [sys.executable, "-c", LEAN_PROBE, *args], capture_output=True, text=True, timeout=60
    )
    loaded = set(json.loads(r.stderr.splitlines()[-1]))
    assert "edgert.cli" in loaded
    assert not HEAVY & loaded, sorted(HEAVY & loaded)
    if args == ["--help"]:
        assert not {"zmq", "msgpack"} & loaded


def test_new_driver_names_the_running_interpreter(tmp_path: Path) -> None:
    r = invoke("new-driver", "thermo", "--dir", str(tmp_path))
    assert r.exit_code == 0, r.output
    nxt = [line for line in r.stdout.splitlines() if line.startswith("next:")]
    assert nxt and f"{sys.executable} -m pip install -e" in nxt[0], r.stdout
    assert f"{sys.executable} -m pytest -q" in nxt[0], r.stdout


def test_driver_type_in_an_uninstalled_package_says_how_to_fix_it() -> None:
    from edgert.config import resolve_driver

    with pytest.raises(LookupError) as e:
        resolve_driver("nosuchpkg_xyz.hello:Hello")
    assert "No module named 'nosuchpkg_xyz'" in str(e.value)
    assert "not on the import path" in str(e.value) and "PYTHONPATH" in str(e.value)
    with pytest.raises(LookupError) as e:  # the package exists, a submodule does not
        resolve_driver("edgert.nosuchmod_xyz:Hello")
    assert "PYTHONPATH" not in str(e.value)


def test_a_closed_pipe_on_stdout_ends_quietly() -> None:
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first line (`edgert ... | head -0`)
    try:
        p = subprocess.run(
            [*EDGERT, "drivers"], stdout=w, stderr=subprocess.PIPE, text=True, timeout=20
        )
    finally:
        os.close(w)
    assert p.returncode == 0, p.stderr
    assert "Broken pipe" not in p.stderr and "Traceback" not in p.stderr, p.stderr


# One format for every error, whatever raised it: click's parser, a command's own
# refusal, a bad config, a preflight finding.
ERRORS = {
    "missing argument": (["run"], 2, "missing argument 'CONFIG' (usage: edgert run"),
    "no such option": (["run", "--bogus", "x.toml"], 2, "--bogus"),  # click words it by version
    "no such command": (["bogus"], 2, "no such command 'bogus' (edgert --help lists them)"),
    "bad parameter": (["new-driver", "Thermo"], 2, "invalid value for NAME: 'Thermo'"),
    "a usage refusal": (
        ["status", "--config", "a.toml", "--runtime-dir", "b"],
        2,
        "give --config FILE or --runtime-dir DIR, not both",
    ),
    "nothing running": (["status", "--runtime-dir", "{d}/none"], 1, "no gateway is running"),
    "a bad config": (["check", "{d}/bad.toml"], 2, "{d}/bad.toml: [nats]: unknown key 'embeded'"),
    "a preflight error": (["check", "{d}/proc.toml"], 2, '[gateway] runtime_dir = "/proc/x"'),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_every_error_is_one_line_in_one_format(short_dir: Path, case: str) -> None:
    args, code, expected = ERRORS[case]
    (short_dir / "bad.toml").write_text('[gateway]\nid = "x"\n[nats]\nembeded = true\n')
    (short_dir / "proc.toml").write_text('[gateway]\nid = "x"\nruntime_dir = "/proc/x"\n')
    r = invoke(*(a.format(d=short_dir) for a in args))
    assert r.exit_code == code, (r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("edgert: error: ") and expected.format(d=short_dir) in lines[0]


def test_edgert_alone_prints_its_help() -> None:
    r = invoke()
    assert r.exit_code in (0, 2)  # click >= 8.2 exits 2, like any usage error
    assert "Commands:" in r.stdout + r.stderr and "edgert: error" not in r.stderr


def test_without_a_bridge_points_held_at_stop_are_discarded_not_lost(short_dir: Path) -> None:
    cfg = short_dir / "gw.toml"
    cfg.write_text(
        f'[gateway]\nid = "nb"\nruntime_dir = "{short_dir}/run"\ndata_dir = "{short_dir}/data"\n'
        '[nats]\nenabled = false\n[[driver]]\nname = "gen"\ntype = "sim"\n'
        '[[driver.signal]]\nname = "n"\nshape = "counter"\nrate = 50.0\n'
    )
    proc = start(cfg)
    try:
        wait_for(
            lambda: (s := all_running(cfg)) and s["actors"][0]["points_out"] >= 5, 30, "points"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "lost at stop" not in err and "WARNING" not in err, err
    said = [line for line in err.splitlines() if "points discarded: no bridge configured" in line]
    assert len(said) == 1 and " INFO " in said[0], err
    n = int(said[0].split("gen: ", 1)[1].split()[0])
    tally = json.loads((short_dir / "data" / "losses.json").read_text())
    assert n > 0 and tally["lost_at_stop"] == {"gen": n}  # still counted


@pytest.mark.parametrize("args", [["run"], ["check"], ["status", "--config"]])
def test_a_config_missing_from_the_working_directory_names_it(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(short_dir)  # the clone is elsewhere: `cd ~ && edgert run configs/...`
    r = invoke(*args, "configs/demo.toml")
    assert r.exit_code == 2, r.stderr
    assert r.stderr.splitlines() == [
        "edgert: error: configs/demo.toml: cannot read: No such file or directory "
        f"(in the working directory {short_dir})"
    ]
