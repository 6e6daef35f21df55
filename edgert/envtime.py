"""Durations a test may shorten through the environment (EDGERT_STREAM_RETRY,
EDGERT_HEARTBEAT_MAX, EDGERT_STATUS_EVERY): read leniently, the default kept for
anything that is not a number within the bounds."""

from __future__ import annotations

import os

__all__ = ["env_seconds"]


def env_seconds(name: str, default: float, low: float, high: float) -> float:
    """The number of seconds in environment variable `name` when it is one from `low`
    to `high`; `default` when it is unset, not a number, or out of bounds."""
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if low <= value <= high else default
