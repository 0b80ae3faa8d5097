"""The local executor: a batch graded on this machine's slots (a device each, for a root grader
users of their own), one kernel per slot at a time, the next submission's kernel started ahead
while the current one runs. grade_submission grades one submission the same way."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import nbformat

from grader.data.prepare import Prepared
from grader.grading.devices import CPU, Device, cpu_share, threads_per_kernel
from grader.grading.execute import ExecutionStatus, StudentKernel, warmup_code
from grader.grading.executor import Job, Outbox
from grader.grading.kernelenv import kernel_python, warm_modules, zygote_env
from grader.grading.score import execute_and_score, start_checker
from grader.grading.stage import Kernel, Turn, tail
from grader.grading.warmcheck import CheckerSlot, checker_memory_mb
from grader.isolation import sandbox, workdirs, zygote
from grader.isolation.zygote import Zygote, Zygotes
from grader.model.assignments import Assignment
from grader.model.errors import PreflightFailed, gist
from grader.model.result import Result, mark_fault, new_result
from grader.model.submission import InvalidNotebook, Submission, read_notebook


def grade_submission(
    assignment: Assignment, submission: Submission, *, prepared: Prepared | None,
    device: Device = CPU, threads: int = 1, work_root: Path | None = None, sandboxed: bool = True,
    uid: int | None = None, checker_uid: int | None = None, key: str | None = None,
    python: str = "", warm_kernel: bool = True, cpus: float | None = None,
) -> Result:
    """Grade one submission, its kernel held to CPUS cores (where None, THREADS or the cores a
    Ray task asks for, limits.cpus, whichever is more); never raises, whatever the notebook or
    the grader does."""
    if key is None:
        key = assignment.grading_key(prepared.key if prepared else "")
    if cpus is None:
        cpus = max(float(threads), assignment.config.limits.cpus)
    results: list[Result] = []
    try:
        workdirs.check_room(work_root)
        if uid is None:
            uid = sandbox.user(sandboxed)
        if checker_uid is None:
            checker_uid = sandbox.user(sandboxed)
        zygotes = Zygotes()
        slot = Slot(assignment, prepared, key, device, threads, work_root, sandboxed,
                    kernel_python(python), (checker_uid, checker_uid), (uid, uid),
                    warm=warm_kernel, zygotes=zygotes, cpus=cpus)
        try:
            asyncio.run(slot.serve(WorkQueue([submission], time.monotonic()), results.append))
        finally:
            zygotes.close()
    except Exception:  # noqa: BLE001 - the grader's own failure, stored so the batch goes on
        if not results:
            results.append(new_result(assignment, submission, key, device.label, sandboxed))
            mark_fault(results[0], "the grader failed:\n" + traceback.format_exc()[-8000:])
    return results[0]


class WorkQueue:
    """The batch's submissions, shared by its slots. A slot takes its next submission while its
    current one runs, and holds it ahead; a slot left with nothing takes over a submission that
    another slot holds ahead and has not begun (behind a notebook that runs to its time limit,
    say), which that slot then lets go. With a PREFLIGHT, notebooks may run meanwhile, but none
    is checked, nor its result given, before it has passed.
    With CLAIM, a submission is taken only where CLAIM takes it in the gradebook: one that
    another grader process holds is passed over for the next."""

    def __init__(self, todo: list[Submission], began: float, *, preflight: bool = False,
                 claim: Callable[[Submission], bool] | None = None,
                 stop: threading.Event | None = None):
        self.pending = collections.deque(todo)
        self.began = began
        self.claim = claim
        self.stop = stop or threading.Event()  # STOP: the batch's, where it has one
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

    def probe(self, turn: Turn) -> bool:
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
                                 and turn.running.execution.status == ExecutionStatus.KERNEL_FAILED else "")
            if not why:
                self._proven = True
                return True
        log = tail(turn.staged.shared / "kernel.log", 4).replace("\n", " | ") if turn.staged else ""
        self.fail(PreflightFailed(
            f"a sandboxed kernel cannot run here ({gist(why)}); its stderr: {log[-600:]};"
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
class Slot:
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
    home: workdirs.RunFolder | None = None  # the slot's folder, holding its run folders
    zygotes: Zygotes | None = None  # the batch's, which fork its kernels
    cpus: float = 0.0  # the cores each of its kernels may use at most (0: no quota)

    @property
    def root(self) -> bool:
        """Whether kernels and checks run as users of their own (a root grader)."""
        return sandbox.own_users(self.sandboxed)

    async def serve(self, work: WorkQueue, give: Callable[[Result], None], index: int = 0) -> None:
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
            # the first slot's checker starts importing now, beside the zygote; the others' once
            # their first kernel has started, so that the zygote's import is not slowed; none
            # where there is nothing to grade
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
        """Make the slot's folder, its checker's memory cgroup, and its warm checker, which
        starts (and imports the check libraries) at once for the first slot, and for the others
        once their first kernel has started, while its notebook runs."""
        self.home = workdirs.make(self.work_root)
        prepared = self.prepared
        limits = self.assignment.config.limits
        cgroups = self.home.confine_memory(checker_memory_mb(limits)) if self.sandboxed else ()
        self.checkers = CheckerSlot(
            folder=self.home.path, public_dir=self.assignment.public_checks,
            hidden_dir=prepared.hidden_dir if prepared else None,
            student_data=prepared.student_dir if prepared else None,
            limits=limits, sandboxed=self.sandboxed,
            uid=self.checker_uids[0], kernel_uids=self.kernel_uids, cgroups=cgroups)
        self.checkers.make_folder()

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
               count: int) -> tuple[Submission, asyncio.Task[Turn]] | None:
        """Get ITEM ready in the background, as the COUNTth submission of this slot (which
        tells the pair of users it runs as)."""
        if item is None:
            return None
        submission, queue_s = item
        return submission, asyncio.ensure_future(self.ready(submission, count % 2, queue_s))

    async def ready(self, submission: Submission, pair: int, queue_s: float = 0.0) -> Turn:
        """Read SUBMISSION, make its run folder, start its checker and its kernel (warmed up) as
        the users of PAIR; never raises (a failure of the grader is kept in the turn)."""
        turn = Turn(new_result(self.assignment, submission, self.key, self.device.label, self.sandboxed))
        turn.result.queue_s = queue_s
        if submission.path is None:
            return turn
        try:
            turn.nb, turn.result.sha256 = read_notebook(submission.path)
        except InvalidNotebook as exc:
            turn.result.reason = str(exc)
            return turn
        try:
            turn.folder = workdirs.make(self.home.path if self.home else self.work_root,
                                        cpus=self.cpus)
            turn.kernel = Kernel(self.assignment, self.prepared, turn.folder.path, self.device,
                                  self.threads, self.sandboxed, self.kernel_uids[pair],
                                  self.checker_uids[0 if self.checkers else pair], turn.folder,
                                  self.python)
            try:
                turn.staged = turn.kernel.stage(turn.nb)
            except InvalidNotebook as exc:  # the notebook cannot be laid out: the submission's
                turn.result.reason = str(exc)
                return turn
            staged = turn.staged
            if self.checkers is None:  # else it begins when the notebook does (one at a time)
                turn.checker = await start_checker(self.assignment, turn.kernel, staged.shared,
                                                   staged.owner)
            turn.running = StudentKernel(
                turn.nb, workdir=staged.workdir, shared=staged.shared,
                limits=self.assignment.config.limits, env=staged.env, command_prefix=staged.command,
                owner=staged.owner, python=self.python,
                zygote=await self._zygote(turn.nb))
            await turn.running.start(prologue=turn.kernel.prologue,
                                     warmup=warmup_code(turn.nb) if self.warm else "")
        except Exception:  # noqa: BLE001 - the grader's own failure, stored so the batch goes on
            turn.fault = "the grader failed:\n" + traceback.format_exc()[-8000:]
        return turn

    async def _grade_gated(self, turn: Turn, work: WorkQueue) -> Result | None:
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

    async def grade(self, turn: Turn, gate: Callable[[], Awaitable[bool]] | None = None) -> Result:
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
                        shared=turn.staged.shared, kernel_uid=turn.staged.owner)
                await execute_and_score(self.assignment, turn, gate)
        except Exception:  # noqa: BLE001 - the grader's own failure, stored so the batch goes on
            mark_fault(turn.result, "the grader failed:\n" + traceback.format_exc()[-8000:])
        finally:
            await self.discard(turn)
        return turn.result

    async def discard(self, turn: Turn) -> None:
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


class LocalExecutor:
    """This machine's slots (Settings.slots), each a thread running one event loop that takes
    submissions from a shared queue (WorkQueue), one kernel at a time, the next one started
    ahead. JOB.preflight runs on a thread of its own meanwhile, and the first kernel to start is
    its kernel probe (see grade_batch)."""

    def run(self, job: Job, todo: list[Submission], outbox: Outbox) -> None:
        """Grade TODO on the slots, giving each result to OUTBOX (see Executor.run)."""
        assignment, prepared, settings, key = job.assignment, job.prepared, job.settings, job.key
        began, preflight, batch = job.began, job.preflight, outbox.batch
        # Each slot is a device (a GPU appears PER_GPU times at most) and, for a root grader, users
        # of its own: a kernel's process limit and the reaping after it concern that kernel alone.
        each = settings.slots(assignment.config.limits.memory_mb)[: max(1, len(todo))]
        threads, cpus = threads_per_kernel(len(each)), cpu_share(len(each))
        python = kernel_python(settings.python)
        # the batch's stop rule stops the slots
        work = WorkQueue(todo, began, preflight=preflight is not None, claim=job.claim, stop=outbox.stop)
        last: dict[int, float] = {}  # when each slot gave its last result

        def serve(slot: Slot, index: int) -> None:
            def give(result: Result) -> None:
                last[index] = time.monotonic()
                outbox.give(result)

            try:
                asyncio.run(slot.serve(work, give, index))
            except Exception:  # noqa: BLE001 - a broken slot stops the batch, never hangs it
                work.stop.set()
                batch.stopped = batch.stopped or ("stopped: a worker slot failed: "
                                                  + gist(traceback.format_exc()))
            finally:
                outbox.done()

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
            users = [sandbox.user(settings.sandboxed) for _ in range(4)]
            slot = Slot(assignment, prepared, key, device, threads, settings.work_root,
                        settings.sandboxed, python, (users[0], users[1]), (users[2], users[3]),
                        warm=settings.warm_kernels, warm_checks=settings.warm_checks,
                        zygotes=zygotes, cpus=cpus)
            workers.append(threading.Thread(target=serve, args=(slot, len(workers)),
                                            name="grader-slot", daemon=True))
        for worker in workers:
            worker.start()
        try:
            outbox.collect(len(workers))
        finally:
            work.stop.set()  # a stopped or interrupted batch (Ctrl-C) takes nothing more
            for worker in workers:
                worker.join()
            zygotes.close()
            checking.join()
            batch.start_s = work.first_run or 0.0
            batch.slot_ends = [t - began for t in last.values()]
        if work.failed is not None:
            raise work.failed
