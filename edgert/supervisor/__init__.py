"""Supervision: the pure restart policy, the loop that applies it, reload and control.

`policy` decides what happens to an actor that exited (pure, tested without
processes), `reload` compares a re-read config with what runs, `loop` is the
`Supervisor` that owns the processes, and `control` is the control socket
`edgert status` and `edgert reload` talk to.
"""

from .loop import ChildSpec, GroupFailed, Supervisor
from .policy import Decision, History, Policy

__all__ = ["Supervisor", "ChildSpec", "GroupFailed", "Policy", "History", "Decision"]
