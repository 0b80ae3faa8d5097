"""Release of feedback (`grader feedback`): each student's own pages in a zip for the LMS.

Each student's feedback page and executed-notebook page go under a folder of their own: with a
roster, Moodle's `Full Name_PARTICIPANTID_assignsubmission_file_/` (the names of Moodle's own
"download all submissions", which its "upload multiple feedback files in a zip" reads back:
the participant id is the roster's `lms_id`); else `STUDENT/`, the student id's slug, as in the
pages' names. Nothing else of the reports
folder goes in: never the staff summary, the similar/ pair pages, or another student's page.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from grader.course.roster import RosterEntry
from grader.model.result import GRADER_FAULT, Result
from grader.model.submission import slug
from grader.reports.pages import feedback_name, notebook_name

MOODLE_SUFFIX = "_assignsubmission_file_"


@dataclass
class Handback:
    """What goes into the zip, and who is left out and why."""

    members: dict[str, Path] = field(default_factory=dict)  # member name -> page on disk
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (student, why)


def folder_name(student: str, entry: RosterEntry | None) -> str:
    """The student's folder in the zip: Moodle's submission folder name where the roster gives
    a full name and a participant id, else the student id's slug (an id such as
    `x\\..\\..\\evil` is never a path in the zip)."""
    if entry is None or not entry.name or not entry.lms_id.isdigit():
        return slug(student)
    # Moodle splits the path on "_" (name, participant id, plugin, ...): none in the name
    name = re.sub(r"[_/\\\x00-\x1f]+", " ", entry.name).strip() or "Participant"
    return f"{name}_{entry.lms_id}{MOODLE_SUFFIX}"


def pages_of(results: list[Result], reports: Path,
             roster: list[RosterEntry] | None = None) -> Handback:
    """The pages of each student of RESULTS under REPORTS, by member name in the zip. A grader
    fault (not graded yet) and a student whose page is missing are left out, with why; with a
    ROSTER, so is a student not on it."""
    by_student = {e.student: e for e in roster or []}
    handback = Handback()
    for result in sorted(results, key=lambda r: r.student):
        entry = by_student.get(result.student)
        if result.status == GRADER_FAULT:
            handback.left_out.append((result.student, "not graded yet (a grader fault): run "
                                                      "`grader run` again first"))
            continue
        if roster is not None and entry is None:
            handback.left_out.append((result.student, "not on the roster"))
            continue
        page = reports / feedback_name(result.student)
        if not page.is_file():
            handback.left_out.append((result.student, f"no feedback page at {page}"))
            continue
        folder = folder_name(result.student, entry)
        handback.members[f"{folder}/{page.name}"] = page
        notebook = reports / notebook_name(result.student)
        if notebook.is_file():
            handback.members[f"{folder}/{notebook.name}"] = notebook
    return handback


def write_zip(handback: Handback, output: Path) -> None:
    """Write the members of HANDBACK into the zip OUTPUT (replaced whole, never half-written)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, path in sorted(handback.members.items()):
            archive.write(path, member)
    partial.replace(output)
