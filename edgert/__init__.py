"""edgert: a multiprocessing actor runtime for edge gateways.

The public API lives here: `Actor`, `Context` and the messages its `receive`
returns (`Stop`, `Command`, `Status`, `Readable`), `Point`, `Runtime`,
`ConfigError`.
"""

from .actor import Actor, Command, Context, Message, Readable, Status, Stop
from .config import ConfigError
from .point import Point
from .runtime import Runtime

__all__ = [
    "Actor",
    "Command",
    "Context",
    "Message",
    "Readable",
    "Status",
    "Stop",
    "Point",
    "Runtime",
    "ConfigError",
]
__version__ = "0.1.0"
