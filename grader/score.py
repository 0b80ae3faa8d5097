"""Turn an execution and its checks into a score, a status and a reason the student understands."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .plugin import CheckOutcome

# What each status means, in words for the reports.
STATUSES = {
    "graded": "ran to the end",
    "cell_error": "a cell raised an error",
    "timeout": "stopped at the time limit",
    "kernel_died": "the kernel died",
    "kernel_failed": "the kernel did not start",
    "invalid": "not a notebook the grader can run",
    "internal_error": "the grader failed (not the student's fault)",
}


@dataclass
class Result:
    """One graded submission: what the gradebook stores and the reports show."""

    student: str
    assignment: str
    notebook: str  # path the notebook was read from
    sha256: str
    checks_sha256: str
    status: str
    reason: str
    score: float
    max_score: float
    checks: list[CheckOutcome] = field(default_factory=list)
    failed_cell: dict[str, Any] | None = None
    device: str = "CPU"
    sandboxed: bool = False
    kernel_start_s: float = 0.0
    execution_s: float = 0.0
    checks_s: float = 0.0
    report_s: float = 0.0
    submitted_at: datetime | None = None
    graded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    executed_notebook: str | None = None  # JSON of the executed notebook, outputs capped
    staff_detail: str = ""  # tracebacks, kernel stderr, paths: shown on staff pages only

    @property
    def total_s(self) -> float:
        return self.kernel_start_s + self.execution_s + self.checks_s + self.report_s


def total(checks: list[CheckOutcome]) -> float:
    """The points earned over all checks."""
    return round(sum(c.points for c in checks), 4)


def status_of(execution_status: str, check_problem: str) -> str:
    """The run's status: the checks breaking outranks whatever the notebook did."""
    if check_problem:
        return "internal_error"
    return {"ok": "graded"}.get(execution_status, execution_status)
