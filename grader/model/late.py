"""Late hand-ins: each student's due date, how late a notebook came, and what that costs.

The `[deadline]` table of assignment.toml (grader/model/config.py's Deadline) decides it: a hand-in
after the student's due date loses `rate` of the maximum points for every started day (or hour),
at most `cap` of them; after the cutoff it scores 0. An extensions CSV (columns student, due)
gives single students a later due date, and moves their cutoff by as much. A submission without
a time is never late; a grader fault has no score and so no penalty.

The penalty is worked out from the stored raw score whenever results are stored, reported or
exported (`restate`), so that a changed deadline, policy or extension changes stored grades
without running a notebook again.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from grader.model.config import Deadline, parse_moment
from grader.model.errors import AssignmentError
from grader.model.result import Result, override_points
from grader.model.submission import student_id

if TYPE_CHECKING:
    from grader.model.assignments import Assignment
    from grader.store.gradebook import Gradebook


@dataclass(frozen=True)
class LatePolicy:
    """An assignment's deadline and the students' extensions."""

    deadline: Deadline
    extensions: dict[str, datetime] = field(default_factory=dict)  # student: their due date

    def due_for(self, student: str) -> datetime:
        """STUDENT's due date: their extension, else the deadline."""
        return self.extensions.get(student, self.deadline.due_at)

    def cutoff_for(self, student: str) -> datetime | None:
        """STUDENT's cutoff: the deadline's, moved as far as their extension moves their due date."""
        cutoff = self.deadline.cutoff_at
        return None if cutoff is None else cutoff + (self.due_for(student) - self.deadline.due_at)


@dataclass(frozen=True)
class Lateness:
    """How late one hand-in was and the fraction of the maximum points that costs."""

    due: datetime
    seconds: float  # after the due date; 0 when on time
    fraction: float  # of the maximum points lost (1.0 after the cutoff)
    note: str  # in words, for the student


def load_policy(assignment: Assignment) -> LatePolicy | None:
    """ASSIGNMENT's late policy, with its extensions read; None when it has no [deadline]."""
    deadline = assignment.config.deadline
    if deadline is None:
        return None
    extensions = {}
    if deadline.extensions:
        extensions = read_extensions(assignment.root / deadline.extensions, deadline)
    return LatePolicy(deadline, extensions)


def read_extensions(path: Path, deadline: Deadline) -> dict[str, datetime]:
    """The extensions CSV at PATH (columns student, due); AssignmentError (one line) if unusable."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise AssignmentError(f"the extensions file {path} (deadline.extensions) does not exist:"
                              " create it with the columns student,due or remove the setting") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AssignmentError(f"the extensions file {path} cannot be read ({exc}): save it as"
                              " UTF-8 CSV") from None
    reader = csv.DictReader(text.splitlines())
    header = [(h or "").strip().lower() for h in reader.fieldnames or []]
    if "student" not in header or "due" not in header:
        raise AssignmentError(f"the extensions file {path} needs the columns student and due"
                              f" (found: {', '.join(header) or 'none'})")
    extensions: dict[str, datetime] = {}
    for line, row in enumerate(reader, start=2):
        values = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k}
        if not values.get("student"):
            raise AssignmentError(f"{path}, line {line}: the student id is empty")
        student, due = student_id(values["student"]), parse_moment(values.get("due", ""))
        if due is None:
            raise AssignmentError(f"{path}, line {line}: due must be an ISO-8601 date-time with a"
                                  f" UTC offset, e.g. 2026-03-08T23:59:00+01:00, found"
                                  f" {values.get('due', '')!r}")
        if due < deadline.due_at:
            raise AssignmentError(f"{path}, line {line}: {student}'s due date {values['due']} is"
                                  f" before the deadline {deadline.due}: an extension only moves it later")
        if student in extensions:
            raise AssignmentError(f"{path}, line {line}: {student} has a second extension; keep one")
        extensions[student] = due
    return extensions


def lateness(policy: LatePolicy, student: str, submitted_at: datetime | None) -> Lateness | None:
    """How late STUDENT's hand-in at SUBMITTED_AT was under POLICY; None without a time."""
    if submitted_at is None:
        return None
    submitted_at = as_utc(submitted_at)
    deadline, due = policy.deadline, policy.due_for(student)
    seconds = max(0.0, (submitted_at - due).total_seconds())
    cutoff = policy.cutoff_for(student)
    if cutoff is not None and submitted_at > cutoff:
        return Lateness(due, seconds, 1.0, f"handed in {how_late(seconds)} late, after the cutoff"
                        f" {_moment(cutoff)}: no points")
    if seconds == 0:
        return Lateness(due, 0.0, 0.0, "")
    units = math.ceil(seconds / deadline.unit_seconds)
    fraction = round(min(deadline.cap, units * deadline.rate), 6)
    unit = "day" if deadline.penalty == "per_day" else "hour"
    rule = (f"{units} started {unit}{'s' if units != 1 else ''} x {_percent(deadline.rate)}"
            + (f", capped at {_percent(deadline.cap)}" if units * deadline.rate > deadline.cap else ""))
    return Lateness(due, seconds, fraction, f"handed in {how_late(seconds)} after the due date"
                    f" {_moment(due)}: {rule} = {_percent(fraction)} of the points")


def apply_late(result: Result, policy: LatePolicy | None) -> bool:
    """Set RESULT's final score: its raw score (the checks' points), with the staff's applied
    overrides (grader/course/review.py), less the late penalty of POLICY (none: no penalty); and its
    late fields. Whether any of them changed. The one place the final score is worked out."""
    before = _late_fields(result)
    raw = result.raw
    adjusted = min(result.max_score, max(0.0, round(raw + override_points(result), 4)))
    late = lateness(policy, result.student, result.submitted_at) if policy else None
    penalty = 0.0
    if late is not None and result.counted:
        penalty = min(adjusted, round(late.fraction * result.max_score, 4))
    result.raw_score = raw
    result.late_penalty = penalty
    if result.counted:
        result.score = round(adjusted - penalty, 4)
    result.late_seconds = late.seconds if late else 0.0
    result.due_at = late.due if late else None
    result.late_note = late.note if late else ""
    return _late_fields(result) != before


def restate(gradebook: Gradebook, assignment: Assignment) -> list[str]:
    """Work out every stored result's late penalty of ASSIGNMENT again under its current
    assignment.toml and extensions, storing what changed; the students whose grades changed."""
    policy = load_policy(assignment)
    return gradebook.restate_late(assignment.name, lambda result: apply_late(result, policy))


def _late_fields(result: Result) -> tuple[object, ...]:
    due = None if result.due_at is None else as_utc(result.due_at)
    return (result.score, result.raw_score, result.late_penalty, round(result.late_seconds, 3),
            due, result.late_note)


def as_utc(moment: datetime) -> datetime:
    """MOMENT in UTC; a time without a zone is taken as UTC (SQLite keeps none)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def how_late(seconds: float) -> str:
    """SECONDS in words: '2 days 3 h', '5 h 10 min', '40 min', '30 s'."""
    seconds = max(0, round(seconds))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} day{'s' if days != 1 else ''}" + (f" {hours} h" if hours else "")
    if hours:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    return f"{minutes} min" if minutes else f"{secs} s"


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.4g}%"


def _moment(moment: datetime) -> str:
    """MOMENT as the course wrote it: date, time and UTC offset."""
    return moment.strftime("%Y-%m-%d %H:%M %z").replace("+0000", "UTC")
