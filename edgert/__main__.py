"""The `edgert` program: `python -m edgert`, and the `edgert` script's entry point.

Kept apart from `edgert.cli` so that a Ctrl-C while the command line is still
being imported (click and the command modules take a while on a small device)
ends the program quietly, exit 130, instead of with a traceback: nothing has
started yet. From there on, `edgert.cli` answers a Ctrl-C itself.

`edgert run CONFIG` (with `-v` flags before `run` or not) takes a short path
that never imports click or the other commands: that process supervises the
gateway for as long as it runs, and what it imported stays in its memory (about
1.5 MB). Every other form, `edgert run --help` and every mistake included, goes
to click, so usage errors and help read the same as ever.
"""

from __future__ import annotations

import os
import sys


def run_args(args: list[str]) -> tuple[str, int] | None:
    """(CONFIG, verbosity) when `args` is a plain `[-v...] run CONFIG`, else None."""
    verbose = 0
    i = 0
    while i < len(args) and (
        args[i] == "--verbose" or (len(args[i]) > 1 and args[i].strip("v") == "-")
    ):
        verbose += 1 if args[i] == "--verbose" else len(args[i]) - 1
        i += 1
    rest = args[i:]
    if len(rest) != 2 or rest[0] != "run":
        return None
    config = rest[1]
    if not config or config.startswith("-") or os.path.isdir(config):
        return None  # an option, or a folder: click says what is wrong
    return config, verbose


def _run(config: str, verbose: int) -> int:
    from edgert.runcmd import EXIT_FAILED, EXIT_OK, EXIT_USAGE, run_gateway, say

    try:
        return run_gateway(config, verbose)
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:  # noqa: BLE001 - as the click command reports it
        config_mod = sys.modules.get("edgert.config")
        bad_config = config_mod is not None and isinstance(e, config_mod.ConfigError)
        if verbose:
            import traceback

            traceback.print_exception(e)
        say("error", str(e) or type(e).__name__)  # a config's problems: one line each
        return EXIT_USAGE if bad_config else EXIT_FAILED


def main() -> None:
    try:
        short = run_args(sys.argv[1:])
        if short is not None:
            sys.exit(_run(*short))
        from edgert.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
