"""The pure restart policy: restart types, backoff, the intensity window, failed, critical."""

from __future__ import annotations

import pytest

from edgert.supervisor.policy import History, Policy

P = Policy(intensity=3, period=10.0, backoff_min=0.1, backoff_max=1.0, healthy_after=5.0)


def exit_(p: Policy, h: History, now: float, **kw: object):
    args = {"restart": "permanent", "error": True, "ran_for": 0.0, "jitter": lambda: 0.5}
    args.update(kw)
    return p.exited(h, now=now, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "restart, error, action",
    [
        ("temporary", True, "failed"),
        ("temporary", False, "stopped"),
        ("transient", False, "stopped"),
        ("transient", True, "restart"),
        ("permanent", False, "restart"),
        ("permanent", True, "restart"),
    ],
)
def test_restart_types(restart: str, error: bool, action: str) -> None:
    assert exit_(P, History(), 0.0, restart=restart, error=error).action == action


def test_backoff_doubles_up_to_the_max_and_jitters() -> None:
    h = History()
    delays = [exit_(P, h, t * 100.0).delay for t in range(6)]  # far apart: no intensity
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    low = exit_(P, History(), 0.0, jitter=lambda: 0.0).delay
    high = exit_(P, History(), 0.0, jitter=lambda: 0.999999).delay
    assert low == pytest.approx(0.08) and high == pytest.approx(0.12)


def test_backoff_starts_over_after_a_healthy_run() -> None:
    h = History()
    for t in range(4):
        exit_(P, h, t * 100.0)
    assert exit_(P, h, 1000.0, ran_for=5.0).delay == pytest.approx(0.1)
    assert exit_(P, h, 2000.0, ran_for=4.9).delay == pytest.approx(0.2)


def test_more_than_intensity_in_period_gives_up_and_retries_later() -> None:
    p = Policy(intensity=3, period=10.0, failed_retry=60.0)
    h = History()
    assert [exit_(p, h, t).action for t in (0.0, 1.0, 2.0)] == ["restart"] * 3
    d = exit_(p, h, 3.0)
    assert (d.action, d.delay, d.restarts_in_period) == ("failed", 60.0, 4)
    # the retry starts with a fresh window and the shortest backoff
    d = exit_(p, h, 63.0)
    assert d.action == "restart" and d.delay == pytest.approx(p.backoff_min)


def test_the_window_slides() -> None:
    h = History()
    for t in (0.0, 4.0, 8.0):
        assert exit_(P, h, t).action == "restart"
    assert exit_(P, h, 10.5).action == "restart"  # the exit at 0.0 has left the window
    assert exit_(P, h, 11.0).action == "failed"


def test_healthy_runs_still_count_towards_intensity() -> None:
    # a process that reaches "running" and dies again is rate-limited too
    h = History()
    for t in (0.0, 1.0, 2.0):
        assert exit_(P, h, t, ran_for=100.0).action == "restart"
    assert exit_(P, h, 3.0, ran_for=100.0).action == "failed"


def test_failed_retry_zero_means_never() -> None:
    p = Policy(intensity=0, failed_retry=0.0)
    d = exit_(p, History(), 0.0)
    assert d.action == "failed" and d.delay is None


def test_a_critical_actor_tears_down() -> None:
    p = Policy(intensity=1)
    h = History()
    assert exit_(p, h, 0.0, critical=True).action == "restart"
    assert exit_(p, h, 0.1, critical=True).action == "teardown"


def test_policy_from_a_config_section() -> None:
    from edgert.config import SupervisorSection

    p = Policy.of(SupervisorSection(intensity=7, failed_retry=0.0))
    assert p.intensity == 7 and p.failed_retry == 0.0 and p.period == 30.0
