"""The path of one submission, and of a batch: submission -> execute -> check -> score -> store
-> report. Each step is its own module; this one chains them and keeps one bad notebook from
sinking the rest."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import queue
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import nbformat

from . import sandbox
from .assignments import Assignment
from .check import start_checks
from .data.prepare import Prepared
from .devices import CPU, Device, threads_per_kernel
from .exchange import Layout
from .execute import executed, kernel_env, notebook_text
from .gradebook import Gradebook
from .report import write_feedback
from .score import Result, status_of, total
from .submission import InvalidNotebook, Submission, read_notebook


@dataclass(frozen=True)
class Settings:
    """How a batch is graded; the CLI reads its defaults from here."""

    workers: int = 1
    force: bool = False
    reports: Path | None = None  # feedback pages go here when set
    notebook_html: bool = True  # also write each executed notebook as HTML
    devices: tuple[Device, ...] = (CPU,)
    sandboxed: bool = True  # run each kernel in the bubblewrap sandbox
    work_root: Path | None = None  # where each submission's private folder is made


@dataclass
class Batch:
    """What a batch did."""

    graded: list[Result] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _digest(path: Path | None) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path else "-"
    except OSError:
        return "-"


def _submitted_at(path: Path | None) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC) if path else None
    except OSError:
        return None


def grade_submission(
    assignment: Assignment, submission: Submission, *, prepared: Prepared | None,
    device: Device = CPU, threads: int = 1, work_root: Path | None = None, sandboxed: bool = True,
    uid: int | None = None, checker_uid: int | None = None,
) -> Result:
    """Grade one submission; never raises for anything the notebook does."""
    result = Result(
        student=submission.student, assignment=assignment.name,
        notebook=str(submission.path or ""), sha256=_digest(submission.path),
        checks_sha256=assignment.checks_digest(), status="invalid", reason=submission.problem or "",
        score=0.0, max_score=assignment.config.points, device=device.label, sandboxed=sandboxed,
        submitted_at=_submitted_at(submission.path),
    )
    if submission.path is None:
        return result
    try:
        nb, result.sha256 = read_notebook(submission.path)
    except InvalidNotebook as exc:
        result.reason = str(exc)
        return result
    if work_root is not None:
        work_root.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="grader-", dir=work_root))
    root = sandboxed and os.geteuid() == 0
    if uid is None:
        uid = sandbox.claim_user() if root else 65534
    if checker_uid is None:
        checker_uid = sandbox.claim_user() if root else 65534
    kernel = _Kernel(assignment, prepared, run_dir, device, threads, sandboxed, uid, checker_uid)
    try:
        asyncio.run(_execute_and_check(assignment, nb, result, kernel))
    except Exception:  # noqa: BLE001 - the grader's own failure, stored so the batch goes on
        result.status = "internal_error"
        result.reason = "the grader failed: " + traceback.format_exc(limit=3).strip()[-1500:]
        result.score = 0.0
    finally:
        if root:
            sandbox.reap(kernel.uid)
            sandbox.reap(kernel.checker_uid)
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


@dataclass
class _Kernel:
    """Where and how one submission's kernel runs."""

    assignment: Assignment
    prepared: Prepared | None
    run_dir: Path
    device: Device
    threads: int
    sandboxed: bool
    uid: int
    checker_uid: int  # the checks' own user, for a root grader

    @property
    def root(self) -> bool:
        """Whether the kernel and the checks run as users of their own (a root grader)."""
        return self.sandboxed and os.geteuid() == 0

    def stage(self, nb: nbformat.NotebookNode) -> tuple[Path, Path, dict[str, str], list[str], int]:
        """Lay out the files; return the kernel's host cwd, the shared folder (at one path for
        everyone), its environment, the sandbox command and the user it runs as."""
        name = self.assignment.config.notebook
        layout = Layout(self.run_dir / "shared")
        owner = self.uid if self.root else -1
        layout.make(kernel=owner, checker=self.checker_uid if self.root else -1)
        shared = layout.root
        limits = self.assignment.config.limits
        env = kernel_env(self.run_dir, threads=self.threads, gpus=self.device.cuda_visible_devices)
        files = {name: self.run_dir / name, **self._data_files()}
        nbformat.write(nb, files[name])
        if not self.sandboxed:
            workdir = self.run_dir / "work"
            workdir.mkdir()
            for target, source in files.items():
                (shutil.copytree if source.is_dir() else shutil.copy2)(source, workdir / target)
            env["HOME"] = str(workdir)
            rlimits = json.loads(sandbox.rlimits(limits))
            rlimits.pop("NPROC")  # would count every process of the grader's user
            env["GRADER_RLIMITS"] = json.dumps(rlimits)
            return workdir, shared, env, [], -1
        if owner >= 0:  # its sockets and values: for its own group, which the checks are in
            env["GRADER_UMASK"] = "007"
        env.update(HOME=sandbox.HOME, GRADER_SANDBOXED="1", GRADER_RLIMITS=sandbox.rlimits(limits))
        spec = sandbox.Spec(files=files, shared=shared, limits=limits,
                            gpus=self.device.cuda_visible_devices, uid=self.uid)
        return self.run_dir, shared, env, sandbox.command([], spec), owner

    def _data_files(self) -> dict[str, Path]:
        """The student-visible data, by name in the working directory; never anything hidden."""
        if self.prepared is None:
            return {}
        folder = self.prepared.student_dir
        names = self.assignment.config.data.student_files or tuple(
            p.name for p in sorted(folder.iterdir()))
        return {name: folder / name for name in names}


async def _execute_and_check(assignment: Assignment, nb: nbformat.NotebookNode, result: Result,
                             kernel: _Kernel) -> None:
    workdir, shared, env, prefix, owner = kernel.stage(nb)
    limits = assignment.config.limits
    prepared = kernel.prepared
    checker = await start_checks(  # imports its libraries while the notebook runs
        assignment.check_files(), run_dir=kernel.run_dir, public_dir=assignment.public_checks,
        hidden_dir=prepared.hidden_dir if prepared else None,
        student_data=prepared.student_dir if prepared else None, shared=shared, limits=limits,
        sandboxed=kernel.sandboxed, uid=kernel.checker_uid, kernel_uid=owner,
    )
    try:
        async with executed(nb, workdir=workdir, shared=shared, limits=limits,
                            seed=assignment.config.seed, env=env, command_prefix=prefix,
                            owner=owner) as execution:
            result.kernel_start_s = execution.kernel_start_s
            result.execution_s = execution.execution_s
            checks = await checker.finish(execution.connection,
                                          f"nothing to check: {execution.reason}")
    finally:
        checker.kill()
    result.checks_s = checks.seconds
    result.checks = checks.outcomes
    result.status = status_of(execution.status, checks.problem)
    result.reason = checks.problem or execution.reason
    result.score = 0.0 if checks.problem else total(checks.outcomes)
    cell = execution.failed_cell
    result.failed_cell = None if cell is None else {
        "index": cell.index, "number": cell.number, "source": cell.source[:5000],
        "ename": cell.ename, "evalue": cell.evalue[:2000], "traceback": cell.traceback,
    }
    result.executed_notebook, _ = notebook_text(execution.notebook, limits.output_bytes)


def grade_batch(
    assignment: Assignment, submissions: list[Submission], *, gradebook: Gradebook,
    prepared: Prepared | None, settings: Settings = Settings(),
    on_result: Callable[[Result], None] | None = None,
    on_skip: Callable[[Submission], None] | None = None,
) -> Batch:
    """Grade every submission not graded before, WORKERS at a time, storing each at once."""
    began = time.monotonic()
    batch = Batch()
    checks_sha = assignment.checks_digest()
    todo = []
    for submission in submissions:
        if not settings.force and submission.path is not None and gradebook.already_graded(
            submission.student, assignment.name, _digest(submission.path), checks_sha
        ):
            batch.skipped.append(submission.student)
            if on_skip:
                on_skip(submission)
        else:
            todo.append(submission)
    # Each slot is a device and, for a root grader, a user of its own: a kernel's process limit
    # and the reaping after it concern that kernel alone.
    devices: queue.Queue[tuple[int, int, Device]] = queue.Queue()
    slots = max(1, settings.workers)
    root = settings.sandboxed and os.geteuid() == 0
    for i in range(slots):
        users = (sandbox.claim_user(), sandbox.claim_user()) if root else (65534, 65534)
        devices.put((*users, settings.devices[i % len(settings.devices)]))
    threads = threads_per_kernel(slots)

    def work(submission: Submission) -> Result:
        uid, checker_uid, device = devices.get()
        try:
            result = grade_submission(assignment, submission, prepared=prepared, device=device,
                                      threads=threads, work_root=settings.work_root,
                                      sandboxed=settings.sandboxed, uid=uid,
                                      checker_uid=checker_uid)
        finally:
            devices.put((uid, checker_uid, device))
        if settings.reports is not None:
            started = time.monotonic()
            try:
                write_feedback(result, title=assignment.config.title, folder=settings.reports,
                               notebook_html=settings.notebook_html)
            except Exception:  # noqa: BLE001 - the result still counts; `grader report` retries
                traceback.print_exc()
            result.report_s = time.monotonic() - started
        return result

    with ThreadPoolExecutor(max_workers=slots, thread_name_prefix="grader") as pool:
        futures = [pool.submit(work, s) for s in todo]
        for future in as_completed(futures):
            result = future.result()
            gradebook.store(result)
            batch.graded.append(result)
            if on_result:
                on_result(result)
    batch.seconds = time.monotonic() - began
    return batch
