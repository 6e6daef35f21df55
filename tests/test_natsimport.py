"""nats-py imported without importlib.metadata, with its version right all the same."""

from __future__ import annotations

import json
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


def test_without_its_dist_info_folder_the_real_lookup_gives_the_version() -> None:
    got = probe("elsewhere")
    assert got["client"] == got["version"] != "0.0.0"
    assert got["loaded"] is got["asks"] and got["real"]  # the real module, when it asks
