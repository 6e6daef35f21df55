"""Fleet: many gateways on a 3-node NATS cluster, found, measured, and through a node's loss.

A nats-server cluster of 3 nodes runs on loopback, with one JetStream stream per
gateway (`EDGERT_<id>`, 3 replicas) made up front. `gateways` (50 by default)
`edgert run` processes, started five at a time, each run one `sim` counter at
`rate` points/s (10) into their stream, through the cluster's three URLs,
with the micro service on and no embedded server. Measured:

- `edgert fleet ls`: seconds from the one `$SRV.STATS.edgert` request to the
  answer of the last gateway (target < 2 s), beside a `$SRV.PING.edgert` to
  all of them (the protocol's smallest answer); and the whole command
  (`edgert fleet ls`, its default 2 s timeout and the interpreter's start
  included) with how many
  gateways it listed (must be all);
- at idle (the counters running): the gateways' summed CPU as % of one core
  and their summed memory (PSS, /proc/PID/smaps_rollup, so pages shared
  between a gateway's processes count once), in all and per gateway, beside
  the cluster's own CPU and RSS;
- one cluster node SIGKILLed: seconds until every gateway
  is connected and its stream has taken a point published after the kill
  (each reconnects by itself) and until every gateway's service answers
  `fleet ls` again; `after_kill` seconds later the node is restarted and every
  stream is read whole, from its first message (`tally`): per counter (each
  node's subject counts from 0 on its own) the values lost (a gap between its
  lowest and highest value, must be 0) and stored twice (must be 0), and the
  message ids stored twice (JetStream's dedupe must drop every repeat).

When the runtime has `edgert fleet push` and the `[fleet]` section, every
gateway also gets a config pushed, by one `edgert fleet push` naming them all
(`push_all`): seconds until all report `applied` (target < 60 s), how many
did, and the seconds from each gateway's put to its report (median, slowest);
otherwise that part is "not built".
A stage that fails leaves the figures of the stages before it, and an "error".
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from edgert.bench.core import smaps
from edgert.bench.gateway import GatewayProcess, sim_counter
from edgert.bench.measure import rnd
from edgert.bench.procfs import cpu_seconds, cpu_used
from edgert.config import ConfigError, loads
from edgert.testing import wait_for
from edgert.testing.nats import NatsCluster

__all__ = ["fleet", "run_all", "push_all", "tally", "GATEWAYS"]

GATEWAYS = 50
RATE = 10.0  # points/s per gateway
WAVE = 5  # gateways started together
PREFIX = "edgert"


def gateway_text(d: Path, gw: str, urls: list[str], rate: float, fleet: bool) -> str:
    """One gateway's config: the cluster's URLs, its own R3 stream, one sim counter."""
    text = f'[gateway]\nid = "{gw}"\nruntime_dir = "{d}/run"\ndata_dir = "{d}/data"\n'
    text += desired_text(gw, urls, sim_counter("gen", rate))
    if fleet:
        text += "[fleet]\nenabled = true\n"
    return text


def desired_text(gw: str, urls: list[str], drivers: str) -> str:
    """Every section but [gateway] and [fleet]: what a push sends."""
    servers = ", ".join(f'"{u}"' for u in urls)
    return (
        f"[supervisor]\nshutdown_timeout = 2.0\n"
        f'[nats]\nurl = [{servers}]\njetstream = true\nstream = "EDGERT_{gw}"\n{drivers}'
    )


def fleet_section_known() -> bool:
    """True when the config accepts `[fleet] enabled` (desired config from KV is built)."""
    try:
        loads('[gateway]\nid = "x"\n[fleet]\nenabled = true\n')
    except ConfigError:
        return False
    return True


def push_built() -> bool:
    from edgert.cli.fleet import fleet as group

    return "push" in group.commands and fleet_section_known()


def fleet(
    gateways: int = GATEWAYS,
    rate: float = RATE,
    window: float = 20.0,
    after_kill: float = 10.0,
) -> dict[str, Any]:
    """The fleet figures (see the module's doc) for `gateways` gateways."""
    d = Path(tempfile.mkdtemp(prefix="ebf-"))
    ids = [f"gw{i:03d}" for i in range(gateways)]
    res: dict[str, Any] = {"gateways": gateways, "rate_points_s": rate}
    pushing = push_built()
    try:
        with NatsCluster(d / "nats", 3) as cluster:
            gws: list[GatewayProcess] = []
            try:
                _measure(res, cluster, gws, ids, d, rate, window, after_kill, pushing)
            except Exception as e:  # noqa: BLE001 - the figures measured so far still count
                res["error"] = f"{type(e).__name__}: {e}"
            finally:
                _terminate_all(gws)  # SIGTERM to all at once, then each waited for
                for g in gws:
                    g.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return res


def _measure(
    res: dict[str, Any],
    cluster: NatsCluster,
    gws: list[GatewayProcess],
    ids: list[str],
    d: Path,
    rate: float,
    window: float,
    after_kill: float,
    pushing: bool,
) -> None:
    """Fill `res` stage by stage (so a failed stage leaves the earlier figures)."""
    urls = cluster.urls
    asyncio.run(_streams(urls, ids))
    t0 = time.monotonic()
    for i in range(0, len(ids), WAVE):  # all at once would starve their start-up
        wave = []
        for gw in ids[i : i + WAVE]:
            g = GatewayProcess(gateway_text(d / gw, gw, urls, rate, pushing), d / gw)
            gws.append(g)
            wave.append(g.__enter__())
        for g in wave:
            g.wait_running(120)
    n = len(ids)
    wait_for(lambda: _connected(gws), 60 + n, "every gateway connected")
    res["start_all_s"] = rnd(time.monotonic() - t0)
    wait_for(
        lambda: len(asyncio.run(_answers(urls, "STATS", n, 2.0))[1]) == n,
        60,
        "every gateway answering the fleet",
        interval=0.5,
    )
    res["idle"] = _idle(gws, cluster, window)
    res["ls"] = _ls(urls, n)  # after the idle window: start-up's load has passed
    res["push"] = push_all(ids, urls, d, rate) if pushing else "not built"
    res["node_kill"] = _node_kill(gws, ids, cluster, after_kill)


def run_all(gateways: int = GATEWAYS) -> dict[str, Any]:
    return fleet(gateways=gateways)


def _terminate_all(gws: list[GatewayProcess]) -> None:
    for g in gws:
        if g.proc is not None and g.proc.poll() is None:
            g.pids()
            g.proc.terminate()


def _connected(gws: list[GatewayProcess]) -> bool:
    return all(g.status()["by_name"]["bridge"]["stats"].get("nats") == "connected" for g in gws)


async def _streams(urls: list[str], ids: list[str]) -> None:
    """Each gateway's stream, 3 replicas, made before the gateways start."""
    import nats

    nc = await nats.connect(urls)
    try:
        js = nc.jetstream(timeout=30)
        for gw in ids:
            subjects = [f"{PREFIX}.{gw}.p.>", f"{PREFIX}.{gw}.status"]
            await js.add_stream(name=f"EDGERT_{gw}", subjects=subjects, num_replicas=3)
    finally:
        await nc.close()


async def _answers(urls: list[str], verb: str, want: int, timeout: float) -> tuple[float, list]:
    """Seconds until `want` answers to `$SRV.<verb>.edgert` arrived (or the timeout), and them."""
    import nats

    nc = await nats.connect(urls)
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.flush()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await nc.publish(f"$SRV.{verb}.edgert", b"", reply=inbox)
        out: list[Any] = []
        last = 0.0
        while len(out) < want and (left := t0 + timeout - loop.time()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except nats.errors.TimeoutError:
                break
            out.append(json.loads(msg.data))
            last = loop.time() - t0
        return last, out
    finally:
        await nc.close()


def _ls(urls: list[str], n: int) -> dict[str, Any]:
    stats_s, stats = asyncio.run(_answers(urls, "STATS", n, 10.0))
    ping_s, pings = asyncio.run(_answers(urls, "PING", n, 10.0))
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "edgert", "fleet", "ls", "--nats", urls[0], "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    cli_s = time.monotonic() - t0
    listed = json.loads(out.stdout) if out.returncode == 0 else []
    return {
        "all_answers_s": rnd(stats_s, 3),
        "answered": len(stats),
        "ping_all_s": rnd(ping_s, 3),
        "pinged": len(pings),
        "cli_s": rnd(cli_s),
        "cli_listed": len(listed),
        "cli_error": out.stderr.strip()[-300:] if out.returncode else "",
    }


def _idle(gws: list[GatewayProcess], cluster: NatsCluster, window: float) -> dict[str, Any]:
    pids = [p for g in gws for p in g.pids()]
    servers = [n.proc.pid for n in cluster.nodes if n.proc is not None]
    a, sa = cpu_seconds(pids), cpu_seconds(servers)
    t0 = time.monotonic()
    time.sleep(window)  # the measuring window itself
    b, sb = cpu_seconds(pids), cpu_seconds(servers)
    dt = time.monotonic() - t0
    pss = sum(_pss(p) for p in pids)
    server_rss = sum(smaps(p)["rss_mb"] for p in servers)
    n = len(gws)
    cpu = 100 * cpu_used(a, b) / dt
    return {
        "window_s": rnd(dt),
        "processes": len(pids),
        "cpu_pct": rnd(cpu),
        "cpu_pct_per_gateway": rnd(cpu / n, 3),
        "pss_mb": rnd(pss),
        "pss_mb_per_gateway": rnd(pss / n),
        "cluster_cpu_pct": rnd(100 * cpu_used(sa, sb) / dt),
        "cluster_rss_mb": rnd(server_rss),
    }


def _pss(pid: int) -> float:
    try:
        return smaps(pid)["pss_mb"]
    except OSError:
        return 0.0


def _node_kill(
    gws: list[GatewayProcess], ids: list[str], cluster: NatsCluster, after: float
) -> dict[str, Any]:
    urls = cluster.urls
    victim = cluster.nodes[0]
    attempts = [_attempts(g) for g in gws]
    live = [u for u in urls if u != victim.url]
    before = asyncio.run(_last_values(live, ids))
    t0 = time.monotonic()
    victim.kill()

    def back() -> bool:
        if not _connected(gws):
            return False
        now = asyncio.run(_last_values(live, ids))
        return all(now[gw] > before[gw] for gw in ids)

    wait_for(back, 120, "every gateway publishing again after the node's loss", interval=0.5)
    reconnect_s = time.monotonic() - t0
    n = len(gws)
    wait_for(
        lambda: len(asyncio.run(_answers(live, "STATS", n, 2.0))[1]) == n,
        120,
        "every gateway's service answering after the node's loss",
        interval=0.2,
    )
    service_s = time.monotonic() - t0
    time.sleep(after)  # keep publishing on two nodes for a while
    reconnected = sum(_attempts(g) > a for g, a in zip(gws, attempts, strict=True))
    victim.start()  # the check reads with the cluster whole again
    counts = wait_for(
        lambda: asyncio.run(_check_streams(urls, ids)),
        120,
        "the streams read back",
        interval=1,
    )
    return {
        "killed": victim.url,
        "gateways_reconnected": reconnected,  # a new NATS session after the kill
        "all_back_s": rnd(reconnect_s),
        "services_back_s": rnd(service_s),  # every gateway in `fleet ls` again
        "values_checked": counts["values"],
        "lost": counts["lost"],
        "duplicates": counts["duplicates"],
        "ids_twice": counts["ids_twice"],
        "duplicated": counts["duplicated"],  # the first few, with their copies' ids
    }


def _attempts(g: GatewayProcess) -> int:
    """The bridge's NATS connection attempts so far (asked again while a busy machine is slow)."""

    def ask() -> tuple[int]:
        return (int(g.status()["by_name"]["bridge"]["stats"].get("nats_connect_attempts", 0)),)

    return wait_for(ask, 60, "the gateway's status", interval=0.5)[0]


async def _last_values(urls: list[str], ids: list[str]) -> dict[str, int]:
    """The highest counter value each gateway's stream holds (-1 for none)."""
    import msgpack
    import nats

    nc = await nats.connect(urls)
    try:
        js = nc.jetstream(timeout=5)
        out: dict[str, int] = {}
        for gw in ids:
            try:
                m = await js.get_last_msg(f"EDGERT_{gw}", f"{PREFIX}.{gw}.p.gen")
                out[gw] = max(p["value"] for p in msgpack.unpackb(m.data))
            except Exception:  # noqa: BLE001 - none yet, or the stream's leader moving
                out[gw] = -1
        return out
    finally:
        await nc.close()


def tally(messages: list[tuple[str, str, list[int]]]) -> dict[str, Any]:
    """A stream's messages, (subject, message id, counter values), read from its first:
    per counter (each node has its own subject and counts from 0) the values, those
    missing between its lowest and highest (`lost`) and those stored more than once
    (`duplicates`); message ids stored more than once (`ids_twice`: JetStream's dedupe
    should drop any repeat); and each duplicated value's copies (`duplicated`)."""
    where: dict[str, dict[int, list[tuple[int, str]]]] = {}
    ids: Counter[str] = Counter()
    total = 0
    for i, (subject, msg_id, values) in enumerate(messages):
        if msg_id:
            ids[msg_id] += 1
        seen = where.setdefault(subject, {})
        for v in values:
            seen.setdefault(v, []).append((i, msg_id))
            total += 1
    lost = sum(max(w) - min(w) + 1 - len(w) for w in where.values() if w)
    return {
        "values": total,
        "lost": lost,
        "duplicates": total - sum(len(w) for w in where.values()),
        "ids_twice": sum(n - 1 for n in ids.values() if n > 1),
        "duplicated": [
            {"subject": subject, "value": v, "copies": c}
            for subject, w in where.items()
            for v, c in w.items()
            if len(c) > 1
        ],
    }


async def _check_streams(urls: list[str], ids: list[str]) -> dict[str, Any]:
    """Every gateway's stream read whole, from its first message, and `tally`'d."""
    import msgpack
    import nats
    from nats.js.api import ConsumerConfig, DeliverPolicy

    nc = await nats.connect(urls)
    out: dict[str, Any] = {"values": 0, "lost": 0, "duplicates": 0, "ids_twice": 0}
    duplicated: list[dict[str, Any]] = []
    try:
        js = nc.jetstream(timeout=10)
        for gw in ids:
            info = await js.stream_info(f"EDGERT_{gw}")
            sub = await js.subscribe(
                f"{PREFIX}.{gw}.p.>",
                stream=f"EDGERT_{gw}",
                ordered_consumer=True,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            )
            msgs: list[tuple[str, str, list[int]]] = []
            seq = 0
            try:
                while seq < info.state.last_seq:
                    m = await sub.next_msg(timeout=10)
                    seq = m.metadata.sequence.stream
                    msg_id = (m.headers or {}).get("Nats-Msg-Id", "")
                    msgs.append((m.subject, msg_id, [p["value"] for p in msgpack.unpackb(m.data)]))
                    if m.metadata.num_pending == 0:
                        break
            finally:
                await sub.unsubscribe()
            t = tally(msgs)
            for k in out:
                out[k] += t[k]
            duplicated += [{"gateway": gw, **d} for d in t["duplicated"]]
    finally:
        await nc.close()
    return {**out, "duplicated": duplicated[:20]}


def push_all(ids: list[str], urls: list[str], d: Path, rate: float) -> dict[str, Any]:
    """One `edgert fleet push` naming every gateway, of a changed config (one more driver;
    `[nats]` and `[supervisor]` stay each gateway's own): seconds until all reported
    `applied` (the command's wall time, its interpreter's start included), how many
    did, and per gateway the seconds from its put (the KV message's time) to its
    `applied` report (median, slowest)."""
    drivers = sim_counter("gen", rate) + sim_counter("extra", 1.0)  # one more driver
    path = d / "pushed.toml"
    path.write_text(drivers)
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "edgert", "fleet", "push", *ids, str(path), "--json"]
        + ["--nats", urls[0], "--timeout", str(60 + 2 * len(ids))],
        capture_output=True,
        text=True,
        timeout=180 + 2 * len(ids),
    )
    wall = time.monotonic() - t0
    try:
        reports = json.loads(out.stdout)
    except ValueError:
        reports = []
    applied = [r for r in reports if r.get("state") == "applied"]
    res: dict[str, Any] = {"all_applied_s": rnd(wall), "applied": len(applied), "of": len(ids)}
    if applied:
        put = asyncio.run(_put_times(urls, {r["gateway"]: r["revision"] for r in applied}))
        after = sorted(_utc(r["time"]) - put[r["gateway"]] for r in applied)
        res["median_applied_s"] = rnd(after[len(after) // 2])
        res["slowest_applied_s"] = rnd(after[-1])
    if len(applied) < len(ids):
        res["not_applied"] = [r for r in reports if r.get("state") != "applied"][:5] or (
            out.stderr.strip()[-300:]
        )
    return res


async def _put_times(urls: list[str], revisions: dict[str, int]) -> dict[str, float]:
    """When each gateway's revision was put into the desired-config bucket (epoch s)."""
    import nats

    nc = await nats.connect(urls)
    try:
        js = nc.jetstream(timeout=10)
        out = {}
        for gw, rev in revisions.items():
            m = await js.get_msg("KV_edgert-config", seq=rev)
            out[gw] = m.time.timestamp()
        return out
    finally:
        await nc.close()


def _utc(rfc3339: str) -> float:
    """A report's time (RFC 3339, UTC, as the gateways write it) in epoch seconds."""
    import datetime as dt

    when = dt.datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%S.%fZ")
    return when.replace(tzinfo=dt.UTC).timestamp()
