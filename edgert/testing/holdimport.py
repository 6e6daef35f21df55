"""Hold a process's first import of one module until the test lets it go.

`hold_import(directory, module)` writes a `sitecustomize` into `directory`
and returns the environment to start a Python process with and the mark file:
when the process reaches the import, it writes its pid into the mark and waits
until the test removes it. Tests use it to act (a signal) at a known moment of
a start-up, without sleeping.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["hold_import"]

_SITECUSTOMIZE = '''
import os, sys, time

class _Hold:
    """Holds the first import of one module until the test removes the mark file,
    which says the pid of the process that holds."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != os.environ["HOLD_IMPORT"]:
            return None
        sys.meta_path.remove(_Hold)
        mark = os.environ["HOLD_MARK"]
        with open(mark + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(mark + ".tmp", mark)
        while os.path.exists(mark):
            time.sleep(0.01)
        return None

sys.meta_path.insert(0, _Hold)
'''


def hold_import(directory: Path, module: str) -> tuple[dict[str, str], Path]:
    """(environment, mark file) for a process whose import of `module` waits for the
    mark's removal; `directory` holds the hook and the mark."""
    hook = directory / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    mark = directory / "held"
    env = dict(os.environ, PYTHONPATH=str(hook), HOLD_IMPORT=module, HOLD_MARK=str(mark))
    return env, mark
