"""nats-py imported without importlib.metadata, with its version right all the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, sys
import edgert.bridge.natsimport as ni
if sys.argv[1] == "elsewhere":
    ni.PREFIX = "no_such_dist-"  # its dist-info folder not found: the real lookup
nats = ni.import_nats()
import nats.aio.client
loaded = "importlib.metadata" in sys.modules
email_loaded = "email.feedparser" in sys.modules or "calendar" in sys.modules
import nats.js.manager
parsed = nats.js.manager.BytesParser().parsebytes(b"Nats-Msg-Id: 7\\r\\n\\r\\n")["Nats-Msg-Id"]
real_parser = "email.feedparser" in sys.modules and hasattr(sys.modules["email.parser"], "Parser")
real = sys.modules.get("importlib.metadata")
import inspect  # nats-py before 2.10 wrote its version in its source: no lookup at all
asks = "importlib.metadata" in inspect.getsource(nats.aio.client)
from importlib.metadata import entry_points, version  # the real one, whatever came before
print(json.dumps({
    "client": nats.aio.client.__version__,
    "version": version("nats-py"),
    "loaded": loaded,
    "asks": asks,
    "real": real is None or hasattr(real, "entry_points"),
    "js": "nats.js" in sys.modules,
    "again": ni.import_nats() is nats,
    "email_loaded": email_loaded,
    "parsed": parsed,
    "real_parser": real_parser,
}))
"""


def probe(where: str) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", PROBE, where], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_nats_is_imported_without_importlib_metadata_and_knows_its_version() -> None:
    got = probe("dist-info")
    assert got["client"] == got["version"] != "0.0.0"
    assert got["loaded"] is False  # nor zipfile, email.message, csv with it
    assert got["js"] and got["again"] and got["real"]
    # nor the email package until a JetStream parser parses: then the real one does
    assert got["email_loaded"] is False
    assert got["parsed"] == "7" and got["real_parser"]


def test_without_its_dist_info_folder_the_real_lookup_gives_the_version() -> None:
    got = probe("elsewhere")
    assert got["client"] == got["version"] != "0.0.0"
    assert got["loaded"] is got["asks"] and got["real"]  # the real module, when it asks


# -- OpenSSL at its first use ------------------------------------------------------------
TLS_PROBE = """
import json, sys
import edgert.bridge.actor  # what the bridge's process imports, first thing
from edgert.bridge.natsimport import import_nats
import_nats()

def mapped(lib):
    with open("/proc/self/maps") as f:
        return lib in f.read()

from edgert.bridge.natsimport import ASYNCIO_SSL
before = {
    "ssl": "_ssl" in sys.modules, "hashlib": "_hashlib" in sys.modules,
    "libssl": mapped("libssl"), "libcrypto": mapped("libcrypto"),
}
# every asyncio module left holding `ssl = None` is one the first use gives it back to
unreturned = sorted(
    name for name, mod in list(sys.modules.items())
    if name.startswith("asyncio") and name not in ASYNCIO_SSL
    and mod is not None and "ssl" in vars(mod) and vars(mod)["ssl"] is None
)
import asyncio, hashlib, ssl

ca, cert, key = sys.argv[1:4]

async def main():
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # the first use: the real module
    server_ctx.load_cert_chain(cert, key)

    async def echo(r, w):
        w.write((await r.readline()).upper())
        await w.drain()
        w.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ssl.create_default_context(cafile=ca)
    )
    w.write(b"hello\\n")
    got = await r.readline()
    w.close()
    server.close()
    return got.decode()

print(json.dumps({
    "before": before,
    "unreturned": unreturned,
    "echo": asyncio.run(main()),
    "asyncio_has_ssl": asyncio.sslproto.ssl is sys.modules["ssl"] is asyncio.base_events.ssl,
    "real": hasattr(sys.modules["ssl"], "_ssl") and "_ssl" in sys.modules,
    "sha256": hashlib.sha256(b"x").hexdigest()[:8],
}))
"""


def test_the_bridge_loads_openssl_only_when_tls_is_used(short_dir) -> None:
    from edgert.testing.nats import make_certificates

    c = make_certificates(short_dir / "certs")
    r = subprocess.run(
        [sys.executable, "-c", TLS_PROBE, c["ca"], c["server_cert"], c["server_key"]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["unreturned"] == []
    # asyncio, nats-py, hashlib and the bridge's modules imported: no OpenSSL yet
    assert got["before"] == {"ssl": False, "hashlib": False, "libssl": False, "libcrypto": False}
    # its first use loads it, and asyncio speaks TLS with it as it always did
    assert got["echo"] == "HELLO\n"
    assert got["asyncio_has_ssl"] and got["real"]
    assert got["sha256"] == "2d711642"


def test_a_server_that_asks_for_tls_gets_it_from_a_nats_url(
    make_config, short_dir, monkeypatch
) -> None:
    """No TLS option, a `nats://` URL, a server that requires TLS: nats-py upgrades the
    connection with a default context, the bridge's first use of ssl."""
    from edgert.testing import running_gateway, wait_for
    from edgert.testing.nats import NatsProcess, Subscriber, make_certificates

    c = make_certificates(short_dir / "certs")
    monkeypatch.setenv("SSL_CERT_FILE", c["ca"])  # the default context trusts the test CA
    with NatsProcess(
        short_dir / "nats", tls={"cert": c["server_cert"], "key": c["server_key"]}
    ) as srv:
        url = srv.url.replace("tls://", "nats://")
        cfg = make_config(
            f'[nats]\nurl = "{url}"\n'
            '[[driver]]\nname = "gen"\ntype = "sim"\n'
            '[[driver.signal]]\nname = "n"\nshape = "counter"\nrate = 50.0\n'
        )
        client = __import__("ssl").create_default_context(cafile=c["ca"])
        with Subscriber(srv.url, "edgert.gw.p.gen", tls=client) as sub, running_gateway(cfg):
            wait_for(lambda: len(sub.points()) >= 20, 20, "points over TLS from a nats:// URL")


TLS_SERVER = """
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
with socket.create_server(("127.0.0.1", 0)) as srv:
    print(srv.getsockname()[1], flush=True)
    srv.settimeout(30)
    conn, _ = srv.accept()
    with ctx.wrap_socket(conn, server_side=True) as tls:
        tls.sendall(tls.recv(100).upper())
"""

ASYNCIO_TLS_TRUE = """
import sys
import edgert.bridge.actor  # what the bridge's process imports, first thing
import asyncio
print(type(sys.modules["ssl"]).__name__, "_ssl" in sys.modules)

async def main():
    # ssl=True: asyncio makes the default context itself, no one touched `ssl` before
    r, w = await asyncio.open_connection("127.0.0.1", int(sys.argv[1]), ssl=True)
    w.write(b"hello")
    got = await r.read(5)
    w.close()
    return got.decode()

print(asyncio.run(main()))
"""


def test_asyncio_makes_its_own_tls_context_in_the_bridges_process(short_dir) -> None:
    """`ssl=True` to asyncio is a first use of OpenSSL that never goes through the
    stand-in `ssl` (asyncio builds the context itself): it must work as it did,
    not fail with "stdlib ssl module not available"."""
    from edgert.testing.nats import make_certificates

    c = make_certificates(short_dir / "certs")
    server = subprocess.Popen(
        [sys.executable, "-c", TLS_SERVER, c["server_cert"], c["server_key"]],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        r = subprocess.run(
            [sys.executable, "-c", ASYNCIO_TLS_TRUE, port],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "SSL_CERT_FILE": c["ca"]},  # the default context trusts it
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["_SSL", "False", "HELLO"]  # deferred, then used
    finally:
        server.kill()
        server.wait(30)
        server.stdout.close()
