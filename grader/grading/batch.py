"""A batch: which submissions to grade (those not graded under the current grading key), who
may grade each (claims in the gradebook), an executor that grades them (grading.executor), and
each result stored, then its feedback page written, as it comes; one bad notebook never sinks
the rest, and a batch whose first results are mostly the grader's faults stops.

A submission's path: model (the submission) -> grading (stage, execute, check, score: this
package) -> store (the gradebook) -> reports (its page)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from grader.data.prepare import Prepared
from grader.grading.executor import Batch, Executor, Job, Outbox, Settings
from grader.grading.local import LocalExecutor, grade_submission
from grader.isolation import workdirs
from grader.model.assignments import Assignment, grading_code
from grader.model.errors import GradebookError, gist
from grader.model.late import apply_late
from grader.model.result import (
    GRADER_FAULT,
    Result,
    attach_overrides,
    clean,
    cleaned,
    file_digest,
    mark_fault,
)
from grader.model.submission import Submission
from grader.reports.pages import ReportError, page_is_current, write_feedback
from grader.reports.renderer import Renderer
from grader.store.gradebook import Gradebook

__all__ = ["Batch", "Reporter", "Settings", "claim_lease", "grade_batch", "grade_submission"]

T = TypeVar("T")


def grade_batch(
    assignment: Assignment, submissions: list[Submission], *, gradebook: Gradebook,
    prepared: Prepared | None, settings: Settings | None = None,
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
    settings = settings or Settings()
    if settings.executor != "ray":  # a worker's own folder is its own
        workdirs.check_room(settings.work_root)
    began = time.monotonic()
    batch = Batch()
    key = assignment.grading_key(prepared.key if prepared else "")
    reporter = Reporter(assignment, gradebook, settings, batch)
    try:
        todo = _not_graded(assignment, submissions, gradebook, settings, key, batch, reporter,
                           on_skip)
        job = Job(assignment, prepared, settings, key, began, preflight,
                  _claimer(assignment, gradebook, settings, key, batch, on_skip))
        collect = functools.partial(_collect, len(todo), gradebook, settings, reporter, on_result)
        _executor(settings).run(job, todo, Outbox(batch, collect))
    finally:
        reporter.close()
        _release(gradebook, assignment)
    batch.seconds = time.monotonic() - began
    return batch


def _executor(settings: Settings) -> Executor:
    if settings.executor == "ray":
        from grader.grading.ray_executor import RayExecutor  # Ray is an optional extra

        return RayExecutor()
    return LocalExecutor()


def _not_graded(assignment: Assignment, submissions: list[Submission], gradebook: Gradebook,
                settings: Settings, key: str, batch: Batch, reporter: Reporter,
                on_skip: Callable[[Submission], None] | None) -> list[Submission]:
    """The submissions to grade; the others are skipped: those graded under KEY, by this
    grader's grading code or (unless SETTINGS say to regrade them) by another's, which are kept
    in BATCH.older. A skipped notebook is marked seen under KEY, so that its result is the one
    it has under KEY (Gradebook.latest), and its page is written again where it is missing or
    shows another run (a resubmission's, or a fault's under a check since put back)."""
    todo, skipped, code = [], [], grading_code()
    for submission in submissions:
        sha = file_digest(submission.path)
        graded = None if settings.force or submission.path is None else gradebook.graded_by(
            submission.student, assignment.name, sha, key)
        if _stands(graded, code, settings):
            (batch.skipped if graded == code else batch.older).append(submission.student)
            _store_safely(batch, submission.student, functools.partial(
                gradebook.mark_seen, submission.student, assignment.name, sha, key))
            skipped.append(submission.student)
            if on_skip:
                on_skip(submission)
        else:
            todo.append(submission)
    if skipped and settings.reports is not None:
        _repage(assignment, gradebook, settings.reports, settings.notebook_html, batch, reporter,
                skipped)
    return todo


def _repage(assignment: Assignment, gradebook: Gradebook, reports: Path, notebook_html: bool,
            batch: Batch, reporter: Reporter, students: list[str]) -> None:
    """Write again the page of each of STUDENTS whose page in REPORTS is not that of their
    stored result (missing, or another run's), as NOTEBOOK_HTML says."""
    stored = {r.student: r for r in _store_safely(
        batch, students[0], functools.partial(gradebook.latest, assignment.name)) or []}
    for student in students:
        result = stored.get(clean(student, 200))  # as the gradebook keeps the id
        if result is not None and not page_is_current(
                result, title=assignment.config.title, folder=reports,
                notebook_html=notebook_html):
            reporter.publish(result, None)


def _stands(graded: str | None, code: str, settings: Settings) -> bool:
    """Whether a stored result given by the grader GRADED (None: no result counts) stands, and
    its notebook is not graded again: one by this grader's grading CODE always does, one by
    another grader unless SETTINGS say to regrade those."""
    return graded is not None and (graded == code or not settings.regrade_new_grader)


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
    code = grading_code()

    def claim(submission: Submission) -> bool:
        sha, student = file_digest(submission.path), submission.student
        try:
            if not gradebook.claim(student, assignment.name, sha, key, lease_s=lease):
                batch.elsewhere.append(student)
            elif (settings.force or submission.path is None
                  or not _stands(gradebook.graded_by(student, assignment.name, sha, key), code, settings)):
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


def _collect(todo: int, gradebook: Gradebook, settings: Settings, reporter: Reporter,
             on_result: Callable[[Result], None] | None, outbox: Outbox, running: int) -> None:
    """Store each result as a worker gives it, then hand it to the reporter, until RUNNING
    workers are done; stop the batch when more than half of its first results (of TODO) are
    grader faults."""
    batch, stop = outbox.batch, outbox.stop
    window = min(settings.stop_after, todo)
    while running:
        result = outbox.results.get()
        if result is None:
            running -= 1
            continue
        result = cleaned(result)  # once, so that the store and the page show the same text
        _attach_overrides(gradebook, result)
        apply_late(result, settings.late)  # stored with its penalty and overrides, the raw score kept
        stored_at = time.monotonic()
        run_id = _store_safely(batch, result.student, functools.partial(gradebook.store, result))
        result.store_s = time.monotonic() - stored_at
        batch.graded.append(result)
        if on_result:
            on_result(result)
        if len(batch.graded) == window < todo:  # only where there is more to stop
            faults = [r for r in batch.graded if r.status == GRADER_FAULT]
            if window and len(faults) * 2 > window:
                batch.stopped = (
                    f"stopped: {len(faults)} of the first {window} submissions failed on the"
                    f" grader's side ({gist(faults[0].staff_detail)}); fix the machine"
                    " or the checks and run again (faults are regraded)")
                stop.set()
        reporter.publish(result, run_id)


class Reporter:
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
