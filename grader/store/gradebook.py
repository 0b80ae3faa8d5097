"""The gradebook: students, submissions, grading runs and check results, in SQL.

SQLite by default; PostgreSQL (`postgresql://...`, with the `postgres` extra) where several
graders or machines write at once. Only this module speaks SQL; the schema is made and upgraded
by the migrations in grader/store/migrations when a gradebook is opened. Each result is written in one
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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    URL,
    create_engine,
    delete,
    event,
    make_url,
    select,
    update,
)
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, load_only

from grader.model.errors import GradebookError
from grader.model.result import GRADER_FAULTS, Override, Result, attach_overrides, clean
from grader.store import migrations
from grader.store.tables import (
    LATE_FIELDS,
    RUN_FIELDS,
    SCORE_FIELDS,
    CheckRow,
    ClaimRow,
    OverrideRow,
    Run,
    Student,
    SubmissionRow,
    left_over,
    outcome,
    stored_form,
    utc,
    zoned,
)

T = TypeVar("T")


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
    """An open gradebook, its schema at the newest revision (grader/store/migrations)."""

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
            .where(Student.name == clean(student, 200), SubmissionRow.assignment == assignment,
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

    def mark_seen(self, student: str, assignment: str, sha256: str, key: str) -> None:
        """Record that STUDENT's current hand-in is the notebook SHA256 (graded before), found
        under the grading KEY: its result is its run under KEY (see `latest`)."""
        self._retrying(lambda: self._mark_seen(clean(student, 200), assignment, sha256, key))

    def _mark_seen(self, student: str, assignment: str, sha256: str, key: str) -> None:
        with self.session() as session:
            row = session.scalar(select(SubmissionRow).join(Student).where(
                Student.name == student, SubmissionRow.assignment == assignment,
                SubmissionRow.notebook_sha256 == sha256))
            if row is not None:
                row.seen_at, row.seen_key = datetime.now(UTC), key

    def claim(self, student: str, assignment: str, sha256: str, key: str, *, lease_s: float) -> bool:
        """Take STUDENT's notebook SHA256 of ASSIGNMENT, to be graded with KEY, for this process:
        True if it is this process's now, False where another grader holds it. A claim left by a
        grader whose process is gone (on this host), or older than its lease of LEASE_S
        seconds, is taken over. The result's store releases it."""
        return self._retrying(lambda: self._claim(clean(student, 200), assignment, sha256, key, lease_s))

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
                if not left_over(held, now):
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
        return query if student is None else query.where(ClaimRow.student == clean(student, 200))

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
        fit = stored_form(result)
        return self._retrying(lambda: self._store(fit))

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
        fit = stored_form(result)

        def write() -> None:
            with self.session() as session:
                run = session.get(Run, run_id)
                if run is not None:
                    for name in ("status", "reason", "staff_detail", "report_error", *LATE_FIELDS):
                        setattr(run, name, getattr(fit, name))
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
            row.seen_at, row.seen_key = datetime.now(UTC), result.checks_sha256
            run = Run(submission_id=row.id, **{name: getattr(result, name) for name in RUN_FIELDS})
            run.checks = [CheckRow(**asdict(c)) for c in result.checks]
            session.add(run)
            session.execute(self._mine(result.assignment, result.student))  # graded: released
            session.flush()
            return run.id

    def latest(self, assignment: str) -> list[Result]:
        """Each student's result for ASSIGNMENT, by student name: that of the hand-in last found
        on disk (a student who hands in an older version again gets its grade), under the
        grading key it was last graded or found with; of its runs under that key, the latest
        that is not a grader fault, else the latest fault. So a check that was broken and is
        put back as it was shows the grade given under it again, never the fault between."""
        query = (
            select(Student.name, SubmissionRow, Run)
            .join(SubmissionRow, Run.submission_id == SubmissionRow.id)
            .join(Student, SubmissionRow.student_id == Student.id)
            .where(SubmissionRow.assignment == assignment).order_by(Run.id)
        )
        runs: dict[str, dict[int, tuple[SubmissionRow, list[Run]]]] = {}
        with self.session() as session:
            for name, submission, run in session.execute(query):
                runs.setdefault(name, {}).setdefault(submission.id, (submission, []))[1].append(run)
            results = [self._result(name, assignment, *_current(found.values()))
                       for name, found in sorted(runs.items())]
            overrides = self._overrides(session, assignment)
        for result in results:
            attach_overrides(result, overrides.get(result.student, []))
        return results

    @staticmethod
    def _result(name: str, assignment: str, submission: SubmissionRow, run: Run) -> Result:
        """The stored RUN of SUBMISSION as a Result again."""
        result = Result(
            student=name, assignment=assignment, notebook=submission.path,
            sha256=submission.notebook_sha256, checks=[outcome(c) for c in run.checks],
            **{field: getattr(run, field) for field in RUN_FIELDS},
        )
        zoned(result, submission)
        result.weights = dict(run.weights or {})  # NULL in rows of older graders
        return result

    def add_override(self, assignment: str, student: str, override: Override) -> None:
        """Record OVERRIDE of STUDENT's grade for ASSIGNMENT (kept with the earlier ones)."""
        o = override

        def write() -> None:
            with self.session() as session:
                session.add(OverrideRow(
                    student=clean(student, 200), assignment=assignment, kind=o.kind,
                    item=clean(o.item, 200), points=o.points, was=o.was,
                    comment=clean(o.comment, 5000), reviewer=clean(o.reviewer, 200),
                    made_at=utc(o.made_at).astimezone(UTC), notebook_sha256=o.sha256))
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
                                made_at=utc(row.made_at), sha256=row.notebook_sha256)
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
            .options(load_only(*(getattr(Run, name) for name in ("id", "submission_id", *SCORE_FIELDS))))
        )

        def write() -> list[str]:
            changed: set[str] = set()
            with self.session() as session:
                overrides = self._overrides(session, assignment)
                for name, submission, run in session.execute(query):
                    result = Result(
                        student=name, assignment=assignment, notebook=submission.path,
                        sha256=submission.notebook_sha256, reason="",
                        checks=[outcome(c) for c in run.checks] if name in overrides else [],
                        **{field: getattr(run, field) for field in SCORE_FIELDS})
                    zoned(result, submission)
                    attach_overrides(result, overrides.get(name, []))
                    if apply(result):
                        fit = stored_form(result)
                        for field in LATE_FIELDS:
                            setattr(run, field, getattr(fit, field))
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


def _current(submissions: Iterable[tuple[SubmissionRow, list[Run]]]) -> tuple[SubmissionRow, Run]:
    """Of a student's SUBMISSIONS (each with its runs, oldest first), the hand-in last found on
    disk and its run that counts: under the key it was last found with (older rows: its latest
    run's), the latest run that is not a grader fault, else the latest."""
    submission, found = max(submissions, key=lambda s: (utc(s[0].seen_at or s[1][-1].graded_at),
                                                         s[1][-1].id))
    key = submission.seen_key or found[-1].checks_sha256
    under_key = [run for run in found if run.checks_sha256 == key] or found
    counted = [run for run in under_key if run.status not in GRADER_FAULTS]
    return submission, (counted or under_key)[-1]


def _passing(exc: DBAPIError) -> bool:
    """Whether EXC may not happen again: SQLite's locked file and PostgreSQL's serialization
    failures, deadlocks and lost connections are OperationalErrors; a dropped connection may
    also show as another DBAPI error, with the connection invalidated."""
    return isinstance(exc, OperationalError) or exc.connection_invalidated


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else exc.__class__.__name__)[:300]


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
