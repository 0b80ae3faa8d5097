"""Staging: one submission's kernel laid out before it runs (its files, environment, users and
sandbox command), and the student data it may see."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from grader.checker.exchange import Layout
from grader.data.prepare import Prepared
from grader.grading.check import Checker
from grader.grading.devices import Device
from grader.grading.execute import StudentKernel, gpu_prologue
from grader.grading.kernelenv import base_env, keras_backend
from grader.grading.warmcheck import WarmChecker
from grader.isolation import sandbox, workdirs
from grader.model.assignments import Assignment
from grader.model.result import Result
from grader.model.submission import InvalidNotebook


@dataclass(frozen=True)
class KernelStage:
    """How a staged kernel starts: where, with what, as whom."""

    workdir: Path  # the kernel's working directory on the host
    shared: Path  # the folder shared with the checker (at one path for everyone)
    env: dict[str, str]  # the kernel's environment
    command: list[str]  # the sandbox command to run it in; [] without a sandbox
    owner: int  # the user it runs as; -1: the grader's own


@dataclass
class Turn:
    """One submission on its way through a slot: read and, for a notebook, its run folder made
    and its kernel started (ahead of its turn while the slot's previous submission runs)."""

    result: Result
    nb: nbformat.NotebookNode | None = None
    folder: workdirs.RunFolder | None = None
    kernel: Kernel | None = None
    staged: KernelStage | None = None
    running: StudentKernel | None = None
    checker: Checker | WarmChecker | None = None
    fault: str = ""  # the grader failed while getting it ready


@dataclass
class Kernel:
    """Where and how one submission's kernel runs: its files, environment and sandbox."""

    assignment: Assignment
    prepared: Prepared | None
    run_dir: Path
    device: Device
    threads: int
    sandboxed: bool
    uid: int
    checker_uid: int  # the checks' own user, for a root grader
    folder: workdirs.RunFolder
    python: str = sys.executable

    @property
    def root(self) -> bool:
        """Whether the kernel and the checks run as users of their own (a root grader)."""
        return sandbox.own_users(self.sandboxed)

    def stage(self, nb: nbformat.NotebookNode) -> KernelStage:
        """Lay out NB and the student data for the kernel; say how it is started. InvalidNotebook
        where NB cannot be written down (the submission's problem, never the machine's)."""
        name = self.assignment.config.notebook
        limits = self.assignment.config.limits
        layout = Layout(self.folder.share(disk_mb=limits.disk_mb if self.sandboxed else None))
        owner = self.uid if self.root else -1
        layout.make(kernel=owner, checker=self.checker_uid if self.root else -1)
        shared = layout.root
        gpu = self.device.gpu
        env = base_env(self.device, self.threads, self.run_dir)
        files = {name: self.run_dir / name, **self._data_files()}
        try:
            nbformat.write(nb, files[name])
        except (ValueError, RecursionError) as exc:  # a character no file can hold, say
            raise InvalidNotebook(f"the notebook cannot be written down for its kernel: "
                                  f"{type(exc).__name__}: {str(exc)[:200]}") from None
        if not self.sandboxed:
            workdir = self.run_dir / "work"
            workdir.mkdir()
            for target, source in files.items():
                (shutil.copytree if source.is_dir() else shutil.copy2)(source, workdir / target)
            env["HOME"] = str(workdir)
            rlimits = json.loads(sandbox.rlimits(limits, gpu=gpu))
            rlimits.pop("NPROC")  # would count every process of the grader's user
            env["GRADER_RLIMITS"] = json.dumps(rlimits)
            return KernelStage(workdir, shared, env, [], -1)
        if owner >= 0:  # its sockets and values: for its own group, which the checks are in
            env["GRADER_UMASK"] = "007"
        cgroups = self.folder.confine(limits)
        env.update(HOME=sandbox.HOME, GRADER_SANDBOXED="1",
                   GRADER_RLIMITS=sandbox.rlimits(limits, gpu=gpu, cgroup=bool(cgroups)))
        minors = (self.device.minor,) if gpu and self.device.minor is not None else ()
        spec = sandbox.Spec(files=self.folder.private_files(files), shared=shared, limits=limits,
                            gpus=minors, uid=self.uid, cgroups=cgroups, python=self.python)
        return KernelStage(self.run_dir, shared, env, sandbox.command([], spec), owner)

    @property
    def prologue(self) -> str:
        """What the kernel runs before the first cell: a GPU kernel's memory cap, else nothing."""
        return gpu_prologue(self.device.memory_limit_mb, keras_backend()) if self.device.gpu else ""

    def _data_files(self) -> dict[str, Path]:
        """The student-visible data, by name in the working directory; never anything hidden."""
        return student_data_files(self.assignment, self.prepared)


def student_data_files(assignment: Assignment, prepared: Prepared | None) -> dict[str, Path]:
    """The student-visible data of ASSIGNMENT, by name in a kernel's working directory (and in
    the student bundle); never anything hidden."""
    if prepared is None:
        return {}
    folder = prepared.student_dir
    names = assignment.config.data.student_files or tuple(p.name for p in sorted(folder.iterdir()))
    return {name: folder / name for name in names}


def tail(path: Path, lines: int = 30) -> str:
    """The last LINES lines of a log file, for staff."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 20_000))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty)"
