"""A submission's result: its status, score and reason the student understands, the staff's
overrides, and how it travels as JSON. (grading.score works it out.)

Two kinds of outcome never mix: what the student's notebook did (graded, cell_error, timeout,
kernel_died, invalid) earns a score; a fault of the grader or the machine (`error`) earns none,
is shown to staff with its detail, and is graded again by the next run.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from grader.model.assignments import Assignment, grading_code
from grader.model.outcomes import Attachment, CheckOutcome
from grader.model.submission import Submission


class Status(enum.StrEnum):
    """A result's status, stored as its value: each member equals its string."""

    GRADED = "graded"
    CELL_ERROR = "cell_error"
    TIMEOUT = "timeout"
    KERNEL_DIED = "kernel_died"
    INVALID = "invalid"
    ERROR = "error"  # a fault of the grader or the machine
    # Grader faults as older graders stored them: read back from their gradebooks, never written.
    LEGACY_INTERNAL_ERROR = "internal_error"
    LEGACY_KERNEL_FAILED = "kernel_failed"


# What each status means, in words for the reports.
STATUSES = {
    Status.GRADED: "ran to the end",
    Status.CELL_ERROR: "a cell raised an error",
    Status.TIMEOUT: "stopped at the time limit",
    Status.KERNEL_DIED: "the kernel died",
    Status.INVALID: "not a notebook the grader can run",
    Status.ERROR: "not graded: grader problem",
}
GRADER_FAULT = Status.ERROR
# Every status that means a grader fault, the legacy ones included.
GRADER_FAULTS = frozenset({GRADER_FAULT, Status.LEGACY_INTERNAL_ERROR, Status.LEGACY_KERNEL_FAILED})
# What a student reads when the grader, not their notebook, failed.
FAULT_REASON = ("not graded yet: the grader had a problem that is not your fault; the course staff"
                " see it and your notebook will be graded again")


@dataclass
class Override:
    """A reviewer's change to one student's grade: a check's points set anew, or a rubric item
    of a written answer graded. It counts only for the notebook it was made on (SHA256)."""

    kind: str  # "check" (ITEM is a check's name) or "rubric" (ITEM is a rubric item's name)
    item: str
    points: float  # the check's new points, or the rubric item's points
    comment: str  # why, in the reviewer's words: shown to the student
    reviewer: str
    made_at: datetime
    sha256: str  # the notebook it was made on
    was: float | None = None  # the check's points before (None for a rubric item)
    needs_review: bool = False  # the notebook changed since (or the check is gone): not applied


OVERRIDE_KINDS = ("check", "rubric")


@dataclass
class Result:
    """One graded submission: what the gradebook stores and the reports show."""

    student: str
    assignment: str
    notebook: str  # path the notebook was read from
    sha256: str
    checks_sha256: str  # the grading key: checks, config, data (see Assignment.grading_key)
    status: Status  # a plain string given (from JSON or the gradebook) becomes the Status
    reason: str  # for the student: never a traceback or a path of the grading machine
    score: float  # the grade: the checks' points, the staff's overrides, less the late penalty (late.py)
    max_score: float
    checks: list[CheckOutcome] = field(default_factory=list)
    failed_cell: dict[str, Any] | None = None
    device: str = "CPU"
    sandboxed: bool = False
    grader: str = ""  # the grader (version+grading code) that graded it; "": before this was kept
    queue_s: float = 0.0  # from the batch's start until a worker slot took it
    kernel_start_s: float = 0.0
    warmup_s: float = 0.0  # the kernel importing the notebook's libraries before its first cell
    execution_s: float = 0.0
    checks_s: float = 0.0
    store_s: float = 0.0  # writing it to the gradebook
    report_s: float = 0.0
    submitted_at: datetime | None = None
    graded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    executed_notebook: str | None = None  # JSON of the executed notebook, outputs capped
    weights: dict[str, str] = field(default_factory=dict)  # sha256 of each model's weights the
    # checks loaded, by name: computed in the trusted checker, never by running student code
    staff_detail: str = ""  # for staff pages only: tracebacks, the kernel's stderr, paths
    report_error: str = ""  # why the feedback page could not be written, if it could not
    raw_score: float | None = None  # the checks' points before any late penalty; None: as score
    late_penalty: float = 0.0  # points taken off for lateness: raw_score - score
    late_seconds: float = 0.0  # how long after the student's due date it was handed in; 0: on time
    due_at: datetime | None = None  # the student's due date (extension or deadline), if any
    late_note: str = ""  # the penalty in words, e.g. "2 started days late x 10% = 20% of 10 points"
    overrides: list[Override] = field(default_factory=list)  # the staff's, read from the gradebook

    def __post_init__(self) -> None:
        self.status = Status(self.status)

    @property
    def total_s(self) -> float:
        return (self.kernel_start_s + self.warmup_s + self.execution_s + self.checks_s
                + self.store_s + self.report_s)

    @property
    def raw(self) -> float:
        """The checks' points before any late penalty."""
        return self.score if self.raw_score is None else self.raw_score

    @property
    def counted(self) -> bool:
        """Whether the score is a grade (not a grader fault waiting to be graded again)."""
        return self.status not in GRADER_FAULTS


def attach_overrides(result: Result, overrides: list[Override]) -> None:
    """Give RESULT the staff's OVERRIDES, those made on another notebook (or on a check it no
    longer has) flagged as needing review: they are kept but not applied."""
    names = {c.name for c in result.checks}
    result.overrides = [
        replace(o, needs_review=o.sha256 != result.sha256 or (o.kind == "check" and o.item not in names))
        for o in overrides]


def override_points(result: Result) -> float:
    """The points RESULT's applied overrides add to (or take from) the checks' points."""
    points = {c.name: c.points for c in result.checks}
    change = 0.0
    for o in result.overrides:
        if o.needs_review:
            continue
        change += o.points - points[o.item] if o.kind == "check" else o.points
    return round(change, 4)


def mark_fault(result: Result, detail: str) -> None:
    """Turn RESULT into a grader fault: no score, a plain reason, the detail for staff."""
    result.status = GRADER_FAULT
    result.reason = FAULT_REASON
    result.score = 0.0
    result.raw_score, result.late_penalty = None, 0.0
    result.staff_detail = (result.staff_detail + "\n" + detail).strip()[-20_000:]


def clean(text: str, cap: int) -> str:
    """TEXT as a page and the database can both hold it: lone surrogates and NUL bytes replaced,
    at most CAP characters."""
    text = text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    return text if len(text) <= cap else text[: cap - 1] + "…"


def clean_json(value: Any) -> Any:
    """VALUE (plain JSON data) with every string cleaned, each capped at 100,000 characters."""
    if isinstance(value, str):
        return clean(value, 100_000)
    if isinstance(value, dict):
        return {clean(str(k), 200): clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    return value


def cleaned(result: Result) -> Result:
    """A copy of RESULT with every string cleaned and capped: student-derived text may hold
    anything (megabytes, lone surrogates, NUL bytes). The batch cleans each result once, before
    it is stored and its page written, so that both show the same text; cleaning it again
    changes nothing."""
    checks = [replace(c, name=clean(c.name, 200), description=clean(c.description, 2000),
                      message=clean(c.message, 5000), detail=clean(c.detail, 20_000),
                      attachments=[replace(a, title=clean(a.title, 500),
                                           content=clean(a.content, 5_000_000))
                                   for a in c.attachments])
              for c in result.checks]
    return replace(
        result, student=clean(result.student, 200), notebook=clean(result.notebook, 4000),
        reason=clean(result.reason, 5000), staff_detail=clean(result.staff_detail, 50_000),
        report_error=clean(result.report_error, 5000), device=clean(result.device, 200),
        failed_cell=clean_json(result.failed_cell), checks=checks,
        late_note=clean(result.late_note, 1000), weights=clean_json(result.weights),
        executed_notebook=None if result.executed_notebook is None
        else clean(result.executed_notebook, 200_000_000),
    )


_MOMENTS = ("submitted_at", "graded_at", "due_at")


def result_to_dict(result: Result) -> dict[str, Any]:
    """RESULT as JSON-able data (dates as ISO-8601), to cross from a grading machine."""
    data = asdict(result)
    data["status"] = result.status.value
    for name in _MOMENTS:
        data[name] = data[name].isoformat() if data[name] is not None else None
    for override in data["overrides"]:
        override["made_at"] = override["made_at"].isoformat()
    return data


def result_from_dict(data: dict[str, Any]) -> Result:
    """The Result that result_to_dict gave DATA; nothing but plain data is read."""
    data = dict(data)
    for name in _MOMENTS:
        data[name] = datetime.fromisoformat(data[name]) if data.get(name) else None
    data["graded_at"] = data["graded_at"] or datetime.now(UTC)
    data["checks"] = [CheckOutcome(**{**c, "attachments": [Attachment(**a) for a in c["attachments"]]})
                      for c in data["checks"]]
    data["overrides"] = [Override(**{**o, "made_at": datetime.fromisoformat(o["made_at"])})
                         for o in data["overrides"]]
    return Result(**data)


def file_digest(path: Path | None) -> str:
    """The sha256 of the file at PATH; '-' where there is none, or it cannot be read."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path else "-"
    except OSError:
        return "-"


def submitted_at(submission: Submission) -> datetime | None:
    """When SUBMISSION was handed in: the LMS's time `grader collect` kept, else the file's mtime."""
    if submission.submitted_at is not None:
        return submission.submitted_at
    try:
        return datetime.fromtimestamp(submission.path.stat().st_mtime, UTC) if submission.path else None
    except OSError:
        return None


def new_result(assignment: Assignment, submission: Submission, key: str, device: str,
               sandboxed: bool) -> Result:
    """SUBMISSION's result before anything ran: invalid, for the reason found (if any), on
    DEVICE (its label) under the grading KEY."""
    return Result(
        student=submission.student, assignment=assignment.name,
        notebook=str(submission.path or ""), sha256=file_digest(submission.path),
        checks_sha256=key, status=Status.INVALID, reason=submission.problem or "",
        score=0.0, max_score=assignment.config.points, device=device, sandboxed=sandboxed,
        submitted_at=submitted_at(submission), grader=grading_code(),
    )
