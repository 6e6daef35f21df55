"""edgert: a multiprocessing actor runtime for edge gateways.

The names a driver author uses live here: `Actor`, `Context`, the messages
`receive` returns (`Stop`, `Command`, `Status`, `Readable`), `Point`,
`Invalid` (a config check's error) and `every` (a drift-free periodic timer).
`Runtime` and `ConfigError` (for programs that run a gateway) are importable
from here too.

Each name is imported from its module on first use, so `import edgert` (and so
`edgert --help`, `edgert status`, or a driver process) loads only what it uses.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .actor import Actor, Command, Message, Readable, Status, Stop
    from .config import ConfigError, Invalid
    from .context import Context
    from .point import Point
    from .runtime import Runtime
    from .timers import Every, every

# name -> the submodule that defines it
_EXPORTS = {
    "Actor": "actor",
    "Command": "actor",
    "Message": "actor",
    "Readable": "actor",
    "Status": "actor",
    "Stop": "actor",
    "Context": "context",
    "ConfigError": "config",
    "Invalid": "config",
    "Point": "point",
    "Runtime": "runtime",
    "Every": "timers",
    "every": "timers",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edgert' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
