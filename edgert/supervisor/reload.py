"""What a reload changes: the running children against the re-read config. Pure.

A child whose spec (class, config, restart type, criticality, code) is equal
is kept and keeps its process; a different one is changed (stopped, then its
successor started); one no longer in the config is removed; a new one added.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Changes", "diff"]


@dataclass
class Changes:
    added: list[Any] = field(default_factory=list)  # new specs
    changed: dict[str, Any] = field(default_factory=dict)  # name -> new spec
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def names(self) -> dict[str, list[str]]:
        return {
            "added": [cs.spec.name for cs in self.added],
            "changed": list(self.changed),
            "removed": list(self.removed),
            "kept": list(self.kept),
        }


def diff(current: Mapping[str, Any], wanted: Iterable[Any]) -> Changes:
    """`current`: name -> the spec each child runs (or will run); `wanted`: the new specs."""
    out = Changes()
    new = {cs.spec.name: cs for cs in wanted}
    for name, cs in current.items():
        w = new.pop(name, None)
        if w is None:
            out.removed.append(name)
        elif w != cs:
            out.changed[name] = w
        else:
            out.kept.append(name)
    out.added.extend(new.values())
    return out
