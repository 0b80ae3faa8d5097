"""The class roster: who the students are, by the id the grader keeps and by their LMS names.

A roster is a CSV file with a header. `student` (the id the grader keeps: the file name of a
hand-in, DIR/STUDENT.ipynb) is required; the other columns are optional and what LMS intake and
LMS exports use: `name` (full name as the LMS shows it), `email`, `lms_id` (the LMS' numeric user
id: Moodle's participant id, Canvas' user id), `sis_id`, `login` (Moodle username, Canvas login)
and `section`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from grader.model.errors import GraderError
from grader.model.submission import student_id

COLUMNS = ("student", "name", "email", "lms_id", "sis_id", "login", "section")


@dataclass(frozen=True)
class RosterEntry:
    """One student of the roster."""

    student: str
    name: str = ""
    email: str = ""
    lms_id: str = ""
    sis_id: str = ""
    login: str = ""
    section: str = ""


def read_roster(path: Path) -> list[RosterEntry]:
    """The roster at PATH, in file order; GraderError (one line) when it cannot be used."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise GraderError(f"roster {path} does not exist: pass a CSV with a 'student' column") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GraderError(f"roster {path} cannot be read ({exc}): save it as UTF-8 CSV") from None
    reader = csv.DictReader(text.splitlines())
    header = [(h or "").strip().lower() for h in reader.fieldnames or []]
    if "student" not in header:
        raise GraderError(f"roster {path} has no 'student' column (found: {', '.join(header) or 'none'}):"
                          f" its header must name the columns, of {', '.join(COLUMNS)}")
    entries: list[RosterEntry] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(reader, start=2):
        values = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if k}
        if not values.get("student"):
            raise GraderError(f"roster {path}, line {line}: the student id is empty")
        student = student_id(values["student"])
        if student in seen:
            raise GraderError(f"roster {path}, line {line}: student {student!r} is already on line"
                              f" {seen[student]}")
        seen[student] = line
        entries.append(RosterEntry(student, *(values.get(c, "") for c in COLUMNS[1:])))
    return entries
