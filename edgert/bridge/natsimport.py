"""The bridge's imports: nats-py without importlib.metadata, and OpenSSL only for TLS.

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
real importlib.metadata, as nats-py would have. Likewise nats-py's JetStream
modules each make an `email.parser.BytesParser` at their import, which loads
a dozen `email` modules and `calendar` (0.4 MB), to parse the headers of a
message read with `get_msg(direct=False)`, which the bridge never calls: they
get a `BytesParser` that makes the real one at its first use.

asyncio, nats-py and the uplink all import `ssl`, and nats-py's `secrets`
imports `hmac` and with it `_hashlib`: both load OpenSSL (libcrypto, libssl),
whose start-up and relocations, and the enums `ssl` builds, cost the bridge
about 3 MB, though a gateway that talks to its NATS server without TLS never
uses them. `defer_openssl()`, called by the bridge's module before it imports
anything else, imports asyncio while `ssl` cannot be imported (asyncio then
holds `ssl = None`, as on a Python built without it) and hashlib and hmac
while `_hashlib` cannot be (they then use Python's own hash functions: the
bridge hashes nothing where speed matters), and puts in `sys.modules` a
stand-in `ssl` that imports the real module at its first use: a `tls_ca`
option, a `tls://` URL, a server that asks for TLS, or asyncio asked for TLS
with `ssl=True` (its TLS protocol holds the stand-in). That first use also
gives asyncio the real module back (its three modules that hold it, and the
one tuple of exceptions it builds from it), so TLS works as before.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from typing import Any

__all__ = ["import_nats", "defer_openssl"]

DIST = "nats-py"
PREFIX = "nats_py-"  # its .dist-info folder: the normalized name, '-', the version
SUFFIX = ".dist-info"


def import_nats() -> types.ModuleType:
    """The `nats` package (and `nats.js`), imported in this process if it was not."""
    if "nats" not in sys.modules and "importlib.metadata" not in sys.modules:
        stand_in = types.ModuleType("importlib.metadata")
        stand_in.version = _version  # type: ignore[attr-defined]
        sys.modules["importlib.metadata"] = stand_in
        parser = None
        if "email.parser" not in sys.modules:
            parser = types.ModuleType("email.parser")
            parser.BytesParser = _BytesParser  # type: ignore[attr-defined]
            sys.modules["email.parser"] = parser
        try:
            import nats.js  # noqa: F401 - the client imports it anyway
        finally:
            if sys.modules.get("importlib.metadata") is stand_in:
                del sys.modules["importlib.metadata"]
            if parser is not None and sys.modules.get("email.parser") is parser:
                del sys.modules["email.parser"]  # the real one for whoever imports it
    import nats

    return nats


def _version(name: str) -> str:
    """`importlib.metadata.version`, for nats-py while it is being imported."""
    found = _dist_info_version() if name == DIST else None
    if found:
        return found
    del sys.modules["importlib.metadata"]  # the stand-in: the real one from here on
    if getattr(sys.modules.get("email.parser"), "BytesParser", None) is _BytesParser:
        del sys.modules["email.parser"]  # the real lookup reads the metadata with it
    from importlib.metadata import version

    return version(name)


class _BytesParser:
    """`email.parser.BytesParser`, made at the first use of one of its attributes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._made: tuple[Any, ...] = (args, kwargs)

    def __getattr__(self, name: str) -> Any:
        made = self.__dict__["_made"]
        if isinstance(made, tuple):
            from email.parser import BytesParser

            made = self._made = BytesParser(*made[0], **made[1])
        return getattr(made, name)


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


# -- OpenSSL at its first use ----------------------------------------------------------
# asyncio's modules that import ssl (`ssl = None` without it), on Python 3.11 to 3.13
ASYNCIO_SSL = ("asyncio.base_events", "asyncio.selector_events", "asyncio.sslproto")
# the Pythons whose asyncio was read for them (and is tested): on another, the bridge
# loads OpenSSL at once, as it did, rather than guess what a new asyncio holds
CHECKED = ((3, 11), (3, 12), (3, 13))


def defer_openssl() -> bool:
    """Import asyncio, hashlib and hmac without OpenSSL, and leave `ssl` to be imported
    at its first use (see the module's doc). True when it did; False, changing nothing,
    when this process has imported ssl or asyncio already, or on a Python not in
    `CHECKED`."""
    if sys.version_info[:2] not in CHECKED:
        return False
    if any(m in sys.modules for m in ("ssl", "_ssl", "_hashlib", "asyncio", "hashlib", "hmac")):
        return False
    spec = importlib.util.find_spec("ssl")
    if spec is None:  # a Python without ssl: nothing to defer
        return False
    sys.modules["ssl"] = None  # type: ignore[assignment] - `import ssl` raises ImportError
    sys.modules["_hashlib"] = None  # type: ignore[assignment]
    try:
        import asyncio  # noqa: F401 - holds ssl = None until `_SSL` loads it
        import hashlib  # noqa: F401 - Python's own hash functions
        import hmac  # noqa: F401
    finally:
        del sys.modules["_hashlib"]  # an explicit import of it later loads it
        sys.modules["ssl"] = stand_in = _SSL(spec)
    # asyncio's TLS protocol refuses to start while it holds ssl = None, and with
    # `ssl=True` it makes the context itself, a first use no one else sees: it gets the
    # stand-in (it touches `ssl` only for TLS), whose first use gives asyncio the real one
    sslproto = sys.modules.get("asyncio.sslproto")
    if sslproto is not None and vars(sslproto).get("ssl", 0) is None:
        sslproto.ssl = stand_in  # type: ignore[attr-defined]
    return True


class _SSL(types.ModuleType):
    """`ssl` until its first use, which imports the real module (see the module's doc)."""

    def __init__(self, spec: Any) -> None:
        super().__init__("ssl")
        self.__spec__ = spec

    def __getattr__(self, name: str) -> Any:
        real = _load_ssl(self)
        self.__dict__.update(real.__dict__)  # from now on a plain module of the same names
        return getattr(real, name)


def _load_ssl(stand_in: types.ModuleType) -> types.ModuleType:
    if sys.modules.get("ssl") is stand_in:
        del sys.modules["ssl"]
    real = importlib.import_module("ssl")
    for name in ASYNCIO_SSL:
        mod = sys.modules.get(name)
        if mod is not None and vars(mod).get("ssl", 0) in (None, stand_in):
            mod.ssl = real  # type: ignore[attr-defined]
    sslproto = sys.modules.get("asyncio.sslproto")
    if sslproto is not None and not hasattr(sslproto, "SSLAgainErrors"):
        # what sslproto builds at its import when it has ssl
        sslproto.SSLAgainErrors = (real.SSLWantReadError, real.SSLSyscallError)  # type: ignore[attr-defined]
    return real
