"""The path of one submission, and of a batch: submission -> execute -> check -> score -> store
-> report. Each step is its own module; this one chains them and keeps one bad notebook from
sinking the rest."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import json
import os
import queue
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import nbformat

from grader.checker.exchange import Layout
from grader.data.prepare import Prepared
from grader.grading.check import Checker, CheckerSlot, Checks, WarmChecker, start_checks
from grader.grading.devices import CPU, Device, cpu_workers, threads_per_kernel
from grader.grading.devices import slots as device_slots
from grader.grading.execute import StudentKernel, gpu_prologue, notebook_text, warmup_code
from grader.grading.kernelenv import base_env, keras_backend, kernel_python, warm_modules, zygote_env
from grader.isolation import sandbox, zygote
from grader.isolation import workdirs as runs
from grader.isolation.zygote import Zygote, Zygotes
from grader.model.assignments import Assignment
from grader.model.errors import GradebookError, PreflightFailed
from grader.model.late import LatePolicy, apply_late
from grader.model.result import GRADER_FAULT, Result, attach_overrides, grader_faults, mark_fault, status_of, total
from grader.model.submission import InvalidNotebook, Submission, read_notebook
from grader.reports.pages import Renderer, ReportError, feedback_name, write_feedback
from grader.store.gradebook import Gradebook

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """How a batch is graded; the CLI reads its defaults from here."""

    workers: int | None = None  # kernels at once, at most; None: auto (every GPU slot, or from
    # the CPU's cores and memory: devices.auto_workers)
    force: bool = False
    reports: Path | None = None  # feedback pages go here when set
    notebook_html: bool = True  # also write each executed notebook as HTML
    devices: tuple[Device, ...] = (CPU,)  # the GPUs chosen (devices.choose), or the CPU
    per_gpu: int = 1  # kernels each GPU runs at once; each may use 1/PER_GPU of its memory
    sandboxed: bool = True  # run each kernel in the bubblewrap sandbox
    work_root: Path | None = None  # where each submission's private folder is made
    python: str = ""  # the kernels' interpreter; "" is the grader's own ($GRADER_KERNEL_PYTHON)
    stop_after: int = 6  # stop the batch if more than half of its first results are grader faults
    warm_kernels: bool = True  # start each slot's next kernel, its libraries imported, ahead
    warm_checks: bool = True  # one checker per slot imports the check libraries once
    late: LatePolicy | None = None  # the deadline each result's late penalty is worked out by
    executor: str = "local"  # "local": this machine's slots; "ray": one Ray task per submission
    address: str | None = None  # ray: the cluster to connect to; None: a local instance for the batch
    cluster_gpus: bool = True  # ray: each task asks for 1/PER_GPU of a GPU where the cluster has any

    def slots(self, kernel_memory_mb: int = 0) -> list[Device]:
        """The device of each kernel that runs at once: PER_GPU per GPU, as many as WORKERS
        allows, or the CPU WORKERS times, by default as many as the cores and the memory hold
        at KERNEL_MEMORY_MB a kernel (GraderError if a GPU's share is too small)."""
        per_device = device_slots(list(self.devices), self.per_gpu)
        if not per_device[0].gpu:
            return per_device * cpu_workers(self.workers, kernel_memory_mb)
        return per_device[: max(1, self.workers or len(per_device))]


@dataclass
class Batch:
    """What a batch did."""

    graded: list[Result] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # graded before (by this run or another)
    elsewhere: list[str] = field(default_factory=list)  # being graded by another grader run now
    seconds: float = 0.0
    unstored: list[tuple[str, str]] = field(default_factory=list)  # (student, why) not stored
    stopped: str = ""  # why the batch stopped before grading everyone, if it did
    workers: int = 0  # Ray: the tasks sent at once (0: the local slots, Settings.slots)
    # seconds from the batch's start until its first notebook began to run (the zygote's
    # imports, the preflight, the first kernel's start); 0 where none ran here (or on Ray)
    start_s: float = 0.0
    # the seconds from the batch's start at which each slot gave its last result (a slot left
    # idle at the batch's tail is not busy); empty where not measured (Ray)
    slot_ends: list[float] = field(default_factory=list)


def _digest(path: Path | None) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path else "-"
    except OSError:
        return "-"


def _submitted_at(submission: Submission) -> datetime | None:
    """When SUBMISSION was handed in: the LMS's time `grader collect` kept, else the file's mtime."""
    if submission.submitted_at is not None:
        return submission.submitted_at
    try:
        return datetime.fromtimestamp(submission.path.stat().st_mtime, UTC) if submission.path else None
    except OSError:
        return None


def grade_submission(
    assignment: Assignment, submission: Submission, *, prepared: Prepared | None,
    device: Device = CPU, threads: int = 1, work_root: Path | None = None, sandboxed: bool = True,
    uid: int | None = None, checker_uid: int | None = None, key: str | None = None,
    python: str = "", warm_kernel: bool = True,
) -> Result:
    """Grade one submission; never raises, whatever the notebook or the grader does."""
    if key is None:
        key = assignment.grading_key(prepared.key if prepared else "")
    results: list[Result] = []
    try:
        runs.check_room(work_root)
        root = sandboxed and os.geteuid() == 0
        if uid is None:
            uid = sandbox.claim_user() if root else 65534
        if checker_uid is None:
            checker_uid = sandbox.claim_user() if root else 65534
        zygotes = Zygotes()
        slot = _Slot(assignment, prepared, key, device, threads, work_root, sandboxed,
                     kernel_python(python), (checker_uid, checker_uid), (uid, uid),
                     warm=warm_kernel, zygotes=zygotes)
        try:
            asyncio.run(slot.serve(_Work([submission], time.monotonic()), results.append))
        finally:
            zygotes.close()
    except Exception:  # noqa: BLE001 - the grader's own failure, stored so the batch goes on
        if not results:
            results.append(_new_result(assignment, submission, key, device, sandboxed))
            mark_fault(results[0], "the grader failed:\n" + traceback.format_exc()[-8000:])
    return results[0]


def _new_result(assignment: Assignment, submission: Submission, key: str, device: Device,
                sandboxed: bool) -> Result:
    """SUBMISSION's result before anything ran: invalid, for the reason found (if any)."""
    return Result(
        student=submission.student, assignment=assignment.name,
        notebook=str(submission.path or ""), sha256=_digest(submission.path),
        checks_sha256=key, status="invalid", reason=submission.problem or "",
        score=0.0, max_score=assignment.config.points, device=device.label, sandboxed=sandboxed,
        submitted_at=_submitted_at(submission),
    )


@dataclass
class _Turn:
    """One submission on its way through a slot: read and, for a notebook, its run folder made
    and its kernel started (ahead of its turn while the slot's previous submission runs)."""

    result: Result
    nb: nbformat.NotebookNode | None = None
    folder: runs.RunFolder | None = None
    kernel: _Kernel | None = None
    staged: tuple[Path, Path, dict[str, str], list[str], int] | None = None
    running: StudentKernel | None = None
    checker: Checker | WarmChecker | None = None
    fault: str = ""  # the grader failed while getting it ready


class _Work:
    """The batch's submissions, shared by its slots. A slot takes its next submission while its
    current one runs, and holds it ahead; a slot left with nothing takes over a submission that
    another slot holds ahead and has not begun (behind a notebook that runs to its time limit,
    say), which that slot then lets go. With a PREFLIGHT, notebooks may run meanwhile, but none
    is checked, nor its result given, before it has passed.
    With CLAIM, a submission is taken only where CLAIM takes it in the gradebook: one that
    another grader process holds is passed over for the next."""

    def __init__(self, todo: list[Submission], began: float, *, preflight: bool = False,
                 claim: Callable[[Submission], bool] | None = None):
        self.pending = collections.deque(todo)
        self.began = began
        self.claim = claim
        self.stop = threading.Event()
        self.opened = threading.Event()  # set when the preflight has passed or failed
        if not preflight:
            self.opened.set()
        self.probing = preflight  # the first kernel to start is the preflight's kernel probe
        self.failed: BaseException | None = None  # why the preflight failed: nothing is given
        self.first_run: float | None = None  # when the first notebook began, since `began`
        self._proven = False
        self._held: dict[int, tuple[Submission, bool]] = {}  # slot -> its next, and whether
        # another slot may take that one over (one taken ahead of its turn, not yet begun)
        self._lock = threading.Lock()

    @property
    def stopped(self) -> bool:
        """Whether the batch stopped: nothing more is taken or begun."""
        return self.stop.is_set()

    def take(self, slot: int, *, ahead: bool = False) -> tuple[Submission, float] | None:
        """The next submission for SLOT, taken AHEAD of its turn or not, and its wait since the
        batch began; when the queue is empty and SLOT is not taking ahead, one that another
        slot took ahead and has not begun. None when there is none."""
        with self._lock:
            if self.stopped:
                return None
            while self.pending and self.claim is not None and not self.claim(self.pending[0]):
                self.pending.popleft()
            if self.pending:
                submission = self.pending.popleft()
            elif not ahead and (others := [k for k, (_, free) in self._held.items() if free]):
                submission = self._held.pop(others[0])[0]
            else:
                return None
            self._held[slot] = (submission, ahead)
            return submission, time.monotonic() - self.began

    async def gate(self) -> bool:
        """Wait until the batch's preflight has passed (True) or failed (False: the batch then
        stopped). A notebook may run meanwhile: its checks wait, and its result is given after."""
        if not self.opened.is_set():
            await asyncio.to_thread(self.opened.wait)
        return self.failed is None

    def fail(self, why: BaseException) -> None:
        """The preflight failed: stop the batch; the first failure is the one raised."""
        with self._lock:
            self.failed = self.failed or why
            self.stop.set()

    def probe(self, turn: _Turn) -> bool:
        """Whether TURN may be graded, as far as the kernel probe goes: the first kernel to start
        (or fail to) while probing decides whether kernels run here at all; where it did not
        start, the batch stops with PreflightFailed. A turn without a kernel (an invalid
        notebook) needs none."""
        if not self.probing or (turn.running is None and not turn.fault):
            return True
        with self._lock:
            if self._proven or self.failed is not None:
                return self._proven and self.failed is None
            why = turn.fault or (turn.running.execution.reason if turn.running is not None
                                 and turn.running.execution.status == "kernel_failed" else "")
            if not why:
                self._proven = True
                return True
        log = _tail(turn.staged[1] / "kernel.log", 4).replace("\n", " | ") if turn.staged else ""
        self.fail(PreflightFailed(
            f"a sandboxed kernel cannot run here ({_first_line(why)}); its stderr: {log[-600:]};"
            " nothing was graded (`grader doctor` shows more)"))
        return False

    def running(self) -> None:
        """A notebook begins to run now: the first one ends the batch's start."""
        with self._lock:
            if self.first_run is None:
                self.first_run = time.monotonic() - self.began

    def begin(self, slot: int, submission: Submission) -> bool:
        """Whether SLOT may grade SUBMISSION now (False: the batch stopped, or another slot
        took it over)."""
        with self._lock:
            if self.stopped or self._held.get(slot, (None,))[0] is not submission:
                return False
            del self._held[slot]
            return True


@dataclass
class _Slot:
    """One worker slot: a device and, for a root grader, two users for the checks and two for
    kernels (the submission running and the next one, started ahead), grading submissions one
    after another in one event loop."""

    assignment: Assignment
    prepared: Prepared | None
    key: str
    device: Device
    threads: int
    work_root: Path | None
    sandboxed: bool
    python: str
    checker_uids: tuple[int, int]  # each pair used in turn: reaping one submission's users
    kernel_uids: tuple[int, int]  # never kills the processes of the one started ahead
    warm: bool = True  # import the notebook's heavy libraries in its kernel ahead
    warm_checks: bool = True  # a warm checker for the slot (CheckerSlot), else one per submission
    checkers: CheckerSlot | None = None  # the warm checker, while the slot serves
    home: runs.RunFolder | None = None  # the slot's folder, holding its run folders
    zygotes: Zygotes | None = None  # the batch's, which fork its kernels

    @property
    def root(self) -> bool:
        """Whether kernels and checks run as users of their own (a root grader)."""
        return self.sandboxed and os.geteuid() == 0

    async def serve(self, work: _Work, give: Callable[[Result], None], index: int = 0) -> None:
        """Grade submissions from WORK (as its slot INDEX) until none is left, giving each result
        to GIVE; the next submission's kernel starts while the current one runs. A kernel
        started ahead for a submission this slot does not grade (the batch stopped, another
        slot took it over) is killed."""
        count = 0
        first = work.take(index)
        # the first slot's zygote starts importing now, beside what follows: staging the first
        # notebook, starting the checker
        early = self._ask_zygote(path=first[0].path) if index == 0 and first is not None else None
        if self.warm_checks:
            self._make_checkers()
        ahead = self._ahead(first, count)
        if self.checkers is not None and index == 0 and first is not None:
            # the first slot's checker is forked from the zygote once it has imported (else it
            # imports beside it, a core each); the others' once their first kernel has started,
            # so that the zygote's import is not slowed; none where there is nothing to grade
            await self.checkers.start(self.assignment.check_files())
        try:
            while True:
                if ahead is None:  # nothing taken ahead: take over one held by another slot
                    count += 1
                    ahead = self._ahead(work.take(index), count)
                    if ahead is None:
                        break
                (submission, current), ahead = ahead, None
                if not work.begin(index, submission):
                    await self.discard(await current)
                    if work.stopped:
                        break
                    continue
                following = work.take(index, ahead=True)
                if following is not None:
                    count += 1
                    ahead = self._ahead(following, count)
                turn = await current
                if self.checkers is not None and not self.checkers.alive():
                    await self.checkers.start(self.assignment.check_files())
                if not work.probe(turn):
                    await self.discard(turn)
                    break
                if turn.running is not None and not turn.fault:
                    work.running()
                result = await self._grade_gated(turn, work)
                if result is None:  # the preflight failed: nothing is stored
                    break
                give(result)
        finally:
            if ahead is not None:
                await self.discard(await ahead[1])
            if early is not None:
                with contextlib.suppress(Exception):  # done long before; zygotes.get tells its own
                    await early
            await self._close_checkers()

    def _make_checkers(self) -> None:
        """Make the slot's folder and its warm checker, which starts (and imports the check
        libraries) at once for the first slot, and for the others once their first kernel has
        started, while its notebook runs."""
        self.home = runs.make(self.work_root)
        prepared = self.prepared
        self.checkers = CheckerSlot(
            folder=self.home.path, public_dir=self.assignment.public_checks,
            hidden_dir=prepared.hidden_dir if prepared else None,
            student_data=prepared.student_dir if prepared else None,
            limits=self.assignment.config.limits, sandboxed=self.sandboxed,
            uid=self.checker_uids[0], kernel_uids=self.kernel_uids)
        if self.zygotes is not None and self.warm and zygote.usable(
                sandboxed=self.sandboxed, gpu=self.device.gpu):
            self.checkers.zygote = self._checkers_zygote  # forked with the libraries imported
        self.checkers.make_folder()

    async def _checkers_zygote(self) -> Zygote | None:
        """The batch's zygote, for the warm checker (see _ask_zygote)."""
        return await self._zygote(None)

    async def _close_checkers(self) -> None:
        """Stop the warm checker and remove the slot's folder, leaving no process of its user."""
        if self.checkers is not None:
            await self.checkers.close()
            self.checkers = None
        if self.root:
            await asyncio.to_thread(sandbox.reap, self.checker_uids[0])
        if self.home is not None:
            await asyncio.to_thread(self.home.remove)
            self.home = None

    def _ask_zygote(self, nb: nbformat.NotebookNode | None = None,
                    path: Path | None = None) -> asyncio.Future[Zygote | None] | None:
        """Ask at once (on a thread) for the batch's zygote, shared by its slots and started for
        the first notebook (NB, or the one at PATH: its libraries and those of the course's
        notebook), where kernels may be forked (see grader.isolation.zygote.usable); None where not. The
        future's zygote is None where it did not start."""
        if self.zygotes is None or not (
                self.warm and zygote.usable(sandboxed=self.sandboxed, gpu=self.device.gpu)):
            return None

        def modules() -> list[str]:  # asked only by the slot that starts the zygote
            first = nb
            if first is None and path is not None:
                with contextlib.suppress(Exception):  # an invalid one is told as it is graded
                    first = read_notebook(path)[0]
            notebooks = [first] if first is not None else []
            with contextlib.suppress(Exception):
                return warm_modules(*notebooks,
                                    nbformat.read(self.assignment.source_notebook, as_version=4))
            return warm_modules(*notebooks)

        return asyncio.get_running_loop().run_in_executor(
            None, self.zygotes.get, self.python, zygote_env(self.device, self.threads), modules)

    async def _zygote(self, nb: nbformat.NotebookNode | None) -> Zygote | None:
        """The batch's zygote (see _ask_zygote), once it has started; None where there is none."""
        asked = self._ask_zygote(nb)
        return None if asked is None else await asked

    def _ahead(self, item: tuple[Submission, float] | None,
               count: int) -> tuple[Submission, asyncio.Task[_Turn]] | None:
        """Get ITEM ready in the background, as the COUNTth submission of this slot (which
        tells the pair of users it runs as)."""
        if item is None:
            return None
        submission, queue_s = item
        return submission, asyncio.ensure_future(self.ready(submission, count % 2, queue_s))

    async def ready(self, submission: Submission, pair: int, queue_s: float = 0.0) -> _Turn:
        """Read SUBMISSION, make its run folder, start its checker and its kernel (warmed up) as
        the users of PAIR; never raises (a failure of the grader is kept in the turn)."""
        turn = _Turn(_new_result(self.assignment, submission, self.key, self.device, self.sandboxed))
        turn.result.queue_s = queue_s
        if submission.path is None:
            return turn
        try:
            turn.nb, turn.result.sha256 = read_notebook(submission.path)
        except InvalidNotebook as exc:
            turn.result.reason = str(exc)
            return turn
        try:
            turn.folder = runs.make(self.home.path if self.home else self.work_root)
            turn.kernel = _Kernel(self.assignment, self.prepared, turn.folder.path, self.device,
                                  self.threads, self.sandboxed, self.kernel_uids[pair],
                                  self.checker_uids[0 if self.checkers else pair], turn.folder,
                                  self.python)
            turn.staged = turn.kernel.stage(turn.nb)
            workdir, shared, env, prefix, owner = turn.staged
            if self.checkers is None:  # else it begins when the notebook does (one at a time)
                turn.checker = await _start_checker(self.assignment, turn.kernel, shared, owner)
            turn.running = StudentKernel(
                turn.nb, workdir=workdir, shared=shared, limits=self.assignment.config.limits,
                env=env, command_prefix=prefix, owner=owner, python=self.python,
                zygote=await self._zygote(turn.nb))
            await turn.running.start(prologue=turn.kernel.prologue,
                                     warmup=warmup_code(turn.nb) if self.warm else "")
        except Exception:  # noqa: BLE001 - the grader's own failure, stored so the batch goes on
            turn.fault = "the grader failed:\n" + traceback.format_exc()[-8000:]
        return turn

    async def _grade_gated(self, turn: _Turn, work: _Work) -> Result | None:
        """TURN graded (its checks once the batch's preflight has passed); None where the
        preflight failed, its kernel then killed at once (not left to run to its end)."""
        if work.opened.is_set():
            return None if work.failed else await self.grade(turn, work.gate)
        grading = asyncio.ensure_future(self.grade(turn, work.gate))
        passed = asyncio.ensure_future(work.gate())
        await asyncio.wait({grading, passed}, return_when=asyncio.FIRST_COMPLETED)
        if passed.done() and not passed.result():
            grading.cancel()  # its kernel is discarded on the way out
            with contextlib.suppress(asyncio.CancelledError):
                await grading
            return None
        result = await grading
        return result if await passed else None

    async def grade(self, turn: _Turn, gate: Callable[[], Awaitable[bool]] | None = None) -> Result:
        """Run TURN's notebook and its checks (once GATE says the batch's preflight passed), then
        clean up after it; never raises."""
        try:
            if turn.fault:
                mark_fault(turn.result, turn.fault)
            elif turn.running is not None:
                if turn.checker is None and self.checkers is not None:
                    assert turn.kernel is not None and turn.staged is not None
                    turn.checker = await self.checkers.begin(
                        self.assignment.check_files(), run_dir=turn.kernel.run_dir,
                        shared=turn.staged[1], kernel_uid=turn.staged[4])
                await _execute_and_check(self.assignment, turn, gate)
        except Exception:  # noqa: BLE001 - the grader's own failure, stored so the batch goes on
            mark_fault(turn.result, "the grader failed:\n" + traceback.format_exc()[-8000:])
        finally:
            await self.discard(turn)
        return turn.result

    async def discard(self, turn: _Turn) -> None:
        """Kill TURN's kernel and whatever runs as its users; remove its run folder."""
        if turn.checker is not None:
            turn.checker.kill()
        if turn.running is not None:
            await turn.running.close()
        if self.root and turn.kernel is not None:
            # the warm checker's user keeps its server: its children end with their checks
            users = (turn.kernel.uid,) if self.checkers else (turn.kernel.uid, turn.kernel.checker_uid)
            for user in users:
                await asyncio.to_thread(sandbox.reap, user)
        if turn.folder is not None:
            await asyncio.to_thread(turn.folder.remove)


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
        env = base_env(self.device, self.threads, self.run_dir)
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
        return student_data_files(self.assignment, self.prepared)



def student_data_files(assignment: Assignment, prepared: Prepared | None) -> dict[str, Path]:
    """The student-visible data of ASSIGNMENT, by name in a kernel's working directory (and in
    the student bundle); never anything hidden."""
    if prepared is None:
        return {}
    folder = prepared.student_dir
    names = assignment.config.data.student_files or tuple(p.name for p in sorted(folder.iterdir()))
    return {name: folder / name for name in names}


async def _execute_and_check(assignment: Assignment, turn: _Turn,
                             gate: Callable[[], Awaitable[bool]] | None = None) -> None:
    assert turn.kernel is not None and turn.staged is not None and turn.running is not None
    assert turn.checker is not None
    kernel, result, checker = turn.kernel, turn.result, turn.checker
    shared = turn.staged[1]
    limits = assignment.config.limits
    log = shared / "kernel.log"  # the kernel's stderr, read before the run folder goes
    try:
        execution = await turn.running.run(assignment.config.seed)
        result.kernel_start_s = execution.kernel_start_s
        result.warmup_s = execution.warmup_s
        result.execution_s = execution.execution_s
        if gate is not None and not await gate():  # no check runs before the preflight passed
            checks = Checks(problem="the batch's preflight failed")
        else:
            checks = await checker.finish(execution.connection, f"nothing to check: {execution.reason}")
    finally:
        checker.kill()
        await turn.running.close()
    result.device = device_used(kernel.device, execution.gpus_used, keras_backend())
    result.checks_s = checks.seconds
    result.checks = checks.outcomes
    result.weights = checks.weights
    result.status = status_of(execution.status, checks.problem, checks.outcomes)
    result.reason = execution.reason
    result.score = total(checks.outcomes)
    if turn.running.warmup_problem:
        result.staff_detail = (f"the kernel's warm-up failed ({turn.running.warmup_problem}); it"
                               " was started again without one")
    if turn.running.zygote_problem:
        result.staff_detail = (f"{result.staff_detail}\nthe zygote could not fork the kernel"
                               f" ({turn.running.zygote_problem}); it was started cold").strip()
    if execution.status in ("kernel_died", "kernel_failed"):
        result.staff_detail += "\nthe kernel's stderr, last lines:\n" + _tail(log)
        result.staff_detail = result.staff_detail.strip()
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


async def _start_checker(assignment: Assignment, kernel: _Kernel, shared: Path,
                         owner: int) -> Checker:
    """The submission's checker, started ahead with the kernel: it imports its libraries while
    the slot's current submission runs, then waits for its kernel to be run."""
    prepared = kernel.prepared
    return await start_checks(
        assignment.check_files(), run_dir=kernel.run_dir, public_dir=assignment.public_checks,
        hidden_dir=prepared.hidden_dir if prepared else None,
        student_data=prepared.student_dir if prepared else None, shared=shared,
        limits=assignment.config.limits, sandboxed=kernel.sandboxed, uid=kernel.checker_uid,
        kernel_uid=owner)


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
    preflight: Callable[[], object] | None = None,
) -> Batch:
    """Grade every submission not graded before, one kernel per slot at a time (Settings.slots:
    PER_GPU per GPU, or WORKERS on the CPU), storing each at once; feedback pages are written
    off the slots, after the result is stored.

    PREFLIGHT, where given, runs (collecting the checks) while the slots start their first
    kernels, and the first kernel to start is the preflight's kernel probe: notebooks may run
    meanwhile, but no submission is checked or stored before PREFLIGHT has returned, nor graded
    before a kernel started; what PREFLIGHT raises,
    or PreflightFailed where the first kernel did not start, is raised here with nothing graded.

    A slot claims each submission in the gradebook as it takes it (Gradebook.claim): one that
    another grader process is grading is passed over (Batch.elsewhere), one it graded meanwhile
    is skipped; the claims still held at the end are released.

    A result that cannot be stored is reported in Batch.unstored and the batch goes on; if more
    than half of the first results are grader faults, the batch stops (Batch.stopped).

    With SETTINGS.executor "ray", each submission is a Ray task instead (grader.grading.ray_executor):
    PREFLIGHT runs while Ray starts, there is no kernel probe (a broken worker's faults stop the
    batch as above), and results are stored and reported here all the same."""
    if settings.executor != "ray":  # a worker's own folder is its own
        runs.check_room(settings.work_root)
    began = time.monotonic()
    batch = Batch()
    key = assignment.grading_key(prepared.key if prepared else "")
    reporter = _Reporter(assignment, gradebook, settings, batch)
    try:
        todo = _not_graded(assignment, submissions, gradebook, settings, key, batch, reporter,
                           on_skip)
        claim = _claimer(assignment, gradebook, settings, key, batch, on_skip)
        run = _run_slots
        if settings.executor == "ray":
            from grader.grading.ray_executor import run_tasks as run  # Ray is an optional extra
        run(assignment, todo, gradebook, prepared, settings, key, batch, reporter, on_result,
            began, preflight, claim)
    finally:
        reporter.close()
        _release(gradebook, assignment)
    batch.seconds = time.monotonic() - began
    return batch


def _not_graded(assignment: Assignment, submissions: list[Submission], gradebook: Gradebook,
                settings: Settings, key: str, batch: Batch, reporter: _Reporter,
                on_skip: Callable[[Submission], None] | None) -> list[Submission]:
    """The submissions to grade; the others are skipped (their page written if it is missing)."""
    todo, unpaged = [], []
    for submission in submissions:
        sha = _digest(submission.path)
        if not settings.force and submission.path is not None and gradebook.already_graded(
            submission.student, assignment.name, sha, key
        ):
            batch.skipped.append(submission.student)
            _store_safely(batch, submission.student, functools.partial(
                gradebook.mark_seen, submission.student, assignment.name, sha))
            if settings.reports is not None and not (
                    settings.reports / feedback_name(submission.student)).exists():
                unpaged.append(submission.student)
            if on_skip:
                on_skip(submission)
        else:
            todo.append(submission)
    if unpaged:
        stored = {r.student: r for r in _store_safely(
            batch, unpaged[0], functools.partial(gradebook.latest, assignment.name)) or []}
        for student in unpaged:
            if student in stored:
                reporter.publish(stored[student], None)
    return todo


def _release(gradebook: Gradebook, assignment: Assignment) -> None:
    """Let go of the claims this grader still holds (on submissions it did not store)."""
    try:
        gradebook.release(assignment.name)
    except GradebookError:
        pass  # they are taken over once this process has ended (Gradebook.claim)


def claim_lease(assignment: Assignment) -> float:
    """How long a claim on a submission of ASSIGNMENT lasts before another grader may take it
    over, in seconds: a slot holds its next submission while its current one runs, so twice a
    submission's longest turn (its kernel's start, the notebook, the checks), and ten minutes."""
    limits = assignment.config.limits
    return 2 * (limits.kernel_start_seconds + limits.total_seconds + limits.check_seconds) + 600


def _claimer(assignment: Assignment, gradebook: Gradebook, settings: Settings, key: str,
             batch: Batch, on_skip: Callable[[Submission], None] | None) -> Callable[[Submission], bool]:
    """Whether this grader may grade a submission: its claim in the gradebook taken, and not
    graded meanwhile by another grader (unless forced). One it may not is kept in BATCH as
    graded elsewhere, already graded, or (where the gradebook cannot be reached) unstored."""
    lease = claim_lease(assignment)

    def claim(submission: Submission) -> bool:
        sha, student = _digest(submission.path), submission.student
        try:
            if not gradebook.claim(student, assignment.name, sha, key, lease_s=lease):
                batch.elsewhere.append(student)
            elif (settings.force or submission.path is None
                  or not gradebook.already_graded(student, assignment.name, sha, key)):
                return True
            else:  # another grader stored it after this batch began
                gradebook.release(assignment.name, student)
                batch.skipped.append(student)
        except GradebookError as exc:
            batch.unstored.append((student, f"its claim could not be taken: {exc}"))
        if on_skip:
            on_skip(submission)
        return False
    return claim


def _run_slots(assignment: Assignment, todo: list[Submission], gradebook: Gradebook,
               prepared: Prepared | None, settings: Settings, key: str, batch: Batch,
               reporter: _Reporter, on_result: Callable[[Result], None] | None,
               began: float, preflight: Callable[[], object] | None = None,
               claim: Callable[[Submission], bool] | None = None) -> None:
    """Grade TODO on the slots, each a thread running one event loop that takes submissions
    from a shared queue (those CLAIM takes); store each result here as it comes and hand it to
    the reporter. PREFLIGHT runs on a thread of its own meanwhile (see grade_batch)."""
    # Each slot is a device (a GPU appears PER_GPU times at most) and, for a root grader, users
    # of its own: a kernel's process limit and the reaping after it concern that kernel alone.
    each = settings.slots(assignment.config.limits.memory_mb)[: max(1, len(todo))]
    root = settings.sandboxed and os.geteuid() == 0
    threads = threads_per_kernel(len(each))
    python = kernel_python(settings.python)
    work = _Work(todo, began, preflight=preflight is not None, claim=claim)
    done: queue.SimpleQueue[Result | None] = queue.SimpleQueue()
    last: dict[int, float] = {}  # when each slot gave its last result

    def serve(slot: _Slot, index: int) -> None:
        def give(result: Result) -> None:
            last[index] = time.monotonic()
            done.put(result)

        try:
            asyncio.run(slot.serve(work, give, index))
        except Exception:  # noqa: BLE001 - a broken slot stops the batch, never hangs it
            work.stop.set()
            batch.stopped = batch.stopped or ("stopped: a worker slot failed: "
                                              + _first_line(traceback.format_exc()))
        finally:
            done.put(None)

    def check() -> None:
        try:
            if preflight is not None:
                preflight()
        except BaseException as exc:  # noqa: BLE001 - raised again on the batch's thread
            work.fail(exc)
        finally:
            work.opened.set()

    checking = threading.Thread(target=check, name="grader-preflight", daemon=True)
    checking.start()
    workers: list[threading.Thread] = []
    zygotes = Zygotes()
    for device in each:
        users = [sandbox.claim_user() for _ in range(4)] if root else [65534] * 4
        slot = _Slot(assignment, prepared, key, device, threads, settings.work_root,
                     settings.sandboxed, python, (users[0], users[1]), (users[2], users[3]),
                     warm=settings.warm_kernels, warm_checks=settings.warm_checks,
                     zygotes=zygotes)
        workers.append(threading.Thread(target=serve, args=(slot, len(workers)),
                                        name="grader-slot", daemon=True))
    for worker in workers:
        worker.start()
    try:
        _collect(todo, gradebook, settings, batch, reporter, on_result, done, work.stop,
                 len(workers))
    finally:
        work.stop.set()  # an interrupted batch (Ctrl-C) takes nothing more
        for worker in workers:
            worker.join()
        zygotes.close()
        checking.join()
        batch.start_s = work.first_run or 0.0
        batch.slot_ends = [t - began for t in last.values()]
    if work.failed is not None:
        raise work.failed


def _collect(todo: list[Submission], gradebook: Gradebook, settings: Settings, batch: Batch,
             reporter: _Reporter, on_result: Callable[[Result], None] | None,
             done: queue.SimpleQueue[Result | None], stop: threading.Event, running: int) -> None:
    """Store each result as a slot gives it, then hand it to the reporter; stop the batch when
    more than half of its first results are grader faults."""
    window = min(settings.stop_after, len(todo))
    while running:
        result = done.get()
        if result is None:
            running -= 1
            continue
        _attach_overrides(gradebook, result)
        apply_late(result, settings.late)  # stored with its penalty and overrides, the raw score kept
        stored_at = time.monotonic()
        run_id = _store_safely(batch, result.student, functools.partial(gradebook.store, result))
        result.store_s = time.monotonic() - stored_at
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
                stop.set()
        reporter.publish(result, run_id)


class _Reporter:
    """Writes feedback pages on a thread of its own, after each result is stored: a page that
    cannot be written turns the stored result into a grader fault (its run amended), so that the
    next run grades it again; then the result's store and report times are recorded."""

    def __init__(self, assignment: Assignment, gradebook: Gradebook, settings: Settings,
                 batch: Batch):
        self.assignment, self.gradebook, self.settings, self.batch = (
            assignment, gradebook, settings, batch)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grader-report")
        self.renderer = Renderer()  # used on the pool's one thread only
        if settings.reports is not None and settings.notebook_html:
            self.pool.submit(self.renderer.start)  # nbconvert warms up while kernels start

    def publish(self, result: Result, run_id: int | None) -> None:
        """Write RESULT's page (if pages are wanted) and record its phases, off this thread."""
        if self.settings.reports is None:
            if run_id is not None:
                self._record(result, run_id)
            return
        self.pool.submit(self._page, result, run_id)

    def close(self) -> None:
        """Wait for every page, then stop the renderer."""
        self.pool.shutdown(wait=True)
        self.renderer.close()

    def _page(self, result: Result, run_id: int | None) -> None:
        assert self.settings.reports is not None
        started = time.monotonic()
        try:
            write_feedback(result, title=self.assignment.config.title,
                           folder=self.settings.reports, notebook_html=self.settings.notebook_html,
                           renderer=self.renderer)
        except ReportError as exc:  # the student's notebook would not render: the grade stands
            result.report_error = str(exc)[:2000]
        except Exception as exc:  # noqa: BLE001 - the page is missing: graded again next run
            result.report_error = f"{type(exc).__name__}: {exc}"[:2000]
            mark_fault(result, f"the feedback page could not be written: {result.report_error}")
        result.report_s = time.monotonic() - started
        if result.report_error:  # so that the gradebook says what happened
            if run_id is None:  # a result from the gradebook, or one that was not stored
                run_id = _store_safely(self.batch, result.student,
                                       functools.partial(self.gradebook.store, result))
            else:
                _store_safely(self.batch, result.student,
                              functools.partial(self.gradebook.amend, run_id, result))
        if run_id is not None:
            self._record(result, run_id)

    def _record(self, result: Result, run_id: int) -> None:
        _store_safely(self.batch, result.student, functools.partial(
            self.gradebook.record_phases, run_id, store_s=result.store_s,
            report_s=result.report_s))


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "no detail")[:200]


def _attach_overrides(gradebook: Gradebook, result: Result) -> None:
    """Give RESULT the staff's overrides of its student (applied where made on this very
    notebook); where the gradebook cannot be read, none: the next restatement applies them."""
    try:
        result_overrides = gradebook.overrides(result.assignment).get(result.student, [])
    except GradebookError:
        result_overrides = []
    attach_overrides(result, result_overrides)


def _store_safely(batch: Batch, student: str, write: Callable[[], T]) -> T | None:
    """Write to the gradebook and return what the write returns; a write that fails (after the
    gradebook's retries) is kept in BATCH.unstored, gives None, and never stops the batch."""
    try:
        return write()
    except GradebookError as exc:
        batch.unstored.append((student, str(exc)))
    except Exception as exc:  # noqa: BLE001 - a failed write never sinks the batch
        batch.unstored.append((student, f"{type(exc).__name__}: {exc}"[:500]))
    return None
