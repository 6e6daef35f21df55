"""A site as a leaf node of a hub, each with its own JetStream domain (deploy/).

The recipe's own files run on loopback: the hub (deploy/nats-hub.conf) with
the stream that sources every site (deploy/hub-sites-stream.json), a site
server (deploy/nats-site.conf) whose leaf link to the hub goes through a
proxy that can cut it, and `edgert run` on the site publishing a counter into
the site's JetStream (`jetstream_domain`). With the link cut for 20 s the
points keep landing, acknowledged, in the site's stream; once it is restored
the hub's sourced stream holds every counter value, in order, none twice.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from edgert.bench.gateway import GatewayProcess, config_text, sim_counter
from edgert.testing import wait_for
from edgert.testing.nats import LinkProxy, NatsProcess, decode, free_port, stream_messages

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RATE = 20.0  # counter values per second
CUT = 20.0  # seconds the leaf link is down


def recipe(name: str, replace: dict[str, str]) -> str:
    """A deploy/ file with its production values swapped for the test's (each must be there)."""
    text = (DEPLOY / name).read_text()
    for old, new in replace.items():
        assert old in text, f"deploy/{name} no longer has {old!r}"
        text = text.replace(old, new)
    return text


def counters(url: str, stream: str) -> list[int]:
    """The counter values in a stream's point messages, in stream order."""
    msgs = stream_messages(url, stream)
    return [p["value"] for m in msgs if ".p." in m.subject for p in decode(m)]


def add_stream(url: str, config: dict) -> None:
    """Create a stream from its JSON definition, as `nats stream add --config` does."""

    async def add() -> dict:
        import nats

        nc = await nats.connect(url)
        try:
            subject = f"$JS.API.STREAM.CREATE.{config['name']}"
            return json.loads((await nc.request(subject, json.dumps(config).encode(), 10)).data)
        finally:
            await nc.close()

    reply = asyncio.run(add())
    assert "error" not in reply, reply


def server(directory: Path, conf: str) -> NatsProcess:
    """A nats-server running `conf` (its listen address set by NatsProcess)."""
    conf = re.sub(r"(?m)^listen: .*$", "", conf)
    return NatsProcess(directory, config=conf)


@pytest.mark.slow
def test_site_keeps_points_while_its_link_is_cut_and_the_hub_gets_each_once(
    short_dir: Path,
) -> None:
    leaf_port = free_port()
    hub = server(
        short_dir / "hub",
        recipe(
            "nats-hub.conf",
            {
                '"/var/lib/nats/hub"': f'"{short_dir}/hub"',
                # the hub must not tell the site its own address: the site would
                # reconnect around the proxy that cuts the link
                "listen: 0.0.0.0:7422": f"listen: 127.0.0.1:{leaf_port}\n  no_advertise: true",
            },
        ),
    )
    with hub, LinkProxy(leaf_port) as link:
        site = server(
            short_dir / "site",
            recipe(
                "nats-site.conf",
                {
                    '"/var/lib/nats/site1"': f'"{short_dir}/site"',
                    "nats-leaf://hub.example.com:7422": f"nats-leaf://127.0.0.1:{link.port}",
                },
            ),
        )
        add_stream(hub.url, json.loads((DEPLOY / "hub-sites-stream.json").read_text()))
        with site:
            nats = 'jetstream_domain = "site1"\nstream = "EDGERT_gw1"\n'
            text = config_text(
                short_dir / "gw",
                site.url,
                sim_counter("gen", RATE),
                gateway_id="gw1",
                jetstream=True,
            ).replace("[nats]\n", f"[nats]\n{nats}")
            with GatewayProcess(text, short_dir / "gw") as gw:
                gw.wait_running()
                wait_for(lambda: len(counters(hub.url, "SITES")) > 20, 60, "points at the hub")

                link.cut()
                at_cut = max(counters(site.url, "EDGERT_gw1"))
                # the site's stream keeps taking points for the length of the cut
                wait_for(
                    lambda: max(counters(site.url, "EDGERT_gw1")) >= at_cut + CUT * RATE,
                    CUT * 4,
                    "points in the site's stream while the link is cut",
                    interval=0.5,
                )
                on_site = max(counters(site.url, "EDGERT_gw1"))
                assert max(counters(hub.url, "SITES")) < on_site - RATE, "the link was not cut"
                assert gw.status()["by_name"]["bridge"]["stats"].get("nats") == "connected"

                link.restore()
                wait_for(
                    lambda: max(counters(hub.url, "SITES")) >= on_site + RATE,
                    60,
                    "the hub catching up after the link is back",
                    interval=0.5,
                )
            values = counters(hub.url, "SITES")
            assert values == list(range(len(values))), "every value, in order, none twice"
            assert len(values) > on_site
