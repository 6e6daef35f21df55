"""`last_error` is the exception's own line, also for an error inside a task group.

An exception group's traceback ends in a divider line; status, the status
table and the teardown message show the innermost exception instead.
"""

from __future__ import annotations

from edgert.supervisor.control import format_status
from edgert.testing import running_gateway, status, wait_for

GATEWAY = """
[supervisor]
backoff_min = 0.1
backoff_max = 0.5

[[driver]]
name = "grp"
type = "edgert.testing:FaultActor"
restart = "temporary"
mode = "group"
after = 0.0
"""

LINE = "ValueError: FaultActor failed inside a task group"


def test_last_error_of_a_task_group_names_the_inner_exception(make_config) -> None:
    cfg = make_config(GATEWAY)
    with running_gateway(cfg):
        a = wait_for(
            lambda: (a := status(cfg)["by_name"]["grp"])["state"] == "failed" and a,
            15,
            "grp failed",
        )
        assert a["last_error"].strip().splitlines()[-1] == LINE
        table = format_status(status(cfg))
        assert LINE in table and "+----" not in table
