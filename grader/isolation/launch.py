"""Start a Python module in a child process that dies with the grader, even on SIGKILL."""

from __future__ import annotations

import sys

# Defines apply_limits(): the umask and resource limits the grader put in the environment, taken
# out of it and applied to this process (a kernel's launcher, or a kernel the zygote forks).
APPLY_LIMITS = """\
def apply_limits():
    import os
    umask = os.environ.pop("GRADER_UMASK", "")
    if umask:
        os.umask(int(umask, 8))
    limits = os.environ.pop("GRADER_RLIMITS", "")
    if limits:
        import json, resource
        for name, value in json.loads(limits).items():
            resource.setrlimit(getattr(resource, "RLIMIT_" + name), (value, value))
"""

# Runs first in the child: ask the kernel for SIGKILL when the parent goes, then run the module.
_LAUNCHER = """\
import ctypes, os, runpy, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
except Exception:
    pass
if not os.environ.get("GRADER_SANDBOXED") and os.environ.get("GRADER_PARENT_PID") \
        and os.getppid() != int(os.environ["GRADER_PARENT_PID"]):
    sys.exit(1)  # the grader died before prctl took hold (a sandbox dies with it by itself)
""" + APPLY_LIMITS + """\
apply_limits()
module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def module_command(module: str, *args: str, python: str = sys.executable) -> list[str]:
    """The argv that runs `python -m MODULE ARGS` and dies with this process."""
    return [python, "-c", _LAUNCHER, module, *args]
