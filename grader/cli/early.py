"""`grader run` starts the batch's zygote first thing, before it imports the rest of itself.

The grader's own imports (SQLAlchemy, nbclient, Jinja2, ...) take most of a second, on one core;
the zygote's (NumPy, Keras, TensorFlow: seconds) are what every first kernel of the batch waits
for. Started here, from the few light modules that say which zygote the batch will ask for
(grader.grading.kernelenv: its interpreter, environment and libraries), the zygote imports on the other
core meanwhile, and the batch takes it over (grader.isolation.zygote.Zygotes.get): about 0.6 s less before
the first notebook runs, on a 2-core machine.

It is only a head start: the batch asks for its zygote as before, and takes this one only where
it is the very one asked for (same interpreter, environment and libraries). Where it is not
(fewer submissions to grade than workers, so more threads each; a first notebook already
graded that imported other libraries), or where the batch asks for none (everything graded
before), it is stopped, and it dies with the grader whatever happens. Nothing here raises or
prints: whatever it cannot work out, the command itself reports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

from grader.cli import options
from grader.grading.devices import CPU, threads_per_kernel
from grader.grading.executor import Settings
from grader.grading.kernelenv import kernel_python, warm_modules, zygote_env
from grader.isolation import zygote
from grader.model.assignments import load_assignment
from grader.model.errors import GraderError
from grader.model.paths import course_root
from grader.model.submission import discover


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # never print: the command says what is wrong
        raise ValueError(message)


def parser() -> argparse.ArgumentParser:
    """`grader run`'s arguments, as the command declares them, read without a word printed."""
    parser = _Parser(add_help=False)
    options.run_options(parser)
    return parser


def spec(argv: list[str]) -> tuple[str, dict[str, str], list[str]] | None:
    """The zygote (interpreter, environment, libraries) that `grader ARGV` will ask for first,
    where it is `run` on this machine's CPU by a root grader in the sandbox; else None. Raises
    on arguments the command itself will refuse."""
    if argv[:1] != ["run"]:
        return None
    args = parser().parse_args(argv[1:])
    if args.executor != "local" or args.no_sandbox:
        return None
    if not zygote.usable(sandboxed=True, gpu=False):
        return None
    if args.gpus != "none" and shutil.which("nvidia-smi"):
        return None  # GPU kernels start cold (and nvidia-smi is slow to ask twice)
    assignment = load_assignment(course_root(args.course), args.assignment)
    submissions = discover(Path(args.submissions), notebook_name=assignment.config.notebook)
    try:
        workers = options.workers(args.workers)
    except GraderError:
        return None  # the command says what is wrong with it
    # the batch's slots (grader.grading.local) on the CPU: one per submission at most
    slots = Settings(workers=workers).slots(assignment.config.limits.memory_mb)[: max(1, len(submissions))]
    # as grader.grading.local.Slot._ask_zygote: the first notebook's libraries and the course's
    notebooks = []
    for path in (submissions[0].path if submissions else None, assignment.source_notebook):
        if path is not None:
            with contextlib.suppress(OSError, ValueError):
                notebooks.append(json.loads(path.read_bytes()))
    return kernel_python(), zygote_env(CPU, threads_per_kernel(len(slots))), warm_modules(*notebooks)


def start(argv: list[str]) -> None:
    """Start the zygote `grader ARGV` will ask for (see `spec`), where there is one; never
    raises."""
    try:
        found = spec(argv)
    except Exception:  # noqa: BLE001 - the command reports its own arguments' faults
        return
    if found is not None:
        zygote.prestart(*found)
