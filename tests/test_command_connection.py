"""The command connection (the gateway's second NATS connection) failing alone.

A real nats-server whose user for the gateway may not subscribe to its command
subjects: the point session works, the command subscription is refused. Points
keep flowing, and both status views (`edgert status` and the status subject)
say the same thing: connected, commands down, and the server's reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgert.testing import running_gateway, status, wait_for
from edgert.testing.configs import nats_section, sim_driver, supervisor
from edgert.testing.nats import NatsProcess, Subscriber, decode

USERS = """
authorization { users = [
  { user: "gw", password: "gw-secret",
    permissions: { subscribe: { deny: ["edgert.gw.cmd.>"] } } }
  { user: "watcher", password: "watcher-secret" }
] }
"""
WATCHER = {"user": "watcher", "password": "watcher-secret"}


def test_a_refused_command_connection_is_reported_while_points_flow(
    make_config, short_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with NatsProcess(short_dir / "nats", config=USERS) as srv:
        body = supervisor() + nats_section(srv.url, user="gw", password="gw-secret")
        cfg = make_config(body + sim_driver(rate=20.0))
        with (
            Subscriber(srv.url, "edgert.gw.p.>", **WATCHER) as points,
            Subscriber(srv.url, "edgert.gw.status", **WATCHER) as statuses,
            running_gateway(cfg),
        ):
            nats = wait_for(
                lambda: (
                    (
                        s := status(cfg)["by_name"]["bridge"].get("stats", {}).get("nats", "")
                    ).startswith("connected; commands down: the server refused")
                    and s
                ),
                20,
                "the bridge's status naming the refused command subscription",
            )
            assert "edgert.gw.cmd.>" in nats and "ermissions" in nats
            n = len(points.points())
            wait_for(lambda: len(points.points()) > n + 10, 10, "points still flowing")

            def latest() -> dict:
                return decode(statuses.messages[-1])["nats"] if statuses.messages else {}

            view = wait_for(
                lambda: (v := latest()).get("commands_error") and v, 10, "status subject"
            )
            assert view["connected"] is True and view["commands_connected"] is False
            assert view["state"] == nats  # both views say the same
            assert "edgert.gw.cmd.>" in view["commands_error"]
            wait_for(  # it keeps trying (backoff <= 0.5 s), refused each time
                lambda: status(cfg)["by_name"]["bridge"]["stats"]["nats_commands_attempts"] >= 4,
                20,
                "more attempts of the command connection",
            )
    said = [ln for ln in capfd.readouterr().err.splitlines() if "NATS commands:" in ln]
    assert len(said) == 1 and "edgert.gw.cmd.>" in said[0], "\n".join(said)  # once per change
