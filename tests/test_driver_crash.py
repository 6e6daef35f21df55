"""A driver's own crash loses nothing: what `ctx.publish` accepted reaches NATS.

A sim-style driver (`edgert.testing.ledger`) counts at 2,000 points/s and
writes down, after each `ctx.publish` returns, how many points it handed
over. It is SIGKILLed mid-stream 20 times; each restart is a new run with its
own key. Then JetStream is read back: every value each run's publish accepted
is there, in order, none twice, and nothing was reported dropped.
"""

from __future__ import annotations

import os
import random
import re
import signal
from pathlib import Path

import msgpack

from edgert.bus.ring import Ring, ring_path
from edgert.point import Point
from edgert.testing import running_gateway, status, wait_for
from edgert.testing.ledger import read_ledger
from edgert.testing.nats import decode, stream_messages

KILLS = 20

GATEWAY = """
[supervisor]
backoff_min = 0.05
backoff_max = 0.2
intensity = 100
period = 30
shutdown_timeout = 10

[nats]
url = "{url}"
jetstream = true

[[driver]]
name = "gen"
type = "edgert.testing.ledger:LedgerDriver"
ledger = "{ledger}"
rate = 2000.0
"""


def test_a_driver_sigkilled_mid_stream_20_times_loses_nothing(
    make_config, nats_server, short_dir
) -> None:
    ledger = str(short_dir / "ledger")
    cfg = make_config(GATEWAY.format(url=nats_server.url, ledger=ledger))
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    with running_gateway(cfg):
        for run in range(KILLS + 1):
            target = rng.randint(50, 800)
            accepted, pid = wait_for(
                lambda run=run, target=target: (
                    (v := read_ledger(ledger).get(run)) is not None and v[0] >= target and v
                ),
                30,
                f"run {run} publishing (seed {seed})",
            )
            if run < KILLS:
                os.kill(pid, signal.SIGKILL)
        gen = status(cfg)["by_name"]["gen"]
        assert gen["restarts"] == KILLS
        assert gen["stats"]["dropped"] == 0 and gen["lost_at_stop"] == 0
    runs = read_ledger(ledger)  # the last run stopped cleanly: the bridge had it all
    assert sorted(runs) == list(range(KILLS + 1))
    got = [
        (int(p["key"]), p["value"])
        for m in stream_messages(nats_server.url, "EDGERT_gw")
        if m.subject == "edgert.gw.p.gen"
        for p in decode(m)
    ]
    assert got == sorted(set(got)), f"out of order or twice (seed {seed})"
    lost = {}
    for run, (accepted, _) in runs.items():
        values = [v for r, v in got if r == run]
        assert values == list(range(len(values))), f"run {run}: a gap (seed {seed})"
        if len(values) < accepted:
            lost[run] = accepted - len(values)
    assert not lost, f"run -> points accepted by publish and not in NATS: {lost} (seed {seed})"


def test_ring_files_go_with_a_clean_stop_a_removed_driver_and_a_stale_start(
    make_config, nats_server, short_dir, caplog
) -> None:
    def body(*names: str) -> str:
        text = GATEWAY.split("[[driver]]")[0].format(url=nats_server.url, ledger="")
        for n in names:
            text += (
                f'[[driver]]\nname = "{n}"\ntype = "edgert.testing.ledger:LedgerDriver"\n'
                f'ledger = "{short_dir}/{n}"\nrate = 500.0\nrestart = "temporary"\n'
            )
        return text

    cfg = make_config(body("gen", "extra"))
    outbox = cfg.runtime_dir / "outbox"
    ghost = Ring.open(ring_path(cfg.runtime_dir, "ghost"), "ghost.1.a", 1 << 20)
    ghost.append(b"".join(msgpack.packb(Point("ghost", "n", "0", i).to_map()) for i in range(5)), 5)
    ghost.close()
    with running_gateway(cfg) as rt:
        s = wait_for(
            lambda: (
                (s := status(cfg)["by_name"])["bridge"]["state"] == "running"
                and all(s[n]["stats"].get("points_out", 0) > 0 for n in ("gen", "extra"))
                and s
            ),
            20,
            "both drivers publishing",
        )
        assert not (outbox / "ghost.ring").exists()  # no such actor: dropped at the start
        assert {p.name for p in outbox.iterdir()} == {"gen.ring", "extra.ring"}
        os.kill(s["bridge"]["pid"], signal.SIGSTOP)  # nothing is acknowledged now
        try:
            wait_for(lambda: status(cfg)["by_name"]["extra"]["buffered"] > 20, 10, "unacked")
            os.kill(s["extra"]["pid"], signal.SIGKILL)  # temporary: not restarted
            wait_for(lambda: status(cfg)["by_name"]["extra"]["pid"] is None, 10, "extra dead")
        finally:
            os.kill(s["bridge"]["pid"], signal.SIGCONT)
        assert (outbox / "extra.ring").exists()  # what it held, for a restart
        Path(cfg.path).write_text(Path(cfg.path).read_text().split("[supervisor]")[0] + body("gen"))
        rt.reload()
        wait_for(lambda: "extra" not in status(cfg)["by_name"], 10, "extra removed")
        assert {p.name for p in outbox.iterdir()} == {"gen.ring"}
        # how many of the >20 held had reached the bridge's socket before the kill varies
        said = re.search(r"extra: removed with (\d+) points it had not handed over", caplog.text)
        assert said and int(said.group(1)) > 0, caplog.text
    assert "lost 5 points of actor 'ghost', which is no longer configured" in caplog.text
    # a clean stop keeps only what the bridge had not acknowledged, for the next start
    # (the emptied outbox directory goes with the stop too)
    assert not outbox.exists() or {p.name for p in outbox.iterdir()} <= {"gen.ring"}


def test_a_driver_that_raises_leaves_its_points_to_its_next_run(
    make_config, nats_server, short_dir
) -> None:
    ledger = str(short_dir / "ledger")
    cfg = make_config(
        GATEWAY.format(url=nats_server.url, ledger=ledger).replace(
            "rate = 2000.0", "rate = 500.0\ncrash_at = 1500"
        )
    )
    with running_gateway(cfg):
        s = wait_for(
            lambda: (
                (s := status(cfg)["by_name"])["bridge"]["state"] == "running"
                and read_ledger(ledger).get(0, (0, 0))[0] >= 200
                and s
            ),
            20,
            "run 0 publishing",
        )
        assert read_ledger(ledger)[0][0] < 1200  # it raises at 1,500
        os.kill(s["bridge"]["pid"], signal.SIGSTOP)  # nothing is acknowledged from here on
        try:
            wait_for(lambda: 1 in read_ledger(ledger), 20, "run 0 raised and run 1 started")
        finally:
            os.kill(s["bridge"]["pid"], signal.SIGCONT)
        gen = wait_for(
            lambda: (
                (g := status(cfg)["by_name"]["gen"])["stats"].get("recovered", 0) > 0
                and read_ledger(ledger)[1][0] >= 100
                and g
            ),
            20,
            "run 1 publishing",
        )
        assert "on purpose" in (gen["last_error"] or "")
        assert gen["lost_at_stop"] == 0 and gen["stats"]["dropped"] == 0
    got = [
        (int(p["key"]), p["value"])
        for m in stream_messages(nats_server.url, "EDGERT_gw")
        if m.subject == "edgert.gw.p.gen"
        for p in decode(m)
    ]
    assert got == sorted(set(got))
    assert [v for r, v in got if r == 0] == list(range(1500))
    assert len([v for r, v in got if r == 1]) >= read_ledger(ledger)[1][0]
