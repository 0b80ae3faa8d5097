"""Score: run a staged submission's notebook and its checks, and turn what they did into the
result's status, reason and points."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from grader.grading.check import Checker, Checks, start_checks
from grader.grading.devices import CPU, Device
from grader.grading.execute import ExecutionStatus, notebook_text
from grader.grading.kernelenv import keras_backend
from grader.grading.stage import Kernel, Turn, tail
from grader.model.assignments import Assignment
from grader.model.outcomes import CheckOutcome
from grader.model.result import GRADER_FAULT, Status, mark_fault


def total(checks: list[CheckOutcome]) -> float:
    """The points earned over all checks."""
    return round(sum(c.points for c in checks), 4)


def grader_faults(checks: list[CheckOutcome]) -> list[CheckOutcome]:
    """The checks whose own code broke (not the student's values)."""
    return [c for c in checks if c.fault == "grader"]


# The result's status for each way a run can end that is the notebook's doing, not the grader's.
_STATUS_OF_RUN = {
    ExecutionStatus.OK: Status.GRADED,
    ExecutionStatus.CELL_ERROR: Status.CELL_ERROR,
    ExecutionStatus.TIMEOUT: Status.TIMEOUT,
    ExecutionStatus.KERNEL_DIED: Status.KERNEL_DIED,
}


def status_of(execution_status: ExecutionStatus, check_problem: str, checks: list[CheckOutcome]) -> Status:
    """The run's status: any fault of the grader outranks whatever the notebook did."""
    if check_problem or grader_faults(checks) or execution_status == ExecutionStatus.KERNEL_FAILED:
        return GRADER_FAULT
    return _STATUS_OF_RUN[execution_status]


async def execute_and_score(assignment: Assignment, turn: Turn,
                            gate: Callable[[], Awaitable[bool]] | None = None) -> None:
    """Run TURN's notebook, then its checks (once GATE says the batch's preflight passed), and
    score it into TURN's result: its status, reason, points, and for staff what went wrong."""
    assert turn.kernel is not None and turn.staged is not None and turn.running is not None
    assert turn.checker is not None
    kernel, result, checker = turn.kernel, turn.result, turn.checker
    shared = turn.staged.shared
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
    if execution.status in (ExecutionStatus.KERNEL_DIED, ExecutionStatus.KERNEL_FAILED):
        result.staff_detail += "\nthe kernel's stderr, last lines:\n" + tail(log)
        result.staff_detail = result.staff_detail.strip()
    if result.status == GRADER_FAULT:
        detail = [execution.reason if execution.status == ExecutionStatus.KERNEL_FAILED else "",
                  f"the checks broke: {checks.problem}" if checks.problem else "",
                  *(f"check {c.name} broke: {c.detail}" for c in grader_faults(checks.outcomes))]
        mark_fault(result, "\n".join(d for d in detail if d))
    cell = execution.failed_cell
    result.failed_cell = None if cell is None else {
        "index": cell.index, "number": cell.number, "source": cell.source[:5000],
        "ename": cell.ename, "evalue": cell.evalue[:2000], "traceback": cell.traceback,
    }
    result.executed_notebook, _ = notebook_text(execution.notebook, limits.output_bytes)


async def start_checker(assignment: Assignment, kernel: Kernel, shared: Path, owner: int) -> Checker:
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
