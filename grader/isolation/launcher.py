"""What a Python child of the grader runs first: it asks to die with the grader, applies the
limits the grader put in its environment, then runs its module as `python -m` would.

grader.isolation.launch.module_command hands this file's source to `python -c`: it runs where
the grader package may not be importable (a kernel's sandbox), so it imports the standard
library only. The zygote's kernels apply the same limits through `apply_limits`.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys


def apply_limits() -> None:
    """Take the umask and resource limits the grader put in the environment (GRADER_UMASK, in
    octal; GRADER_RLIMITS, JSON of each RLIMIT_ name's value) out of it, and apply them to this
    process."""
    umask = os.environ.pop("GRADER_UMASK", "")
    if umask:
        os.umask(int(umask, 8))
    limits = os.environ.pop("GRADER_RLIMITS", "")
    if limits:
        import json
        import resource

        for name, value in json.loads(limits).items():
            resource.setrlimit(getattr(resource, "RLIMIT_" + name), (value, value))


def main() -> None:
    """Die with the parent, apply the limits, run the module sys.argv[1] with the rest as its argv."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - where it is refused, the parent check below remains
        pass
    if not os.environ.get("GRADER_SANDBOXED") and os.environ.get("GRADER_PARENT_PID") \
            and os.getppid() != int(os.environ["GRADER_PARENT_PID"]):
        sys.exit(1)  # the grader died before prctl took hold (a sandbox dies with it by itself)
    apply_limits()
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
