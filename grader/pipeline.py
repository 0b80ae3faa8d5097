"""The path of one submission, and of a batch: submission -> execute -> check -> score -> store
-> report. Each step is its own module; this one chains them and keeps one bad notebook from
sinking the rest."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import queue
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import nbformat

from . import runs, sandbox
from .assignments import Assignment
from .check import start_checks
from .data.prepare import Prepared
from .devices import CPU, Device, threads_per_kernel
from .devices import slots as device_slots
from .errors import GradebookError
from .exchange import Layout
from .execute import executed, gpu_prologue, keras_backend, kernel_env, notebook_text
from .gradebook import Gradebook
from .report import ReportError, write_feedback
from .score import GRADER_FAULT, Result, grader_faults, mark_fault, status_of, total
from .submission import InvalidNotebook, Submission, read_notebook


@dataclass(frozen=True)
class Settings:
    """How a batch is graded; the CLI reads its defaults from here."""

    workers: int | None = None  # kernels at once: at most; None is one per slot (GPU), else 1
    force: bool = False
    reports: Path | None = None  # feedback pages go here when set
    notebook_html: bool = True  # also write each executed notebook as HTML
    devices: tuple[Device, ...] = (CPU,)  # the GPUs chosen (devices.choose), or the CPU
    per_gpu: int = 1  # kernels each GPU runs at once; each may use 1/PER_GPU of its memory
    sandboxed: bool = True  # run each kernel in the bubblewrap sandbox
    work_root: Path | None = None  # where each submission's private folder is made
    python: str = ""  # the kernels' interpreter; "" is the grader's own ($GRADER_KERNEL_PYTHON)
    stop_after: int = 6  # stop the batch if more than half of its first results are grader faults

    def slots(self) -> list[Device]:
        """The device of each kernel that runs at once: PER_GPU per GPU, as many as WORKERS
        allows, or the CPU WORKERS times (GraderError if a GPU's share is too small)."""
        per_device = device_slots(list(self.devices), self.per_gpu)
        if not per_device[0].gpu:
            return per_device * max(1, self.workers or 1)
        return per_device[: max(1, self.workers or len(per_device))]


@dataclass
class Batch:
    """What a batch did."""

    graded: list[Result] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    unstored: list[tuple[str, str]] = field(default_factory=list)  # (student, why) not stored
    stopped: str = ""  # why the batch stopped before grading everyone, if it did


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


def kernel_python(explicit: str = "") -> str:
    """The interpreter kernels run on: EXPLICIT, else $GRADER_KERNEL_PYTHON, else the grader's."""
    return explicit or os.environ.get("GRADER_KERNEL_PYTHON") or sys.executable


def grade_submission(
    assignment: Assignment, submission: Submission, *, prepared: Prepared | None,
    device: Device = CPU, threads: int = 1, work_root: Path | None = None, sandboxed: bool = True,
    uid: int | None = None, checker_uid: int | None = None, key: str | None = None,
    python: str = "",
) -> Result:
    """Grade one submission; never raises, whatever the notebook or the grader does."""
    if key is None:
        key = assignment.grading_key(prepared.key if prepared else "")
    result = Result(
        student=submission.student, assignment=assignment.name,
        notebook=str(submission.path or ""), sha256=_digest(submission.path),
        checks_sha256=key, status="invalid", reason=submission.problem or "",
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
    folder: runs.RunFolder | None = None
    root = sandboxed and os.geteuid() == 0
    try:
        folder = runs.make(work_root)
        if uid is None:
            uid = sandbox.claim_user() if root else 65534
        if checker_uid is None:
            checker_uid = sandbox.claim_user() if root else 65534
        kernel = _Kernel(assignment, prepared, folder.path, device, threads, sandboxed, uid,
                         checker_uid, folder, kernel_python(python))
        asyncio.run(_execute_and_check(assignment, nb, result, kernel))
    except Exception:  # noqa: BLE001 - the grader's own failure, stored so the batch goes on
        mark_fault(result, "the grader failed:\n" + traceback.format_exc()[-8000:])
    finally:
        if root:
            for user in (uid, checker_uid):
                if user is not None:
                    sandbox.reap(user)
        if folder is not None:
            folder.remove()
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
    folder: runs.RunFolder
    python: str = sys.executable

    @property
    def root(self) -> bool:
        """Whether the kernel and the checks run as users of their own (a root grader)."""
        return self.sandboxed and os.geteuid() == 0

    def stage(self, nb: nbformat.NotebookNode) -> tuple[Path, Path, dict[str, str], list[str], int]:
        """Lay out the files; return the kernel's host cwd, the shared folder (at one path for
        everyone), its environment, the sandbox command and the user it runs as."""
        name = self.assignment.config.notebook
        limits = self.assignment.config.limits
        layout = Layout(self.folder.share(disk_mb=limits.disk_mb if self.sandboxed else None))
        owner = self.uid if self.root else -1
        layout.make(kernel=owner, checker=self.checker_uid if self.root else -1)
        shared = layout.root
        gpu = self.device.gpu
        env = kernel_env(self.run_dir, threads=self.threads, gpus=self.device.cuda_visible_devices,
                         memory_fraction=self.device.memory_fraction if gpu else 0.0)
        if not gpu:
            # TensorFlow's GPU build logs a failed CUDA probe as an error on CPU-only kernels
            # ("failed call to cuInit"): noise on the student's page, so its C++ errors are off.
            env["TF_CPP_MIN_LOG_LEVEL"] = "3"
        files = {name: self.run_dir / name, **self._data_files()}
        nbformat.write(nb, files[name])
        if not self.sandboxed:
            workdir = self.run_dir / "work"
            workdir.mkdir()
            for target, source in files.items():
                (shutil.copytree if source.is_dir() else shutil.copy2)(source, workdir / target)
            env["HOME"] = str(workdir)
            rlimits = json.loads(sandbox.rlimits(limits, gpu=gpu))
            rlimits.pop("NPROC")  # would count every process of the grader's user
            env["GRADER_RLIMITS"] = json.dumps(rlimits)
            return workdir, shared, env, [], -1
        if owner >= 0:  # its sockets and values: for its own group, which the checks are in
            env["GRADER_UMASK"] = "007"
        cgroups = self.folder.confine(limits)
        env.update(HOME=sandbox.HOME, GRADER_SANDBOXED="1",
                   GRADER_RLIMITS=sandbox.rlimits(limits, gpu=gpu, cgroup=bool(cgroups)))
        minors = (self.device.minor,) if gpu and self.device.minor is not None else ()
        spec = sandbox.Spec(files=self.folder.private_files(files), shared=shared, limits=limits,
                            gpus=minors, uid=self.uid, cgroups=cgroups, python=self.python)
        return self.run_dir, shared, env, sandbox.command([], spec), owner

    @property
    def prologue(self) -> str:
        """What the kernel runs before the first cell: a GPU kernel's memory cap, else nothing."""
        return gpu_prologue(self.device.memory_limit_mb, keras_backend()) if self.device.gpu else ""

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
    log = shared / "kernel.log"  # the kernel's stderr, read before the run folder goes
    checker = await start_checks(  # imports its libraries while the notebook runs
        assignment.check_files(), run_dir=kernel.run_dir, public_dir=assignment.public_checks,
        hidden_dir=prepared.hidden_dir if prepared else None,
        student_data=prepared.student_dir if prepared else None, shared=shared, limits=limits,
        sandboxed=kernel.sandboxed, uid=kernel.checker_uid, kernel_uid=owner,
    )
    try:
        async with executed(nb, workdir=workdir, shared=shared, limits=limits,
                            seed=assignment.config.seed, env=env, command_prefix=prefix,
                            owner=owner, python=kernel.python,
                            prologue=kernel.prologue) as execution:
            result.kernel_start_s = execution.kernel_start_s
            result.execution_s = execution.execution_s
            checks = await checker.finish(execution.connection,
                                          f"nothing to check: {execution.reason}")
    finally:
        checker.kill()
    result.device = device_used(kernel.device, execution.gpus_used, keras_backend())
    result.checks_s = checks.seconds
    result.checks = checks.outcomes
    result.status = status_of(execution.status, checks.problem, checks.outcomes)
    result.reason = execution.reason
    result.score = total(checks.outcomes)
    if execution.status in ("kernel_died", "kernel_failed"):
        result.staff_detail = "the kernel's stderr, last lines:\n" + _tail(log)
    if result.status == GRADER_FAULT:
        detail = [execution.reason if execution.status == "kernel_failed" else "",
                  f"the checks broke: {checks.problem}" if checks.problem else "",
                  *(f"check {c.name} broke: {c.detail}" for c in grader_faults(checks.outcomes))]
        mark_fault(result, "\n".join(d for d in detail if d))
    cell = execution.failed_cell
    result.failed_cell = None if cell is None else {
        "index": cell.index, "number": cell.number, "source": cell.source[:5000],
        "ename": cell.ename, "evalue": cell.evalue[:2000], "traceback": cell.traceback,
    }
    result.executed_notebook, _ = notebook_text(execution.notebook, limits.output_bytes)


def device_used(assigned: Device, gpus: list[str] | None, backend: str = "tensorflow") -> str:
    """What the report says the notebook ran on: what Keras' BACKEND in the kernel used."""
    if not assigned.gpu:
        return CPU.label
    if gpus:
        return assigned.label
    framework = "JAX" if backend == "jax" else "TensorFlow"
    if gpus is None:
        return f"CPU ({assigned.label} was assigned; the notebook did not use {framework})"
    return f"CPU ({assigned.label} was assigned but {framework} did not use it)"


def _tail(path: Path, lines: int = 30) -> str:
    """The last LINES lines of a log file, for staff."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 20_000))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty)"


def grade_batch(
    assignment: Assignment, submissions: list[Submission], *, gradebook: Gradebook,
    prepared: Prepared | None, settings: Settings = Settings(),
    on_result: Callable[[Result], None] | None = None,
    on_skip: Callable[[Submission], None] | None = None,
) -> Batch:
    """Grade every submission not graded before, one kernel per slot at a time (Settings.slots:
    PER_GPU per GPU, or WORKERS on the CPU), storing each at once.

    A result that cannot be stored is reported in Batch.unstored and the batch goes on; if more
    than half of the first results are grader faults, the batch stops (Batch.stopped)."""
    began = time.monotonic()
    batch = Batch()
    key = assignment.grading_key(prepared.key if prepared else "")
    todo = []
    for submission in submissions:
        sha = _digest(submission.path)
        if not settings.force and submission.path is not None and gradebook.already_graded(
            submission.student, assignment.name, sha, key
        ):
            batch.skipped.append(submission.student)
            _store_safely(batch, submission.student, functools.partial(
                gradebook.mark_seen, submission.student, assignment.name, sha))
            if on_skip:
                on_skip(submission)
        else:
            todo.append(submission)
    # Each slot is a device (a GPU appears PER_GPU times at most) and, for a root grader, a user
    # of its own: a kernel's process limit and the reaping after it concern that kernel alone.
    devices: queue.Queue[tuple[int, int, Device]] = queue.Queue()
    each = settings.slots()
    slots = len(each)
    root = settings.sandboxed and os.geteuid() == 0
    for device in each:
        users = (sandbox.claim_user(), sandbox.claim_user()) if root else (65534, 65534)
        devices.put((*users, device))
    threads = threads_per_kernel(slots)

    def work(submission: Submission) -> Result:
        uid, checker_uid, device = devices.get()
        try:
            result = grade_submission(assignment, submission, prepared=prepared, device=device,
                                      threads=threads, work_root=settings.work_root,
                                      sandboxed=settings.sandboxed, uid=uid,
                                      checker_uid=checker_uid, key=key, python=settings.python)
        finally:
            devices.put((uid, checker_uid, device))
        if settings.reports is not None:
            started = time.monotonic()
            try:
                write_feedback(result, title=assignment.config.title, folder=settings.reports,
                               notebook_html=settings.notebook_html)
            except ReportError as exc:  # the student's notebook would not render: the grade stands
                result.report_error = str(exc)[:2000]
            except Exception as exc:  # noqa: BLE001 - the page is missing: graded again next run
                result.report_error = f"{type(exc).__name__}: {exc}"[:2000]
                mark_fault(result, f"the feedback page could not be written: {result.report_error}")
            result.report_s = time.monotonic() - started
        return result

    window = min(settings.stop_after, len(todo))
    with ThreadPoolExecutor(max_workers=slots, thread_name_prefix="grader") as pool:
        futures = [pool.submit(work, s) for s in todo]
        for future in as_completed(futures):
            if future.cancelled():  # the batch stopped before it started
                continue
            result = future.result()
            _store_safely(batch, result.student, functools.partial(gradebook.store, result))
            batch.graded.append(result)
            if on_result:
                on_result(result)
            if len(batch.graded) == window < len(todo):  # only where there is more to stop
                faults = [r for r in batch.graded if r.status == GRADER_FAULT]
                if window and len(faults) * 2 > window:
                    batch.stopped = (
                        f"stopped: {len(faults)} of the first {window} submissions failed on the"
                        f" grader's side ({_first_line(faults[0].staff_detail)}); fix the machine"
                        " or the checks and run again (faults are regraded)")
                    for pending in futures:
                        pending.cancel()
    batch.seconds = time.monotonic() - began
    return batch


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "no detail")[:200]


def _store_safely(batch: Batch, student: str, write: Callable[[], object]) -> None:
    """Write to the gradebook; a write that fails (after the gradebook's retries) is kept in
    BATCH.unstored and never stops the batch."""
    try:
        write()
    except GradebookError as exc:
        batch.unstored.append((student, str(exc)))
    except Exception as exc:  # noqa: BLE001 - a failed write never sinks the batch
        batch.unstored.append((student, f"{type(exc).__name__}: {exc}"[:500]))
