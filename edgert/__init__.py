"""edgert: a multiprocessing actor runtime for edge gateways.

The names a driver author uses live here: `Actor`, `Context`, the messages
`receive` returns (`Stop`, `Command`, `Status`, `Readable`), `Point`,
`Invalid` (a config check's error) and `every` (a drift-free periodic timer).
Importing them loads no more than a driver process needs.

`Runtime` and `ConfigError` (for programs that run a gateway) are importable
from here too; `Runtime` is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .actor import Actor, Command, Message, Readable, Status, Stop
from .config import ConfigError, Invalid
from .context import Context
from .point import Point
from .timers import Every, every

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = [
    "Actor",
    "Command",
    "Context",
    "Every",
    "Invalid",
    "Message",
    "Point",
    "Readable",
    "Status",
    "Stop",
    "every",
    "ConfigError",
    "Runtime",
]
__version__ = "0.1.0"

_LAZY = {"Runtime": ".runtime"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
