"""The gradebook's schema at revision 1: as the last grader before migrations made it, frozen.

The models in grader/store/tables.py change with later revisions; these tables never do. Revision
1 creates them, and a gradebook of a release before migrations is brought to them (the tables
and columns it lacks added) before it is stamped at revision 1.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    text,
)

metadata = MetaData()


def _required(name: str, *kind: Any, **options: Any) -> Column[Any]:
    """A NOT NULL column (what a Mapped[...] without None made)."""
    return Column(name, *kind, nullable=False, **options)


Table(
    "students", metadata,
    Column("id", Integer, primary_key=True),
    _required("name", String(200), unique=True),
)
Table(
    "submissions", metadata,
    Column("id", Integer, primary_key=True),
    _required("student_id", Integer, ForeignKey("students.id")),
    _required("assignment", String(100), index=True),
    _required("notebook_sha256", String(64)),
    _required("path", Text),
    Column("submitted_at", DateTime(timezone=True)),
    Column("seen_at", DateTime(timezone=True)),
    UniqueConstraint("student_id", "assignment", "notebook_sha256"),
)
Table(
    "grading_runs", metadata,
    Column("id", Integer, primary_key=True),
    _required("submission_id", Integer, ForeignKey("submissions.id"), index=True),
    _required("checks_sha256", String(64)),
    _required("status", String(30)),
    _required("reason", Text),
    _required("score", Float),
    _required("max_score", Float),
    _required("device", String(200)),
    _required("sandboxed", Boolean),
    *(_required(phase, Float, default=0.0) for phase in (
        "queue_s", "kernel_start_s", "warmup_s", "execution_s", "checks_s", "store_s", "report_s")),
    _required("graded_at", DateTime(timezone=True)),
    Column("failed_cell", JSON),
    Column("executed_notebook", Text),
    Column("weights", JSON),
    _required("staff_detail", Text),
    _required("report_error", Text),
    Column("raw_score", Float),
    _required("late_penalty", Float, default=0.0),
    _required("late_seconds", Float, default=0.0),
    Column("due_at", DateTime(timezone=True)),
    _required("late_note", Text),
)
Table(
    "check_results", metadata,
    Column("id", Integer, primary_key=True),
    _required("run_id", Integer, ForeignKey("grading_runs.id"), index=True),
    _required("name", String(200)),
    _required("description", Text),
    _required("public", Boolean),
    _required("points", Float),
    _required("max_points", Float),
    _required("outcome", String(20)),
    _required("message", Text),
    _required("attachments", JSON),
    _required("fault", String(20)),
    _required("detail", Text),
)
Table(
    "overrides", metadata,
    Column("id", Integer, primary_key=True),
    _required("student", String(200), index=True),
    _required("assignment", String(100), index=True),
    _required("kind", String(20)),
    _required("item", String(200)),
    _required("points", Float),
    Column("was", Float),
    _required("comment", Text),
    _required("reviewer", String(200)),
    _required("made_at", DateTime(timezone=True)),
    _required("notebook_sha256", String(64)),
)


def complete(connection: Connection) -> None:
    """Bring a gradebook of a release before migrations to revision 1: add the tables and the
    columns its release did not have yet (old rows read '' for new text, 0.0 for new phases)."""
    metadata.create_all(connection)
    inspector = inspect(connection)
    for table in metadata.sorted_tables:
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have:
                connection.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" '
                                        + _definition(column, connection)))


def _definition(column: Column[Any], connection: Connection) -> str:
    """COLUMN's type, and for one that holds no NULL the default its old rows take."""
    kind = column.type.compile(connection.dialect)
    value = getattr(column.default, "arg", None)
    if isinstance(column.type, String | Text):
        value = ""
    if column.nullable or not isinstance(value, str | float):
        return kind
    return f"{kind} NOT NULL DEFAULT {value!r}"
