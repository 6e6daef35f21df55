"""`edgert tail` prints the points on the local bus, also while NATS is down; the demo runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from edgert.cli import cli
from edgert.cli.locate import running_gateways
from edgert.config import load
from edgert.testing import running_gateway, status, wait_for
from edgert.testing.nats import Subscriber, free_port

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z  (\S+)  (\S+)  (\S+)  (\S+)$")

NATS_DOWN = '[nats]\nurl = "nats://127.0.0.1:1"\n'  # nobody listens there


def sim(name: str, shape: str = "counter", rate: float = 50.0) -> str:
    return (
        f'[[driver]]\nname = "{name}"\ntype = "sim"\n'
        f'[[driver.signal]]\nname = "n"\nshape = "{shape}"\nrate = {rate}\n'
    )


def test_tail_prints_points_of_one_node_while_nats_is_down(make_config) -> None:
    cfg = make_config(NATS_DOWN + sim("gen") + sim("other", "sine"))
    with running_gateway(cfg):
        wait_for(lambda: status(cfg)["by_name"]["gen"]["state"] == "running", 10, "gen running")
        out = subprocess.run(
            [sys.executable, "-m", "edgert", "tail", "--runtime-dir", str(cfg.runtime_dir)]
            + ["--node", "gen", "--count", "20"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert "down" in status(cfg)["by_name"]["bridge"]["stats"]["nats"]
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 20
    rows = [LINE.match(line).groups() for line in lines]  # type: ignore[union-attr]
    assert {(node, type_, key) for node, type_, key, _ in rows} == {("gen", "n", "0")}
    values = [int(v) for *_, v in rows]
    assert values == list(range(values[0], values[0] + 20))


def test_tail_help_has_an_example_and_a_bad_call_is_a_usage_error() -> None:
    r = CliRunner().invoke(cli, ["tail", "--help"])
    assert r.exit_code == 0 and "Example:" in r.output and "edgert tail --config" in r.output
    if not running_gateways():  # else `tail` alone follows that one
        r = CliRunner().invoke(cli, ["tail"])
        assert r.exit_code == 1 and "no gateway is running" in r.output, r.output
        assert "--config FILE or --runtime-dir DIR" in r.output
    r = CliRunner().invoke(cli, ["tail", "--count", "0"])
    assert r.exit_code == 2 and "--count" in r.output, r.output


def test_demo_config_runs_with_its_embedded_nats_server(short_dir: Path) -> None:
    demo = Path(__file__).parent.parent / "configs" / "demo.toml"
    port = free_port()
    text = demo.read_text().replace("127.0.0.1:4222", f"127.0.0.1:{port}")
    text = text.replace(
        'id = "demo"',
        f'id = "demo"\nruntime_dir = "{short_dir}/run"\ndata_dir = "{short_dir}/data"',
    )
    path = short_dir / "demo.toml"
    path.write_text(text)
    cfg = load(path)
    url = f"nats://127.0.0.1:{port}"
    with running_gateway(cfg):
        wait_for(
            lambda: status(cfg)["by_name"]["bridge"]["stats"].get("nats") == "connected",
            15,
            "bridge connected to the embedded server",
        )
        with Subscriber(url, "edgert.demo.p.>") as sub:
            wait_for(lambda: {p["node"] for p in sub.points()} >= {"boiler", "meter"}, 15, "points")
        nats_pid = status(cfg)["by_name"]["nats"]["pid"]  # the supervisor's own child
        assert Path(f"/proc/{nats_pid}/comm").read_text().strip() == "nats-server"
    assert not Path(f"/proc/{nats_pid}").exists()  # the server went with the gateway


def test_log_lines_are_stamped_in_utc_with_a_z_whatever_the_time_zone() -> None:
    import os

    probe = (
        "import logging, time; from edgert.logs import handler; "
        "logging.basicConfig(level=logging.INFO, handlers=[handler('%(asctime)s %(message)s')]); "
        "logging.info('x'); print(time.strftime('%Y-%m-%dT%H', time.gmtime()))"
    )
    env = dict(os.environ, TZ="Pacific/Kiritimati")  # UTC+14: a local stamp cannot pass
    r = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=30
    )
    stamp = r.stderr.split()[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
    assert stamp.startswith(r.stdout.strip()), (stamp, r.stdout)  # the UTC hour


def test_on_a_terminal_the_lines_are_aligned_under_their_header_from_the_first(
    make_config,
) -> None:
    import io

    from edgert.cli.tail import follow

    cfg = make_config(NATS_DOWN + sim("g", rate=20.0) + sim("a-much-longer-node", rate=20.0))
    with running_gateway(cfg):
        rdir = str(cfg.runtime_dir)
        r = CliRunner()
        wait_for(
            lambda: len(r.invoke(cli, ["values", "--runtime-dir", rdir, "--json"]).stdout) > 300,
            15,
            "both nodes' latest values",
        )
        out = io.StringIO()
        assert follow(rdir, None, 40, out, tty=True) == 40
    header, *lines = out.getvalue().splitlines()
    assert header.split() == ["TIME", "(UTC)", "NODE", "TYPE", "KEY", "VALUE"]
    assert {line.split()[1] for line in lines} == {"g", "a-much-longer-node"}
    # Every column starts where its header does, on every line (the names were known
    # before the first line: not widened after it).
    for name in ("NODE", "TYPE", "KEY", "VALUE"):
        at = header.index(name)
        assert all(line[at - 1] == " " and line[at] != " " for line in lines), (name, lines)
