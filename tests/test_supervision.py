"""Supervision of actor processes: restart types, backoff, kills, hangs, isolation.

Each test runs a real gateway (`Runtime` in a thread) whose actors are real OS
processes, and waits for conditions with deadlines.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from edgert.runtime import GroupFailed
from edgert.testing import descendants, pid_alive, running_gateway, status, wait_for
from edgert.testing.configs import fault_driver as fault
from edgert.testing.configs import keys, nats_section, sim_driver, supervisor


def fast(**more: object) -> str:
    """Restarts within a second, twenty of them allowed (`more`: other keys)."""
    base = {"backoff_max": 1.0, "intensity": 20, "period": 30, "shutdown_timeout": 3}
    return supervisor(0.2, **(base | more))


SIM = sim_driver(rate=50.0)


def actor(cfg, name):
    return status(cfg)["by_name"][name]


def test_raising_driver_is_restarted_with_backoff(make_config) -> None:
    cfg = make_config(fast() + fault("bad", mode="crash", after=0.05))
    with running_gateway(cfg):
        a = wait_for(lambda: (s := actor(cfg, "bad"))["restarts"] >= 3 and s, 20, "3 restarts")
        assert "FaultActor crashed on purpose" in a["last_error"]
        assert "Traceback" in a["last_error"]  # the child's traceback text reaches the supervisor
        # backoff doubles from 0.2 s (with +-20 % jitter): three restarts take >= 0.16+0.32+0.64 s
        t0 = time.monotonic()
        wait_for(
            lambda: actor(cfg, "bad")["restarts"] >= a["restarts"] + 2, 20, "two more restarts"
        )
        assert time.monotonic() - t0 >= 0.6


def test_temporary_is_not_restarted(make_config) -> None:
    cfg = make_config(fast() + fault("temp", "temporary", mode="crash", after=0.05) + SIM)
    with running_gateway(cfg):
        a = wait_for(lambda: (s := actor(cfg, "temp"))["state"] == "failed" and s, 15, "failed")
        assert a["restarts"] == 0 and a["pid"] is None
        # a temporary bystander stops nothing
        wait_for(lambda: actor(cfg, "gen")["state"] == "running", 10, "gen running")


def test_transient_is_not_restarted_after_clean_return(make_config) -> None:
    cfg = make_config(
        fast()
        + fault("clean", "transient", mode="exit", after=0.05)
        + fault("crashy", "transient", mode="crash", after=0.05)
    )
    with running_gateway(cfg):
        a = wait_for(lambda: (s := actor(cfg, "clean"))["state"] == "stopped" and s, 15, "stopped")
        assert a["restarts"] == 0 and a["last_error"] == ""
        wait_for(
            lambda: actor(cfg, "crashy")["restarts"] >= 1, 15, "transient restarted after crash"
        )


def test_kill_9_restarts_only_that_driver(make_config) -> None:
    cfg = make_config(fast() + SIM + fault("other", mode="run"))
    with running_gateway(cfg):
        s = wait_for(
            lambda: (s := status(cfg)) and all(a["state"] == "running" for a in s["actors"]) and s,
            15,
            "all running",
        )
        victim = s["by_name"]["gen"]["pid"]
        other = s["by_name"]["other"]["pid"]
        os.kill(victim, signal.SIGKILL)
        a = wait_for(
            lambda: (a := actor(cfg, "gen"))["state"] == "running" and a["pid"] != victim and a,
            15,
            "gen restarted",
        )
        assert a["restarts"] == 1 and "SIGKILL" in a["last_error"]
        assert not pid_alive(victim)
        o = actor(cfg, "other")
        assert o["pid"] == other and o["restarts"] == 0
        before = o["points_out"]
        wait_for(
            lambda: actor(cfg, "other")["points_out"] > before + 5, 10, "other keeps publishing"
        )


def test_hung_driver_is_killed_and_restarted(make_config) -> None:
    cfg = make_config(fast(heartbeat_timeout=1.0) + fault("stuck", mode="hang", after=0.2))
    with running_gateway(cfg):
        first = wait_for(lambda: actor(cfg, "stuck")["pid"], 10, "started")
        a = wait_for(lambda: (a := actor(cfg, "stuck"))["restarts"] >= 1 and a, 15, "hang detected")
        assert "hung" in a["last_error"]
        assert not pid_alive(first)


def test_a_slow_start_before_the_first_heartbeat_is_not_a_hang(make_config) -> None:
    slow = fast(heartbeat_timeout=0.5, start_timeout=10)
    cfg = make_config(slow + fault("slow", start_delay=2.0))
    with running_gateway(cfg):
        a = wait_for(lambda: (a := actor(cfg, "slow"))["points_out"] > 0 and a, 15, "publishing")
        assert a["restarts"] == 0 and a["last_error"] == ""


def test_no_first_heartbeat_within_start_timeout_is_a_hang(make_config) -> None:
    slow = fast(heartbeat_timeout=0.3, start_timeout=1.0)
    cfg = make_config(slow + fault("never", start_delay=600.0))
    with running_gateway(cfg):
        first = wait_for(lambda: actor(cfg, "never")["pid"], 10, "started")
        a = wait_for(lambda: (a := actor(cfg, "never"))["restarts"] >= 1 and a, 15, "hang seen")
        assert "hung: no heartbeat for 1s" in a["last_error"]
        assert not pid_alive(first)


def test_segfault_is_restarted(make_config) -> None:
    cfg = make_config(fast() + fault("seg", mode="segfault", after=0.1))
    with running_gateway(cfg):
        a = wait_for(lambda: (a := actor(cfg, "seg"))["restarts"] >= 1 and a, 15, "restarted")
        assert "SIGSEGV" in a["last_error"]


def test_driver_subprocesses_die_with_it(make_config) -> None:
    cfg = make_config(fast() + fault("parent", mode="run", spawn_child=True))
    with running_gateway(cfg):
        a = wait_for(
            lambda: (a := actor(cfg, "parent"))["stats"].get("child_pid") and a, 10, "child"
        )
        child = a["stats"]["child_pid"]
        assert pid_alive(child)
        os.kill(a["pid"], signal.SIGKILL)
        wait_for(lambda: not pid_alive(child), 5, "the driver's subprocess killed with its group")


def test_stop_kills_a_driver_that_ignores_it(make_config) -> None:
    cfg = make_config(fast(shutdown_timeout=0.5) + fault("deaf", ignore_stop=True))
    with running_gateway(cfg) as rt:
        pid = wait_for(lambda: actor(cfg, "deaf")["pid"], 10, "started")
        kids = gateway_processes(cfg)
        assert any(_is_zygote(p) for p in kids)
        t0 = time.monotonic()
        rt.stop()
    assert time.monotonic() - t0 < 0.5 + 2.0
    assert not pid_alive(pid)
    assert not (cfg.runtime_dir / "control.sock").exists()
    wait_for(lambda: not any(pid_alive(p) for p in kids), 2, "no process left, zygote included")


def gateway_processes(cfg) -> set[int]:
    """The running gateway's processes: its actors, its zygote, and what they started."""
    roots = {a["pid"] for a in status(cfg)["actors"] if a["pid"]}
    roots |= {p for p in descendants(os.getpid()) if _is_zygote(p)}
    return roots.union(*(descendants(p) for p in roots))


def _is_zygote(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"edgert.proc.zygote" in f.read()
    except OSError:
        return False


def isolate(retry: float, nats: str = "") -> str:
    """Given up on after two quick restarts, tried again after `retry` seconds; no
    NATS unless `nats` (its URL)."""
    sup = supervisor(
        backoff_min=0.05,
        backoff_max=0.2,
        intensity=2,
        period=30,
        failed_retry=retry,
        shutdown_timeout=3,
    )
    return (nats_section(nats) if nats else "\n[nats]\n" + keys(enabled=False)) + sup


def test_a_driver_that_always_fails_is_given_up_on_and_retried_alone(make_config) -> None:
    cfg = make_config(isolate(2.0) + SIM + fault("bad", mode="crash", after=0.0))
    with running_gateway(cfg):
        gen = wait_for(lambda: (a := actor(cfg, "gen"))["state"] == "running" and a, 15, "gen")
        bad = wait_for(lambda: (a := actor(cfg, "bad"))["state"] == "failed" and a, 15, "failed")
        assert bad["pid"] is None and bad["restarts"] == 2
        assert "FaultActor crashed on purpose" in bad["last_error"]
        assert 0 < bad["retry_in"] <= 2.0
        now = actor(cfg, "gen")
        assert now["pid"] == gen["pid"] and now["restarts"] == 0 and now["state"] == "running"
        before = now["points_out"]
        wait_for(lambda: actor(cfg, "gen")["points_out"] > before + 5, 10, "gen keeps publishing")
        # tried again after failed_retry: it restarts (and fails) once more
        wait_for(lambda: actor(cfg, "bad")["restarts"] > bad["restarts"], 15, "the retry")
        assert actor(cfg, "gen")["pid"] == gen["pid"]


def test_failed_retry_zero_leaves_it_failed(make_config) -> None:
    cfg = make_config(isolate(0) + SIM + fault("bad", mode="crash", after=0.0))
    with running_gateway(cfg):
        bad = wait_for(lambda: (a := actor(cfg, "bad"))["state"] == "failed" and a, 15, "failed")
        assert bad["retry_in"] is None
        # a driver that comes up again would be counted; give the loop a few turns of status
        for _ in range(5):
            assert actor(cfg, "bad")["restarts"] == bad["restarts"]
            assert actor(cfg, "gen")["state"] == "running"


def test_a_critical_driver_given_up_on_tears_the_gateway_down(make_config) -> None:
    cfg = make_config(isolate(1.0) + SIM + fault("vital", mode="crash", after=0.0, critical=True))
    with pytest.raises(GroupFailed, match="'vital'"):
        with running_gateway(cfg):
            gen = wait_for(lambda: actor(cfg, "gen")["pid"], 15, "gen started")
            wait_for(lambda: not (cfg.runtime_dir / "control.sock").exists(), 15, "torn down")
    assert not pid_alive(gen)


def test_the_status_subject_reports_a_failed_driver(make_config, nats_server) -> None:
    from edgert.testing.nats import Subscriber, decode

    cfg = make_config(isolate(60, nats_server.url) + SIM + fault("bad", mode="crash", after=0.0))
    with Subscriber(nats_server.url, "edgert.gw.status") as sub, running_gateway(cfg):

        def failed_in_a_message() -> dict | None:
            for m in sub.messages:
                by = {a["name"]: a for a in decode(m)["actors"]}
                if by.get("bad", {}).get("state") == "failed":
                    return by
            return None

        by = wait_for(failed_in_a_message, 20, "a status message with `bad` failed")
        assert by["gen"]["state"] == "running" and by["bridge"]["state"] == "running"
        assert "FaultActor crashed on purpose" in by["bad"]["last_error"]


def test_a_dead_zygote_stops_no_actor_and_a_new_one_serves_the_next_start(make_config) -> None:
    """Actors are the supervisor's children, not the zygote's: they outlive it."""
    cfg = make_config(isolate(60) + SIM + fault("other", mode="run"))
    with running_gateway(cfg):
        s = wait_for(
            lambda: (s := status(cfg)) and all(a["state"] == "running" for a in s["actors"]) and s,
            15,
            "all running",
        )
        pids = {n: a["pid"] for n, a in s["by_name"].items()}
        # actors forked from the zygote share its command line: leave them out
        (zygote,) = [
            p for p in descendants(os.getpid()) if _is_zygote(p) and p not in pids.values()
        ]
        os.kill(zygote, signal.SIGKILL)
        wait_for(lambda: not pid_alive(zygote), 5, "the zygote gone")
        os.kill(pids["gen"], signal.SIGKILL)  # the next start needs a zygote
        a = wait_for(
            lambda: (
                (a := actor(cfg, "gen"))["state"] == "running" and a["pid"] != pids["gen"] and a
            ),
            20,
            "gen restarted by a new zygote",
        )
        assert a["restarts"] == 1
        o = actor(cfg, "other")
        assert o["pid"] == pids["other"] and o["restarts"] == 0 and pid_alive(o["pid"])
        assert [p for p in descendants(os.getpid()) if _is_zygote(p) and pid_alive(p)] != []


def test_the_status_push_interval_is_settable_for_tests_and_keeps_its_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from edgert.supervisor.loop import STATUS_EVERY, status_every

    monkeypatch.delenv("EDGERT_STATUS_EVERY", raising=False)
    assert status_every() == STATUS_EVERY == 5.0
    for given, want in [("0.5", 0.5), ("60", 60.0), ("0.01", 5.0), ("1e9", 5.0), ("x", 5.0)]:
        monkeypatch.setenv("EDGERT_STATUS_EVERY", given)
        assert status_every() == want, given


def test_the_heartbeat_is_settable_for_tests_and_keeps_its_default(
    monkeypatch: pytest.MonkeyPatch, make_config
) -> None:
    from edgert.runtime import HEARTBEAT_MAX, Runtime, heartbeat_max

    def beats() -> set[float]:
        return {c.spec.heartbeat_interval for c in Runtime(cfg).children()}

    cfg = make_config(sim_driver())
    monkeypatch.delenv("EDGERT_HEARTBEAT_MAX", raising=False)
    assert heartbeat_max() == HEARTBEAT_MAX == 2.0 and beats() == {2.0}
    for given, want in [("0.5", 0.5), ("0.05", 0.05), ("0.01", 2.0), ("61", 2.0), ("", 2.0)]:
        monkeypatch.setenv("EDGERT_HEARTBEAT_MAX", given)
        assert heartbeat_max() == want, given
    monkeypatch.setenv("EDGERT_HEARTBEAT_MAX", "0.5")
    assert beats() == {0.5}  # the bridge's and the driver's
