"""nats-py, imported without importlib.metadata.

nats-py reads its own version when it is imported, with
`importlib.metadata.version("nats-py")`, and that import loads
importlib.metadata and with it zipfile, csv, email.message and
importlib.resources: about 1.2 MB of the bridge's private memory (it imports
them after its fork, copying the pages it shares with the zygote as it goes),
for one string it sends to the server. `import_nats()` imports nats-py with a
stand-in for that module whose `version` reads nats-py's version from the name
of its `.dist-info` folder, and takes the stand-in out of `sys.modules` at
once: whatever imports importlib.metadata later gets the real one. Where the
folder is not found (nats-py installed some other way), the stand-in asks the
real importlib.metadata, as nats-py would have.
"""

from __future__ import annotations

import os
import sys
import types

__all__ = ["import_nats"]

DIST = "nats-py"
PREFIX = "nats_py-"  # its .dist-info folder: the normalized name, '-', the version
SUFFIX = ".dist-info"


def import_nats() -> types.ModuleType:
    """The `nats` package (and `nats.js`), imported in this process if it was not."""
    if "nats" not in sys.modules and "importlib.metadata" not in sys.modules:
        stand_in = types.ModuleType("importlib.metadata")
        stand_in.version = _version  # type: ignore[attr-defined]
        sys.modules["importlib.metadata"] = stand_in
        try:
            import nats.js  # noqa: F401 - the client imports it anyway
        finally:
            if sys.modules.get("importlib.metadata") is stand_in:
                del sys.modules["importlib.metadata"]
    import nats

    return nats


def _version(name: str) -> str:
    """`importlib.metadata.version`, for nats-py while it is being imported."""
    found = _dist_info_version() if name == DIST else None
    if found:
        return found
    del sys.modules["importlib.metadata"]  # the stand-in: the real one from here on
    from importlib.metadata import version

    return version(name)


def _dist_info_version() -> str | None:
    """nats-py's version from its `nats_py-<version>.dist-info` folder beside the package."""
    pkg = sys.modules.get("nats")
    paths = list(getattr(pkg, "__path__", ()))
    if not paths:
        return None
    site = os.path.dirname(os.path.abspath(paths[0]))
    try:
        names = [n for n in os.listdir(site) if n.startswith(PREFIX) and n.endswith(SUFFIX)]
    except OSError:
        return None
    if len(names) != 1:  # none, or several: which one is this? the real lookup says
        return None
    return names[0][len(PREFIX) : -len(SUFFIX)] or None
