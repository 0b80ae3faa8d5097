"""The gradebook: students, submissions, grading runs and check results, in SQL.

SQLite by default; PostgreSQL (`postgresql://...`, with the `postgres` extra) where several
graders or machines write at once. Only this module speaks SQL; the schema is made and upgraded
by the migrations in grader/migrations when a gradebook is opened. Each result is written in one
transaction, so a killed grader leaves no half-stored run; a write that fails for a passing
reason (a locked SQLite file, a dropped connection, a serialization failure) is retried before
it is reported. A grader process claims a submission before it grades it, so that two graders on
one gradebook grade it once. Every string that came from a submission is cleaned (lone
surrogates, NUL bytes) and capped before it reaches the database.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    URL,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    make_url,
    select,
    update,
)
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, load_only, mapped_column, relationship

from grader.model.errors import GradebookError
from grader.model.outcomes import Attachment, CheckOutcome
from grader.model.result import GRADER_FAULTS, Override, Result, attach_overrides
from grader.store import migrations

T = TypeVar("T")


class Base(DeclarativeBase):
    pass


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
    student: Mapped[Student] = relationship()
    runs: Mapped[list[Run]] = relationship(back_populates="submission", order_by="Run.id")


class Run(Base):
    __tablename__ = "grading_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), index=True)
    checks_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(30))
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
    # the late penalty (grader/late.py): score is raw_score less late_penalty; NULL raw_score
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
    """A reviewer's change to a grade (grader/review.py): who, when, why, on which notebook.
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


def _url(target: str | Path) -> URL:
    """TARGET as a SQLAlchemy URL: a path is a SQLite file; postgresql:// uses psycopg 3."""
    text = str(target)
    url = make_url(text if "://" in text else f"sqlite:///{Path(text).resolve()}")
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


# pip packages of the SQLAlchemy drivers a gradebook URL may name, by the module that is missing.
DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary", "psycopg": "'psycopg[binary]' (the grader's postgres extra)",
                   "asyncpg": "asyncpg", "pymysql": "pymysql", "MySQLdb": "mysqlclient", "pg8000": "pg8000"}


class Gradebook:
    """An open gradebook, its schema at the newest revision (grader/migrations)."""

    def __init__(self, target: str | Path, *, attempts: int = 3):
        self.attempts = attempts
        self.owner = f"{socket.gethostname()}:{os.getpid()}"  # who holds this process's claims
        try:
            url = _url(target)
        except ArgumentError:
            raise GradebookError(f"cannot open the gradebook {target}: it is neither a file nor a "
                                 "database URL (postgresql://USER:PASSWORD@HOST/DATABASE)") from None
        where = url.render_as_string() if "://" in str(target) else str(target)  # no password
        if url.drivername.startswith("sqlite") and url.database:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine = create_engine(url, pool_pre_ping=not url.drivername.startswith("sqlite"))
            if url.drivername.startswith("sqlite"):
                event.listen(self.engine, "connect", _sqlite_pragmas)
            self._open(where)
        except ModuleNotFoundError as exc:  # the URL's database driver is not installed
            package = DRIVER_PACKAGES.get((exc.name or "").partition(".")[0], exc.name)
            raise GradebookError(f"cannot open the gradebook {where}: its database driver"
                                 f" {exc.name} is not installed; run `pip install {package}`") from None

    def _open(self, where: str) -> None:
        """Connect and migrate, trying again where that fails for a passing reason; one
        GradebookError that says what to check where it cannot be done."""
        for attempt in range(1, self.attempts + 1):
            try:
                return self._migrate()
            except (OperationalError, DBAPIError) as exc:
                if attempt < self.attempts and _passing(exc):
                    time.sleep(0.2 * 2 ** attempt)
                    continue
                hint = "" if self.engine.dialect.name == "sqlite" else (
                    "; check that the database server runs and that the URL's host, port, user,"
                    " password and database are right")
                raise GradebookError(f"cannot open the gradebook {where}: {_first_line(exc)}{hint}") from None
            except SQLAlchemyError as exc:
                raise GradebookError(f"cannot open the gradebook {where}: {exc.__class__.__name__}: "
                                     f"{_first_line(exc)}") from None
            except GradebookError as exc:
                raise GradebookError(f"cannot open the gradebook {where}: {exc}") from None

    def _migrate(self) -> None:
        """Bring the schema to the newest revision, in one transaction (on SQLite, one that
        holds the write lock from its start: two graders opening a new file wait in turn). A
        gradebook at the newest revision is only read."""
        with self.engine.connect() as connection:
            if migrations.current(connection) == migrations.head():
                return
            connection.rollback()
            if connection.dialect.name == "sqlite":
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            migrations.upgrade(connection)
            connection.commit()

    @property
    def revision(self) -> str | None:
        """The schema revision the gradebook is at."""
        with self.engine.connect() as connection:
            return migrations.current(connection)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    def graded_by(self, student: str, assignment: str, sha256: str, key: str) -> str | None:
        """The grader (version+grading code) whose result of this exact notebook under this
        exact grading key counts (a grader fault is graded again), its latest; None where none
        does."""
        query = (
            select(Run.grader).join(SubmissionRow).join(Student)
            .where(Student.name == _clean(student, 200), SubmissionRow.assignment == assignment,
                   SubmissionRow.notebook_sha256 == sha256, Run.checks_sha256 == key,
                   Run.status.not_in(GRADER_FAULTS))
            .order_by(Run.id.desc()).limit(1)
        )
        with self.session() as session:
            return session.scalar(query)

    def graders(self) -> dict[str, int]:
        """How many students' latest results each grader (version+grading code) gave, over every
        assignment ("": graded before the grader was recorded)."""
        query = select(SubmissionRow.assignment).distinct()
        with self.session() as session:
            assignments = list(session.scalars(query))
        counts: dict[str, int] = {}
        for assignment in assignments:
            for result in self.latest(assignment):
                counts[result.grader] = counts.get(result.grader, 0) + 1
        return counts

    def already_graded(self, student: str, assignment: str, sha256: str, key: str) -> bool:
        """Whether this exact notebook has a result that counts under this grading key."""
        return self.graded_by(student, assignment, sha256, key) is not None

    def mark_seen(self, student: str, assignment: str, sha256: str) -> None:
        """Record that STUDENT's current hand-in is the notebook SHA256 (graded before)."""
        self._retrying(lambda: self._mark_seen(_clean(student, 200), assignment, sha256))

    def _mark_seen(self, student: str, assignment: str, sha256: str) -> None:
        with self.session() as session:
            row = session.scalar(select(SubmissionRow).join(Student).where(
                Student.name == student, SubmissionRow.assignment == assignment,
                SubmissionRow.notebook_sha256 == sha256))
            if row is not None:
                row.seen_at = datetime.now(UTC)

    def claim(self, student: str, assignment: str, sha256: str, key: str, *, lease_s: float) -> bool:
        """Take STUDENT's notebook SHA256 of ASSIGNMENT, to be graded with KEY, for this process:
        True if it is this process's now, False where another grader holds it. A claim left by a
        grader whose process is gone (on this host), or older than its lease of LEASE_S
        seconds, is taken over. The result's store releases it."""
        return self._retrying(lambda: self._claim(_clean(student, 200), assignment, sha256, key, lease_s))

    def _claim(self, student: str, assignment: str, sha256: str, key: str, lease_s: float) -> bool:
        which = (ClaimRow.assignment == assignment, ClaimRow.student == student,
                 ClaimRow.notebook_sha256 == sha256, ClaimRow.grading_key == key)
        for _ in range(3):  # the holder may let go between our insert and our look
            now = datetime.now(UTC)
            mine = {"owner": self.owner, "token": secrets.token_hex(16), "claimed_at": now,
                    "expires_at": now + timedelta(seconds=lease_s)}
            try:
                with self.session() as session:
                    session.add(ClaimRow(assignment=assignment, student=student,
                                         notebook_sha256=sha256, grading_key=key, **mine))
                return True
            except IntegrityError:  # held: by a grader at work, or left over
                pass
            with self.session() as session:
                held = session.scalar(select(ClaimRow).where(*which))
                if held is None:
                    continue
                if not _left_over(held, now):
                    return False
                # of several graders taking it over at once, the one whose update finds the
                # old token wins
                taken = session.connection().execute(
                    update(ClaimRow).where(ClaimRow.id == held.id, ClaimRow.token == held.token)
                    .values(**mine))
                return taken.rowcount == 1
        return False

    def release(self, assignment: str, student: str | None = None) -> None:
        """Let go of this process's claim on STUDENT's submission of ASSIGNMENT (one it will not
        grade after all), or with no STUDENT of every claim it holds on ASSIGNMENT."""
        def write() -> None:
            with self.session() as session:
                session.execute(self._mine(assignment, student))
        self._retrying(write)

    def _mine(self, assignment: str, student: str | None) -> Any:
        """The DELETE of this process's claims on ASSIGNMENT (of STUDENT's submission only)."""
        query = delete(ClaimRow).where(ClaimRow.assignment == assignment, ClaimRow.owner == self.owner)
        return query if student is None else query.where(ClaimRow.student == _clean(student, 200))

    def claims(self, assignment: str) -> dict[str, str]:
        """Who holds a claim on a submission of ASSIGNMENT now: the owner by student."""
        with self.session() as session:
            rows = session.execute(select(ClaimRow.student, ClaimRow.owner)
                                   .where(ClaimRow.assignment == assignment))
            return {student: owner for student, owner in rows}

    def store(self, result: Result) -> int:
        """Record one grading run and its checks in a single transaction, retrying a write that
        fails for a passing reason (a locked database); return the run's id. GradebookError if
        it cannot be stored."""
        clean = _cleaned(result)
        return self._retrying(lambda: self._store(clean))

    def record_phases(self, run_id: int, *, store_s: float, report_s: float) -> None:
        """Add the phases known only once RUN_ID was stored: its write, and its feedback page."""
        def write() -> None:
            with self.session() as session:
                run = session.get(Run, run_id)
                if run is not None:
                    run.store_s, run.report_s = store_s, report_s
        self._retrying(write)

    def amend(self, run_id: int, result: Result) -> None:
        """Bring RUN_ID's outcome (status, reason, score, staff detail, report error) up to
        date with RESULT, which changed after it was stored: its feedback page failed."""
        clean = _cleaned(result)

        def write() -> None:
            with self.session() as session:
                run = session.get(Run, run_id)
                if run is not None:
                    for name in ("status", "reason", "staff_detail", "report_error", *_LATE_FIELDS):
                        setattr(run, name, getattr(clean, name))
        self._retrying(write)

    def _retrying(self, write: Callable[[], T]) -> T:
        """WRITE's value, WRITE tried again (with a pause) where it failed for a passing reason:
        a locked SQLite file, a dropped connection, a serialization failure or deadlock."""
        for attempt in range(1, self.attempts + 1):
            try:
                return write()
            except (OperationalError, DBAPIError) as exc:
                if not _passing(exc):
                    raise GradebookError(f"the gradebook write failed: {exc.__class__.__name__}: "
                                         f"{_first_line(exc)}") from None
                if attempt == self.attempts:
                    raise GradebookError(f"the gradebook write failed {self.attempts} times: "
                                         f"{_first_line(exc)}") from None
                time.sleep(0.2 * 2 ** attempt)
            except SQLAlchemyError as exc:
                raise GradebookError(f"the gradebook write failed: {exc.__class__.__name__}: "
                                     f"{_first_line(exc)}") from None
        raise GradebookError("the gradebook was not written: no attempt was allowed")

    def _store(self, result: Result) -> int:
        with self.session() as session:
            person = session.scalar(select(Student).where(Student.name == result.student))
            if person is None:
                person = Student(name=result.student)
                session.add(person)
                session.flush()
            row = session.scalar(select(SubmissionRow).where(
                SubmissionRow.student_id == person.id,
                SubmissionRow.assignment == result.assignment,
                SubmissionRow.notebook_sha256 == result.sha256))
            if row is None:
                row = SubmissionRow(student_id=person.id, assignment=result.assignment,
                                    notebook_sha256=result.sha256, path=result.notebook,
                                    submitted_at=result.submitted_at)
                session.add(row)
                session.flush()
            row.seen_at = datetime.now(UTC)
            run = Run(submission_id=row.id, **{name: getattr(result, name) for name in _RUN_FIELDS})
            run.checks = [CheckRow(**asdict(c)) for c in result.checks]
            session.add(run)
            session.execute(self._mine(result.assignment, result.student))  # graded: released
            session.flush()
            return run.id

    def latest(self, assignment: str) -> list[Result]:
        """Each student's result for ASSIGNMENT, by student name: the latest run of the hand-in
        last found on disk (a student who hands in an older version again gets its grade)."""
        query = (
            select(Student.name, SubmissionRow, Run)
            .join(SubmissionRow, Run.submission_id == SubmissionRow.id)
            .join(Student, SubmissionRow.student_id == Student.id)
            .where(SubmissionRow.assignment == assignment).order_by(Run.id)
        )
        latest: dict[str, tuple[datetime, int, Result]] = {}
        with self.session() as session:
            for name, submission, run in session.execute(query):
                result = Result(
                    student=name, assignment=assignment, notebook=submission.path,
                    sha256=submission.notebook_sha256, checks=[_outcome(c) for c in run.checks],
                    **{field: getattr(run, field) for field in _RUN_FIELDS},
                )
                _zoned(result, submission)
                result.weights = dict(run.weights or {})  # NULL in rows of older graders
                seen = _utc(submission.seen_at or run.graded_at)
                if name not in latest or (seen, run.id) >= latest[name][:2]:
                    latest[name] = (seen, run.id, result)
            overrides = self._overrides(session, assignment)
        for _, _, result in latest.values():
            attach_overrides(result, overrides.get(result.student, []))
        return [latest[name][2] for name in sorted(latest)]

    def add_override(self, assignment: str, student: str, override: Override) -> None:
        """Record OVERRIDE of STUDENT's grade for ASSIGNMENT (kept with the earlier ones)."""
        o = override

        def write() -> None:
            with self.session() as session:
                session.add(OverrideRow(
                    student=_clean(student, 200), assignment=assignment, kind=o.kind,
                    item=_clean(o.item, 200), points=o.points, was=o.was,
                    comment=_clean(o.comment, 5000), reviewer=_clean(o.reviewer, 200),
                    made_at=_utc(o.made_at).astimezone(UTC), notebook_sha256=o.sha256))
        self._retrying(write)

    def overrides(self, assignment: str, *, history: bool = False) -> dict[str, list[Override]]:
        """Each student's overrides of ASSIGNMENT: the latest of each item, or with HISTORY
        every one, oldest first."""
        def read() -> dict[str, list[Override]]:
            with self.session() as session:
                return self._overrides(session, assignment, history=history)
        return self._retrying(read)

    @staticmethod
    def _overrides(session: Session, assignment: str, *, history: bool = False) -> dict[str, list[Override]]:
        rows = session.scalars(select(OverrideRow).where(OverrideRow.assignment == assignment)
                               .order_by(OverrideRow.id))
        found: dict[str, dict[tuple[str, str] | int, Override]] = {}
        for row in rows:
            override = Override(kind=row.kind, item=row.item, points=row.points, was=row.was,
                                comment=row.comment, reviewer=row.reviewer,
                                made_at=_utc(row.made_at), sha256=row.notebook_sha256)
            items = found.setdefault(row.student, {})
            key = row.id if history else (row.kind, row.item)
            items.pop(key, None)  # the latest of an item goes last
            items[key] = override
        return {student: list(items.values()) for student, items in found.items()}

    def restate_late(self, assignment: str, apply: Callable[[Result], bool]) -> list[str]:
        """Work out the late penalty of every stored run of ASSIGNMENT again, with the staff's
        overrides: APPLY sets a result's score and late fields from its raw score and says
        whether they changed; the runs that changed are stored in one transaction. The
        students whose runs changed."""
        query = (
            select(Student.name, SubmissionRow, Run)
            .join(SubmissionRow, Run.submission_id == SubmissionRow.id)
            .join(Student, SubmissionRow.student_id == Student.id)
            .where(SubmissionRow.assignment == assignment)
            .options(load_only(*(getattr(Run, name) for name in ("id", "submission_id", *_SCORE_FIELDS))))
        )

        def write() -> list[str]:
            changed: set[str] = set()
            with self.session() as session:
                overrides = self._overrides(session, assignment)
                for name, submission, run in session.execute(query):
                    result = Result(
                        student=name, assignment=assignment, notebook=submission.path,
                        sha256=submission.notebook_sha256, reason="",
                        checks=[_outcome(c) for c in run.checks] if name in overrides else [],
                        **{field: getattr(run, field) for field in _SCORE_FIELDS})
                    _zoned(result, submission)
                    attach_overrides(result, overrides.get(name, []))
                    if apply(result):
                        clean = _cleaned(result)
                        for field in _LATE_FIELDS:
                            setattr(run, field, getattr(clean, field))
                        changed.add(name)
            return sorted(changed)
        return self._retrying(write)

    def count_runs(self, assignment: str) -> dict[str, int]:
        """How many runs each student has for ASSIGNMENT."""
        query = (
            select(Student.name, Run.id).join(SubmissionRow, Run.submission_id == SubmissionRow.id)
            .join(Student, SubmissionRow.student_id == Student.id)
            .where(SubmissionRow.assignment == assignment)
        )
        counts: dict[str, int] = {}
        with self.session() as session:
            for name, _ in session.execute(query):
                counts[name] = counts.get(name, 0) + 1
        return counts


_RUN_FIELDS = (
    "checks_sha256", "status", "reason", "score", "max_score", "device", "sandboxed", "grader",
    "queue_s", "kernel_start_s", "warmup_s", "execution_s", "checks_s", "store_s", "report_s",
    "graded_at", "failed_cell",
    "executed_notebook", "staff_detail", "report_error", "weights",
    "raw_score", "late_penalty", "late_seconds", "due_at", "late_note",
)
# What the late penalty is worked out from, and what it sets (grader/late.py).
_LATE_FIELDS = ("score", "raw_score", "late_penalty", "late_seconds", "due_at", "late_note")
_SCORE_FIELDS = ("checks_sha256", "status", "max_score", "graded_at", *_LATE_FIELDS)


def _zoned(result: Result, submission: SubmissionRow) -> None:
    """Give RESULT its hand-in time, and every stored time its zone back (SQLite keeps none)."""
    result.submitted_at = None if submission.submitted_at is None else _utc(submission.submitted_at)
    result.graded_at = _utc(result.graded_at)
    result.due_at = None if result.due_at is None else _utc(result.due_at)


def _utc(stamp: datetime) -> datetime:
    """SQLite keeps no zone; we always write UTC."""
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp


def _as_utc(stamp: datetime | None) -> datetime | None:
    """STAMP in UTC, to store: SQLite would keep a +01:00 time's wall clock and drop its zone."""
    return None if stamp is None else _utc(stamp).astimezone(UTC)


def _clean(text: str, cap: int) -> str:
    """TEXT as the database can store it: lone surrogates and NUL bytes replaced, at most CAP
    characters."""
    text = text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    return text if len(text) <= cap else text[: cap - 1] + "…"


def _clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return _clean(value, 100_000)
    if isinstance(value, dict):
        return {_clean(str(k), 200): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_json(v) for v in value]
    return value


def _cleaned(result: Result) -> Result:
    """A copy of RESULT with every string fit to store (student-derived text may hold anything)."""
    checks = [replace(c, name=_clean(c.name, 200), description=_clean(c.description, 2000),
                      message=_clean(c.message, 5000), detail=_clean(c.detail, 20_000),
                      attachments=[replace(a, title=_clean(a.title, 500),
                                           content=_clean(a.content, 5_000_000))
                                   for a in c.attachments])
              for c in result.checks]
    return replace(
        result, student=_clean(result.student, 200), notebook=_clean(result.notebook, 4000),
        reason=_clean(result.reason, 5000), staff_detail=_clean(result.staff_detail, 50_000),
        report_error=_clean(result.report_error, 5000), device=_clean(result.device, 200),
        failed_cell=_clean_json(result.failed_cell), checks=checks,
        late_note=_clean(result.late_note, 1000), submitted_at=_as_utc(result.submitted_at),
        due_at=_as_utc(result.due_at), graded_at=_utc(result.graded_at).astimezone(UTC),
        weights=_clean_json(result.weights),
        executed_notebook=None if result.executed_notebook is None
        else _clean(result.executed_notebook, 200_000_000),
    )


def _left_over(claim: ClaimRow, now: datetime) -> bool:
    """Whether CLAIM was left by a grader that is gone: its lease ran out, or its owner was a
    process of this host that no longer runs."""
    if _utc(claim.expires_at) <= now:
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


def _passing(exc: DBAPIError) -> bool:
    """Whether EXC may not happen again: SQLite's locked file and PostgreSQL's serialization
    failures, deadlocks and lost connections are OperationalErrors; a dropped connection may
    also show as another DBAPI error, with the connection invalidated."""
    return isinstance(exc, OperationalError) or exc.connection_invalidated


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else exc.__class__.__name__)[:300]


def _outcome(row: CheckRow) -> CheckOutcome:
    return CheckOutcome(
        name=row.name, description=row.description, public=row.public,
        max_points=row.max_points, points=row.points, outcome=row.outcome, message=row.message,
        attachments=[Attachment(**a) for a in row.attachments or []], fault=row.fault or "",
        detail=row.detail or "",
    )


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
