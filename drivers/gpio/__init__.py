"""The `gpio` driver: Linux GPIO lines through libgpiod v2, or a simulated chip.

`driver` is the actor, `config` its keys, `backend` the interface both chips
satisfy, `kernel` the libgpiod one, `simchip` the simulated one, and `simcli`
the `edgert sim gpio` command that drives a simulated chip.
"""

from .config import GpioConfig, Line
from .driver import GpioDriver

__all__ = ["GpioDriver", "GpioConfig", "Line"]
