"""Each student's latest grade as CSV or JSON, or as the grade file an LMS imports; every CSV
cell is safe to open in a spreadsheet.

`moodle` is the assignment's offline grading worksheet (Moodle: the assignment's "View all
submissions" > "Upload grading worksheet", with the "Offline grading worksheet" feedback type on):
rows found by `Identifier` ("Participant N", N being the participant id of the roster's
`lms_id`), the grade in `Grade`, and `Last modified (grade)` set to the export's time, so that
Moodle takes it over an older grade. `canvas` is Canvas' gradebook import (Grades > Import):
`Student, ID, SIS User ID, SIS Login ID, Section`, one column named for the assignment and a
`Points Possible` row, as Canvas exports it. Both give the final score (raw, with the staff's
overrides, less the late penalty); a grader fault has an empty grade, never a zero.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from grader.course.roster import RosterEntry
from grader.model.errors import GraderError
from grader.model.result import Override, Result, override_points

COLUMNS = ("student", "score", "raw_score", "late_penalty", "max_score", "status", "reason",
           "submitted_at", "due_at", "late_seconds", "late_note", "graded_at", "sha256", "device",
           "override_points", "overrides", "needs_review")
FORMATS = ("csv", "json", "moodle", "canvas")
LMS_FORMATS = ("moodle", "canvas")
# Moodle's grading worksheet (mod/assign, English strings), in the order Moodle writes it.
MOODLE_COLUMNS = ("Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
                  "Grade can be changed", "Last modified (submission)", "Last modified (grade)",
                  "Feedback comments")
MOODLE_PARTICIPANT = "Participant "  # Moodle's 'hiddenuser' string, before the participant id
CANVAS_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
CANVAS_POINTS_ROW = "    Points Possible"  # Canvas' second row, spaces included
# A spreadsheet reads a cell starting with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def rows(results: list[Result]) -> list[dict[str, Any]]:
    """One row per result; a grader fault has no score (None), not zero."""
    return [
        {"student": r.student, "score": r.score if r.counted else None,
         "raw_score": r.raw if r.counted else None,
         "late_penalty": r.late_penalty if r.counted else None,
         "max_score": r.max_score, "status": r.status, "reason": r.reason,
         "submitted_at": _iso(r.submitted_at), "due_at": _iso(r.due_at),
         "late_seconds": round(r.late_seconds), "late_note": r.late_note,
         "graded_at": r.graded_at.isoformat(), "sha256": r.sha256, "device": r.device,
         "override_points": override_points(r) if r.counted else None,
         "overrides": "; ".join(describe_override(o) for o in r.overrides if not o.needs_review),
         "needs_review": "; ".join(describe_override(o) for o in r.overrides if o.needs_review)}
        for r in results
    ]


def neutralise(value: Any) -> Any:
    """VALUE, with a quote before text that a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return f"'{value}"
    return value


def render(results: list[Result], fmt: str, *, roster: list[RosterEntry] | None = None,
           column: str = "", exported_at: datetime | None = None) -> str:
    """RESULTS as CSV (cells neutralised, no score for grader faults), JSON, or the LMS file of
    FMT for the students of ROSTER (COLUMN: Canvas' assignment column; EXPORTED_AT: Moodle's
    'Last modified (grade)', by default now)."""
    if fmt == "json":
        return json.dumps(rows(results), indent=2, ensure_ascii=False) + "\n"
    if fmt == "csv":
        return _csv(COLUMNS, ([row[c] for c in COLUMNS] for row in rows(results)))
    if roster is None:
        raise GraderError(f"--format {fmt} needs --roster ROSTER.csv: the LMS finds each student"
                          " by the roster's ids")
    on_roster = _on_roster(results, roster)
    if fmt == "moodle":
        return moodle(on_roster, exported_at or datetime.now(UTC))
    if fmt == "canvas":
        return canvas(on_roster, column)
    raise GraderError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")


def not_on_roster(results: list[Result], roster: list[RosterEntry]) -> list[str]:
    """The students of RESULTS whom ROSTER lacks (an LMS file cannot name them)."""
    known = {e.student for e in roster}
    return [r.student for r in results if r.student not in known]


def moodle(graded: list[tuple[RosterEntry, Result]], exported_at: datetime) -> str:
    """Moodle's offline grading worksheet for GRADED (roster entry, result) pairs."""
    missing = [entry.student for entry, _ in graded if not entry.lms_id.strip()]
    if missing:
        raise GraderError(f"the roster has no lms_id (Moodle's participant id) for {missing[0]}"
                          f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}: Moodle's"
                          " worksheet finds students by it ('Participant N')")
    table = (
        [f"{MOODLE_PARTICIPANT}{entry.lms_id.strip()}", entry.name, entry.email,
         "Submitted for grading", _points(r.score) if r.counted else "", _points(r.max_score),
         "Yes", _moodle_time(r.submitted_at), _moodle_time(exported_at), comment(r)]
        for entry, r in graded
    )
    return _csv(MOODLE_COLUMNS, table)


def canvas(graded: list[tuple[RosterEntry, Result]], column: str) -> str:
    """Canvas' gradebook import for GRADED (roster entry, result) pairs, with the assignment
    column COLUMN ("Title (id)" names an existing Canvas assignment)."""
    if not column.strip():
        raise GraderError("--format canvas needs the assignment's column, as Canvas' gradebook"
                          " export names it: --column 'Assignment 01 (12345)'")
    missing = [e.student for e, _ in graded if not (e.lms_id or e.sis_id or e.login).strip()]
    if missing:
        raise GraderError(f"the roster has no lms_id, sis_id or login for {missing[0]}: Canvas"
                          " finds students by one of them")
    max_score = max((r.max_score for _, r in graded), default=0.0)
    table = [[CANVAS_POINTS_ROW, "", "", "", "", _points(max_score)]]
    table += ([entry.name, entry.lms_id, entry.sis_id, entry.login, entry.section,
               _points(r.score) if r.counted else ""] for entry, r in graded)
    return _csv((*CANVAS_COLUMNS, column.strip()), table)


def comment(result: Result) -> str:
    """The grade in words for an LMS comment: the checks' points, the late penalty, the grade."""
    if not result.counted:
        return "not graded yet: the grader had a problem; the course staff will regrade it"
    text = f"{_points(result.score)}/{_points(result.max_score)} points"
    if result.late_penalty:
        text += (f" ({_points(result.raw)} from the checks, less {_points(result.late_penalty)}"
                 f" for lateness: {result.late_note})")
    applied = [describe_override(o) for o in result.overrides if not o.needs_review]
    if applied:
        text += f"; reviewed by the course staff: {'; '.join(applied)}"
    return text


def describe_override(o: Override) -> str:
    """An override in words: what changed, by whom, when and why."""
    if o.kind == "check":
        what = f"check {o.item}: {_points(o.was) if o.was is not None else '?'} -> {_points(o.points)} points"
    else:
        what = f"written answer {o.item}: {_points(o.points)} points"
    why = f": {o.comment}" if o.comment else ""
    return f"{what} by {o.reviewer} on {o.made_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC{why}"


def _on_roster(results: list[Result], roster: list[RosterEntry]) -> list[tuple[RosterEntry, Result]]:
    """Each result with its roster entry, in roster order; students off the roster are left out."""
    by_student = {r.student: r for r in results}
    return [(e, by_student[e.student]) for e in roster if e.student in by_student]


def _csv(header: Iterable[str], table: Iterable[Iterable[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([neutralise("" if v is None else v) for v in row] for row in table)
    return buffer.getvalue()


def _points(value: float) -> str:
    return f"{value:g}"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _moodle_time(moment: datetime | None) -> str:
    """MOMENT as PHP's strtotime reads it (ISO-8601 with offset), '' without one."""
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
