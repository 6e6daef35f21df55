"""The `sim` driver: a signal generator for the demo, tests and benchmarks."""

from .driver import Signal, SimConfig, SimDriver

__all__ = ["SimDriver", "SimConfig", "Signal"]
