"""The gradebook's tables (SQLAlchemy models) and how a stored row becomes a Result again: each
string that came from a submission cleaned and capped (model.result.cleaned), each time given
back its zone."""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from grader.model.outcomes import Attachment, CheckOutcome
from grader.model.result import Result, Status, cleaned


class Base(DeclarativeBase):
    pass


class StatusText(TypeDecorator[Status]):
    """A result's Status, stored as its plain value and read back as the Status."""

    impl = String(30)
    cache_ok = True

    def process_bind_param(self, value: Status | str | None, dialect: Dialect) -> str | None:
        return None if value is None else Status(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> Status | None:
        return None if value is None else Status(value)


class Student(Base):
    __tablename__ = "students"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)


class SubmissionRow(Base):
    __tablename__ = "submissions"
    __table_args__ = (UniqueConstraint("student_id", "assignment", "notebook_sha256"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    student_id: Mapped[int] = mapped_column(ForeignKey("students.id"))
    assignment: Mapped[str] = mapped_column(String(100), index=True)
    notebook_sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # when a run last found this notebook on disk: the student's current hand-in is the latest seen
    seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # the grading key it was last graded or found under: its result is its run under that key
    # (older rows: NULL, the key of its latest run)
    seen_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    student: Mapped[Student] = relationship()
    runs: Mapped[list[Run]] = relationship(back_populates="submission", order_by="Run.id")


class Run(Base):
    __tablename__ = "grading_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), index=True)
    checks_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[Status] = mapped_column(StatusText())
    reason: Mapped[str] = mapped_column(Text, default="")
    score: Mapped[float] = mapped_column(Float)
    max_score: Mapped[float] = mapped_column(Float)
    device: Mapped[str] = mapped_column(String(200), default="CPU")
    sandboxed: Mapped[bool] = mapped_column(Boolean, default=False)
    # the grader that graded it (version+grading code); older rows: ""
    grader: Mapped[str] = mapped_column(String(100), default="")
    queue_s: Mapped[float] = mapped_column(Float, default=0.0)
    kernel_start_s: Mapped[float] = mapped_column(Float, default=0.0)
    warmup_s: Mapped[float] = mapped_column(Float, default=0.0)
    execution_s: Mapped[float] = mapped_column(Float, default=0.0)
    checks_s: Mapped[float] = mapped_column(Float, default=0.0)
    store_s: Mapped[float] = mapped_column(Float, default=0.0)
    report_s: Mapped[float] = mapped_column(Float, default=0.0)
    graded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    failed_cell: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    executed_notebook: Mapped[str | None] = mapped_column(Text, nullable=True)
    weights: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)  # older rows: NULL
    staff_detail: Mapped[str] = mapped_column(Text, default="")
    report_error: Mapped[str] = mapped_column(Text, default="")
    # the late penalty (grader/model/late.py): score is raw_score less late_penalty; NULL raw_score
    # (a gradebook made before there were deadlines) means the score is the raw score
    raw_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    late_penalty: Mapped[float] = mapped_column(Float, default=0.0)
    late_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    late_note: Mapped[str] = mapped_column(Text, default="")
    submission: Mapped[SubmissionRow] = relationship(back_populates="runs")
    checks: Mapped[list[CheckRow]] = relationship(back_populates="run", order_by="CheckRow.id")


class CheckRow(Base):
    __tablename__ = "check_results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("grading_runs.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    public: Mapped[bool] = mapped_column(Boolean)
    points: Mapped[float] = mapped_column(Float)
    max_points: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text, default="")
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    fault: Mapped[str] = mapped_column(String(20), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    run: Mapped[Run] = relationship(back_populates="checks")


class OverrideRow(Base):
    """A reviewer's change to a grade (grader/course/review.py): who, when, why, on which notebook.
    Rows are never changed: the latest of a student's item counts, the older ones are its history."""

    __tablename__ = "overrides"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    student: Mapped[str] = mapped_column(String(200), index=True)
    assignment: Mapped[str] = mapped_column(String(100), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # "check" or "rubric"
    item: Mapped[str] = mapped_column(String(200))  # the check's or the rubric item's name
    points: Mapped[float] = mapped_column(Float)
    was: Mapped[float | None] = mapped_column(Float, nullable=True)  # a check's points before
    comment: Mapped[str] = mapped_column(Text, default="")
    reviewer: Mapped[str] = mapped_column(String(200), default="")
    made_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    notebook_sha256: Mapped[str] = mapped_column(String(64))


class ClaimRow(Base):
    """A grader process's hold on one submission while it grades it (Gradebook.claim): the
    unique constraint lets one process at a time hold it; the stored result releases it."""

    __tablename__ = "claims"
    __table_args__ = (UniqueConstraint("assignment", "student", "notebook_sha256", "grading_key",
                                       name="uq_claims_submission"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment: Mapped[str] = mapped_column(String(100))
    student: Mapped[str] = mapped_column(String(200))
    notebook_sha256: Mapped[str] = mapped_column(String(64))
    grading_key: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(300))  # HOST:PID of the grader process
    token: Mapped[str] = mapped_column(String(32))  # this claim's own: a take-over replaces it
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


RUN_FIELDS = (
    "checks_sha256", "status", "reason", "score", "max_score", "device", "sandboxed", "grader",
    "queue_s", "kernel_start_s", "warmup_s", "execution_s", "checks_s", "store_s", "report_s",
    "graded_at", "failed_cell",
    "executed_notebook", "staff_detail", "report_error", "weights",
    "raw_score", "late_penalty", "late_seconds", "due_at", "late_note",
)
# What the late penalty is worked out from, and what it sets (grader/model/late.py).
LATE_FIELDS = ("score", "raw_score", "late_penalty", "late_seconds", "due_at", "late_note")
SCORE_FIELDS = ("checks_sha256", "status", "max_score", "graded_at", *LATE_FIELDS)


def zoned(result: Result, submission: SubmissionRow) -> None:
    """Give RESULT its hand-in time, and every stored time its zone back (SQLite keeps none)."""
    result.submitted_at = None if submission.submitted_at is None else utc(submission.submitted_at)
    result.graded_at = utc(result.graded_at)
    result.due_at = None if result.due_at is None else utc(result.due_at)


def utc(stamp: datetime) -> datetime:
    """SQLite keeps no zone; we always write UTC."""
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp


def as_utc(stamp: datetime | None) -> datetime | None:
    """STAMP in UTC, to store: SQLite would keep a +01:00 time's wall clock and drop its zone."""
    return None if stamp is None else utc(stamp).astimezone(UTC)


def stored_form(result: Result) -> Result:
    """A copy of RESULT fit to store: its student text cleaned and capped (as the batch already
    did before its page was written: model.result.cleaned), every time in UTC."""
    return replace(
        cleaned(result), submitted_at=as_utc(result.submitted_at), due_at=as_utc(result.due_at),
        graded_at=utc(result.graded_at).astimezone(UTC))


def left_over(claim: ClaimRow, now: datetime) -> bool:
    """Whether CLAIM was left by a grader that is gone: its lease ran out, or its owner was a
    process of this host that no longer runs."""
    if utc(claim.expires_at) <= now:
        return True
    host, _, pid = claim.owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's grader: only its lease tells
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it runs, as another user
        return False
    return False


def outcome(row: CheckRow) -> CheckOutcome:
    return CheckOutcome(
        name=row.name, description=row.description, public=row.public,
        max_points=row.max_points, points=row.points, outcome=row.outcome, message=row.message,
        attachments=[Attachment(**a) for a in row.attachments or []], fault=row.fault or "",
        detail=row.detail or "",
    )
