"""The body of `edgert run CONFIG`, without the command line around it.

Both ways in call `run_gateway`: click's `run` command (`edgert.cli`) and the
short path of `edgert/__main__.py`, which starts `edgert run CONFIG` without
loading click and the other commands (about 1.5 MB less in the supervisor
process, which runs as long as the gateway). Standard library only at import.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def say(level: str, text: str) -> None:
    """`edgert: LEVEL: LINE` on stderr for each line of `text` (the CLI's one format)."""
    for line in text.splitlines() or [""]:
        print(f"edgert: {level}: {line}", file=sys.stderr, flush=True)


def _setup_logging(verbose: int) -> int:
    import logging

    from edgert.logs import handler

    level = logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(
        level=level, handlers=[handler("%(asctime)s %(levelname)s %(name)s: %(message)s")]
    )
    return level


def run_gateway(config: str, verbose: int = 0) -> int:
    """Run the gateway in `config` until SIGTERM or SIGINT; return the exit code.

    0 on a clean stop, 1 when failures tore the group down, 2 when the gateway
    could not start (another one holds its runtime directory). A bad config
    raises `ConfigError`; the caller reports it (exit 2).
    """
    # SIGTERM and SIGINT stop the gateway at any moment: taken over first, so one
    # that comes while the config loads stops it before anything starts (exit 0).
    rt = None
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True
        if rt is not None:
            rt.stop()

    taken = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    before = {sig: signal.getsignal(sig) for sig in taken}
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    try:
        from edgert.config import load
        from edgert.runtime import GroupFailed, Runtime, RuntimeBusy

        cfg = load(config)
        level = _setup_logging(verbose)
        rt = Runtime(cfg, log_level=level, fork_zygote=True)
        if stopping:
            return EXIT_OK
        signal.signal(signal.SIGHUP, lambda *_: rt.reload())
        try:
            rt.run()
        except GroupFailed as e:
            say("error", f"gateway {cfg.gateway.id!r} torn down: {e}")
            return EXIT_FAILED
        except RuntimeBusy as e:  # what `check` reports as errors: nothing was started
            say("error", "\n".join(f"{config}: {line}" for line in str(e).splitlines()))
            return EXIT_USAGE
        return EXIT_OK
    finally:
        for sig, handler in before.items():  # as they were (`run` called in-process)
            if handler is not None:
                signal.signal(sig, handler)
