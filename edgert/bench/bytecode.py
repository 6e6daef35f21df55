"""Bytecode caches for the gateways the benchmarks start, as an installed edgert has them.

pip writes every module's bytecode cache as it installs a package, and Python writes
one at a module's first import where it may (`__pycache__`). Without them (a clone
run with PYTHONDONTWRITEBYTECODE set, as some CI images do), every gateway process
compiles each edgert module it imports, and what the compiler allocated stays in its
heap: the demo gateway then holds about 2 MB more than an installed one. `ensure()`
writes the caches of edgert's and its shipped drivers' modules that are missing or
stale, as that first import would have, so the memory figures are an installed
gateway's; what it found and did is reported with them.
"""

from __future__ import annotations

import compileall
import importlib.util
import os
from pathlib import Path

__all__ = ["ensure"]

PACKAGES = ("edgert", "edgert_drivers")


def _sources() -> list[Path]:
    out: list[Path] = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        for base in (spec.submodule_search_locations or []) if spec else []:
            out.extend(sorted(Path(base).rglob("*.py")))
    return out


def _stale(source: Path) -> bool:
    try:
        cache = os.stat(importlib.util.cache_from_source(str(source)))
        return cache.st_mtime < os.stat(source).st_mtime
    except (OSError, NotImplementedError):
        return True


def ensure() -> str:
    """Write the missing or stale bytecode caches of edgert's modules; what was done."""
    sources = _sources()
    missing = [s for s in sources if _stale(s)]
    if not missing:
        return f"present for all {len(sources)} modules"
    for s in missing:
        compileall.compile_file(str(s), quiet=2, force=True)
    left = sum(_stale(s) for s in missing)
    if left:
        return (
            f"{left} of {len(sources)} modules have none and could not be written: "
            "their processes compile them, the memory figures include it"
        )
    return f"written for {len(missing)} of {len(sources)} modules (as a first import would)"
