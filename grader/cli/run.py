"""`grader run` and `grader validate`: grade a folder of submissions, or an assignment's own
reference and starter, with a progress bar, the closing line and the exit code."""

from __future__ import annotations

import argparse
import contextlib
import functools
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from grader.cli import options
from grader.cli.common import assignment_of, console, plain, prepared_of, reports_dir, similar_pairs
from grader.grading import devices
from grader.grading.batch import grade_batch
from grader.grading.executor import Batch, Settings
from grader.grading.preflight import preflight_checks
from grader.isolation import sandbox
from grader.model import late
from grader.model.assignments import Assignment, grading_code
from grader.model.errors import GraderError, ValidationFailed
from grader.model.late import LatePolicy
from grader.model.result import GRADER_FAULT, Result
from grader.model.submission import Submission, discover
from grader.model.text import for_terminal
from grader.reports.pages import phases_line, write_feedback_pages, write_summary
from grader.store.gradebook import Gradebook


def _grade(assignment: Assignment, submissions: list[Submission], gradebook: Gradebook,
           args: argparse.Namespace, settings: Settings) -> Batch:
    """Grade with a progress bar that advances as each submission is graded or skipped, once a
    kernel and the checker are seen to work here (the preflight)."""
    prepared = prepared_of(assignment, args)
    line = devices.describe(list(settings.devices), settings.per_gpu, asked=args.gpus)
    if settings.executor == "ray":
        line = (f"grading on the Ray cluster at {settings.address}" if settings.address else
                "grading on a local Ray instance started for this run")
        share = f"1/{settings.per_gpu} of a GPU per task where it has GPUs" if settings.cluster_gpus else "no GPU"
        line += f" ({share})"
    elif not settings.devices[0].gpu:
        memory = assignment.config.limits.memory_mb
        line += "; " + devices.describe_workers(len(settings.slots(memory)),
                                                auto=settings.workers is None,
                                                kernel_memory_mb=memory)
    console.print(line, soft_wrap=True)  # one line, however narrow the terminal
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"grading {assignment.name}", total=len(submissions))

        def advance(_: object) -> None:
            progress.advance(task)

        # the checks are collected while the slots start their first kernels, the first of
        # which is the kernel probe: nothing is graded before both passed
        return grade_batch(assignment, submissions, gradebook=gradebook, prepared=prepared,
                           settings=settings, on_result=advance, on_skip=advance,
                           preflight=functools.partial(preflight_checks, assignment,
                                                       sandboxed=settings.sandboxed))


def _summary_table(results: list[Result]) -> Table:
    """The batch's results: student text shown as it is (plain), a grader fault with no score."""
    table = Table("student", "score", "status", "time", "reason", title="results")
    for r in sorted(results, key=lambda r: r.student):
        score = f"{r.score:g}/{r.max_score:g}" if r.counted else f"—/{r.max_score:g}"
        table.add_row(plain(r.student, cap=80), score, r.status.value, f"{r.total_s:.1f} s",
                      plain(r.reason, cap=81))
    return table


def _settings(args: argparse.Namespace, reports: Path | None,
              late: LatePolicy | None = None) -> Settings:
    workers = options.workers(args.workers)
    if not args.no_sandbox and sandbox.bwrap() is None:
        raise GraderError("cannot isolate the notebooks: bubblewrap is missing or cannot make a "
                          "sandbox here (apt-get install bubblewrap); or pass --no-sandbox to "
                          "grade without isolation")
    ray = getattr(args, "executor", "local") == "ray"
    if ray:
        _ray_options(args)
    elif getattr(args, "address", None):
        raise GraderError("--address names a Ray cluster: pass it with --executor ray")
    settings = Settings(workers=workers, force=getattr(args, "force", False),
                        regrade_new_grader=getattr(args, "regrade_new_grader", False),
                        reports=reports, notebook_html=not args.no_notebook_html,
                        devices=(devices.CPU,) if ray else tuple(devices.choose(args.gpus)),
                        per_gpu=devices.per_gpu(args.per_gpu), sandboxed=not args.no_sandbox,
                        late=late, executor="ray" if ray else "local",
                        address=getattr(args, "address", None), cluster_gpus=args.gpus != "none")
    settings.slots()  # a GPU share too small for a kernel is a one-line error now, not later
    return settings


def _ray_options(args: argparse.Namespace) -> None:
    """A one-line GraderError for what --executor ray cannot do: Ray missing, GPUs by index."""
    from grader.grading.ray_executor import require_ray  # Ray is an optional extra

    require_ray()
    if args.gpus not in ("auto", "none"):
        raise GraderError(f"--executor ray takes --gpus auto or none, not {args.gpus}: Ray places "
                          "each task on a GPU of the cluster")


def cmd_run(args: argparse.Namespace) -> int:
    """Grade every notebook in --submissions; store results; write feedback and a summary."""
    assignment = assignment_of(args)
    target = options.gradebook_target(args.gradebook)
    submissions = discover(Path(args.submissions), notebook_name=assignment.config.notebook)
    reports = reports_dir(args, assignment)
    settings = _settings(args, reports, late.load_policy(assignment))
    gradebook = Gradebook(target)
    with _saying_when_stopped():
        batch = _grade(assignment, submissions, gradebook, args, settings)
    results = _restated(gradebook, assignment, args, reports, skip={r.student for r in batch.graded})
    write_summary(results, assignment=assignment.name, title=assignment.config.title,
                  folder=reports, pairs=similar_pairs(assignment, results, args.similar))
    if batch.graded:
        console.print(_summary_table(batch.graded))
    faults = sum(r.status == GRADER_FAULT for r in batch.graded)
    elsewhere = f", {len(batch.elsewhere)} being graded by another grader run" if batch.elsewhere else ""
    console.print(f"{len(batch.graded)} graded, {len(batch.skipped)} already graded (use --force"
                  f" to regrade){elsewhere} in {batch.seconds:.1f} s; reports: {reports / 'index.html'}",
                  markup=False)
    if batch.older:
        console.print(f"{len(batch.older)} results were graded by another grader than this one"
                      f" ({grading_code()}) and are kept; `grader run {assignment.name}"
                      " --regrade-new-grader` grades them again with this one", highlight=False)
    workers = batch.workers or len(settings.slots())
    if line := phases_line(batch.graded, seconds=batch.seconds, workers=workers,
                           start_s=batch.start_s, slot_ends=batch.slot_ends):
        console.print(line, highlight=False)
    return _batch_exit(batch, faults)


@contextlib.contextmanager
def _saying_when_stopped() -> Iterator[None]:
    """While the batch runs, Ctrl-C says at once that the grader is stopping and what it waits
    for (the slots' kernels still running, which take nothing more), then stops as before; a
    second Ctrl-C stops without waiting."""
    def stopping(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: at once
        print("stopping (Ctrl-C): no new notebook is begun; waiting for the kernels still running"
              " to end (results stored so far are kept; Ctrl-C again stops without waiting)",
              file=sys.stderr, flush=True)
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may handle signals
        return
    before = signal.signal(signal.SIGINT, stopping)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _restated(gradebook: Gradebook, assignment: Assignment, args: argparse.Namespace,
              reports: Path, *, skip: set[str]) -> list[Result]:
    """Every student's latest result, with the late penalty of the current assignment.toml
    (stored where it changed); the feedback pages of those it changed, but SKIP, written again."""
    changed = set(late.restate(gradebook, assignment)) - skip
    results = gradebook.latest(assignment.name)
    if changed:
        problems = write_feedback_pages([r for r in results if r.student in changed],
                                        title=assignment.config.title, folder=reports,
                                        notebook_html=not args.no_notebook_html)
        for problem in problems:
            print(f"warning: {for_terminal(problem)}", file=sys.stderr)
    return results


def _batch_exit(batch: Batch, faults: int) -> int:
    """One line on stderr and exit 1 when the batch stopped, lost writes, or met grader faults."""
    if batch.stopped:  # it may quote a check's message, which may quote the student's values
        print(f"error: {for_terminal(batch.stopped, cap=1000)}", file=sys.stderr)
        return 1
    if batch.unstored:
        student, why = batch.unstored[0]
        print(f"error: {len(batch.unstored)} result(s) could not be stored in the gradebook "
              f"(first: {for_terminal(student, cap=100)}: {for_terminal(why)}); run again to grade"
              " them", file=sys.stderr)
        return 1
    if faults:
        print(f"error: {faults} submission(s) were not graded because of a grader problem (see "
              "the summary page); `grader run` grades them again", file=sys.stderr)
        return 1
    return 0


def validation_problems(assignment: Assignment, reference: Result, starter: Result) -> list[str]:
    """What keeps ASSIGNMENT from being valid, given the graded reference and starter notebooks."""
    problems, full = [], assignment.config.check_points  # the rubric is graded by staff
    if reference.score != full:
        failed = [f"{c.name}: {c.message}" for c in reference.checks if c.outcome != "passed"]
        problems.append(f"the reference got {reference.score:g}/{full:g} from the checks"
                        f" ({reference.reason or '; '.join(failed)[:300]})")
    if starter.score != 0:
        problems.append(f"the starter got {starter.score:g} points instead of 0")
    checks_total = sum(c.max_points for c in reference.checks)
    if checks_total != full:
        problems.append(f"the checks are worth {checks_total:g} points but assignment.toml says"
                        f" {full:g}")
    return problems


def cmd_validate(args: argparse.Namespace) -> int:
    """Grade the reference and the starter; succeed only if they get full marks and zero."""
    assignment = assignment_of(args)
    with tempfile.TemporaryDirectory(prefix="grader-validate-") as tmp:
        folder = Path(tmp) / "submissions"
        folder.mkdir()
        (folder / "reference.ipynb").write_bytes(assignment.source_notebook.read_bytes())
        (folder / "starter.ipynb").write_bytes(assignment.release_notebook.read_bytes())
        gradebook = Gradebook(Path(tmp) / "validate.sqlite")
        reports = options.reports_folder(Path(args.reports)) if args.reports else None
        settings = _settings(args, reports)
        batch = _grade(assignment, discover(folder, notebook_name=""), gradebook, args, settings)
    console.print(_summary_table(batch.graded))
    if batch.stopped or batch.unstored:
        return _batch_exit(batch, 0)
    by_student = {r.student: r for r in batch.graded}
    reference = by_student["reference"]
    problems = validation_problems(assignment, reference, by_student["starter"])
    if problems:
        raise ValidationFailed(f"{assignment.name} is not valid: " + "; ".join(problems))
    console.print(f"{assignment.name} is valid: reference {reference.score:g}/"
                  f"{reference.max_score:g}, starter 0")
    return 0
