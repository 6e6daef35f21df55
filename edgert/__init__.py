"""edgert: a multiprocessing actor runtime for edge gateways.

The public API lives here: `Actor`, `Context` and the messages its `receive`
returns (`Stop`, `Command`, `Status`, `Readable`), `Point`, `Group`, `Runtime`,
`ConfigError`.

Each name is imported from its module on first use, so `import edgert` (and so
`edgert --help` or `edgert status`) does not load the runtime.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .actor import Actor, Command, Context, Message, Readable, Status, Stop
    from .config import ConfigError
    from .group import Group
    from .point import Point
    from .runtime import Runtime

# name -> the submodule that defines it
_EXPORTS = {
    "Actor": "actor",
    "Command": "actor",
    "Context": "actor",
    "Message": "actor",
    "Readable": "actor",
    "Status": "actor",
    "Stop": "actor",
    "ConfigError": "config",
    "Group": "group",
    "Point": "point",
    "Runtime": "runtime",
}

__all__ = [
    "Actor",
    "Command",
    "Context",
    "Message",
    "Readable",
    "Status",
    "Stop",
    "Point",
    "Group",
    "Runtime",
    "ConfigError",
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
