"""Log lines stamped in UTC with a Z, as `edgert tail` and `values` print times.

`handler(fmt)` is a stderr handler whose formatter writes `%(asctime)s` as
`2026-11-30T12:00:00.123Z` (UTC, whatever the machine's time zone), so the
supervisor's and every actor's lines compare with the points' times at a glance.
"""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["handler"]


def handler(fmt: str) -> logging.Handler:
    fmt = fmt.replace("%(asctime)s", "%(asctime)s.%(msecs)03dZ")
    formatter = logging.Formatter(fmt, datefmt="%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime  # this formatter only: nothing global changes
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(formatter)
    return h
