"""Supervision: the pure restart policy, the loop that applies it, reload and control.

`policy` decides what happens to an actor that exited (pure, tested without
processes), `reload` compares a re-read config with what runs, `loop` is the
`Supervisor` that owns the processes, and `control` is the control socket
`edgert status` and `edgert reload` talk to. The names below are loaded on
first use, so a client of the control socket (`edgert status`) loads neither
the loop nor the process layer.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .loop import ChildSpec, GroupFailed, Supervisor
    from .policy import Decision, History, Policy

__all__ = ["Supervisor", "ChildSpec", "GroupFailed", "Policy", "History", "Decision"]

_WHERE = {
    "Supervisor": "loop",
    "ChildSpec": "loop",
    "GroupFailed": "loop",
    "Policy": "policy",
    "History": "policy",
    "Decision": "policy",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
