"""Start a Python module in a child process that dies with the grader, even on SIGKILL."""

from __future__ import annotations

import sys
from pathlib import Path

from grader.isolation import launcher

# Runs first in the child (grader.isolation.launcher), handed over as source: the child may not
# see the grader package.
_LAUNCHER = Path(launcher.__file__).read_text(encoding="utf-8")


def module_command(module: str, *args: str, python: str = sys.executable) -> list[str]:
    """The argv that runs `python -m MODULE ARGS` and dies with this process."""
    return [python, "-c", _LAUNCHER, module, *args]
