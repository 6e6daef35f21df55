"""The `edgert` program: `python -m edgert`, and the `edgert` script's entry point.

Kept apart from `edgert.cli` so that a Ctrl-C while the command line is still
being imported (click and the command modules take a while on a small device)
ends the program quietly, exit 130, instead of with a traceback: nothing has
started yet. From there on, `edgert.cli` answers a Ctrl-C itself.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from edgert.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
