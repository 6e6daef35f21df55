"""edgert: a multiprocessing actor runtime for edge gateways.

The public API lives here: `Actor`, `Context`, `Stop`, `Command`, `Status`,
`Point`, `Group`, `Runtime`, `ConfigError`.
"""

from .actor import Actor, Command, Context, Message, Status, Stop
from .config import ConfigError
from .point import Point

__all__ = ["Actor", "Command", "Context", "Message", "Status", "Stop", "Point", "ConfigError"]
__version__ = "0.1.0"
