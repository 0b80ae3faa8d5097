"""Deadlines and late penalties (grader/late.py), without a kernel: results are built directly."""

import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from grader.model.assignments import load_assignment
from grader.model.config import load_config
from grader.model.errors import AssignmentError
from grader.model.late import LatePolicy, apply_late, lateness, load_policy, read_extensions, restate
from grader.model.result import Result
from grader.reports.pages import write_feedback, write_summary
from grader.store.gradebook import Gradebook
from tests.conftest import before_migrations

REPO = Path(__file__).resolve().parents[2]
DUE = datetime.fromisoformat("2026-03-01T23:59:00+01:00")
BASE = 'title = "T"\nnotebook = "t.ipynb"\npoints = 10\n'


def policy(tmp_path: Path, table: str, extensions: str = "") -> LatePolicy:
    """The policy of an assignment.toml whose [deadline] table is TABLE."""
    (tmp_path / "assignment.toml").write_text(f"{BASE}\n[deadline]\n{table}\n", encoding="utf-8")
    deadline = load_config(tmp_path / "assignment.toml").deadline
    assert deadline is not None
    found = {}
    if extensions:
        (tmp_path / "ext.csv").write_text(extensions, encoding="utf-8")
        found = read_extensions(tmp_path / "ext.csv", deadline)
    return LatePolicy(deadline, found)


def result(student: str = "ann", score: float = 8.0, submitted_at: datetime | None = DUE,
           status: str = "graded", sha: str = "s1") -> Result:
    return Result(student=student, assignment="late", notebook=f"/s/{student}.ipynb", sha256=sha,
                  checks_sha256="k", status=status, reason="", score=score, max_score=10,
                  submitted_at=submitted_at)


def test_each_started_day_costs_the_rate_of_the_maximum_points(tmp_path):
    rule = policy(tmp_path, 'due = "2026-03-01T23:59:00+01:00"\nrate = 0.1\ncap = 0.5')
    on_time, one_second, a_day_and_more = (result(submitted_at=DUE + timedelta(seconds=s))
                                           for s in (0, 1, 86_401))
    for r in (on_time, one_second, a_day_and_more):
        apply_late(r, rule)
    assert (on_time.score, on_time.late_penalty, on_time.late_seconds) == (8.0, 0.0, 0.0)
    assert (one_second.raw, one_second.late_penalty, one_second.score) == (8.0, 1.0, 7.0)
    assert (a_day_and_more.late_penalty, a_day_and_more.score) == (2.0, 6.0)
    assert a_day_and_more.late_seconds == 86_401
    assert "2 started days x 10% = 20% of the points" in a_day_and_more.late_note


def test_per_hour_counts_started_hours_and_a_time_in_another_zone_is_the_same_moment(tmp_path):
    rule = policy(tmp_path, 'due = 2026-03-01T23:59:00+01:00\npenalty = "per_hour"\nrate = 0.05')
    r = result(submitted_at=datetime(2026, 3, 2, 0, 29, tzinfo=UTC))  # 01:29 +01:00: 90 min late
    apply_late(r, rule)
    assert (r.late_seconds, r.late_penalty, r.score) == (5400.0, 1.0, 7.0)
    assert "2 started hours x 5%" in r.late_note


def test_the_cap_bounds_the_penalty_and_no_score_goes_below_zero(tmp_path):
    rule = policy(tmp_path, 'due = "2026-03-01T23:59:00+01:00"\nrate = 0.1\ncap = 0.5')
    good, poor = result(score=9), result(score=3)
    for r in (good, poor):
        r.submitted_at = DUE + timedelta(days=9, hours=1)
        apply_late(r, rule)
    assert (good.late_penalty, good.score) == (5.0, 4.0)
    assert "capped at 50%" in good.late_note
    assert (poor.raw, poor.late_penalty, poor.score) == (3.0, 3.0, 0.0)


def test_after_the_cutoff_the_score_is_zero_and_the_raw_score_is_kept(tmp_path):
    rule = policy(tmp_path, 'due = "2026-03-01T23:59:00+01:00"\nrate = 0.1\n'
                            'cutoff = "2026-03-03T23:59:00+01:00"')
    before, after = result(), result()
    before.submitted_at = DUE + timedelta(days=2)
    after.submitted_at = DUE + timedelta(days=2, seconds=1)
    apply_late(before, rule)
    apply_late(after, rule)
    assert before.score == 6.0
    assert (after.raw, after.late_penalty, after.score) == (8.0, 8.0, 0.0)
    assert "after the cutoff 2026-03-03 23:59 +0100" in after.late_note


def test_an_extension_moves_the_due_date_and_the_cutoff_of_that_student_only(tmp_path):
    rule = policy(tmp_path, 'due = "2026-03-01T23:59:00+01:00"\nrate = 0.1\n'
                            'cutoff = "2026-03-03T23:59:00+01:00"',
                  "student,due\nann,2026-03-08T23:59:00+01:00\n")
    ann, bob = result("ann"), result("bob")
    for r in (ann, bob):
        r.submitted_at = DUE + timedelta(days=7)  # the hour of ann's extension
        apply_late(r, rule)
    assert (ann.score, ann.late_seconds, ann.due_at) == (8.0, 0.0, DUE + timedelta(days=7))
    assert bob.score == 0.0 and "cutoff" in bob.late_note
    assert rule.cutoff_for("ann") == DUE + timedelta(days=9)
    late_ann = result("ann", submitted_at=DUE + timedelta(days=8))
    apply_late(late_ann, rule)
    assert late_ann.late_penalty == 1.0 and late_ann.late_seconds == 86_400


def test_a_hand_in_without_a_time_and_a_grader_fault_are_never_penalised(tmp_path):
    rule = policy(tmp_path, 'due = "2026-03-01T23:59:00+01:00"\nrate = 1.0')
    untimed = result(submitted_at=None)
    fault = result(score=0.0, status="error", submitted_at=DUE + timedelta(days=3))
    assert lateness(rule, "ann", None) is None
    apply_late(untimed, rule)
    apply_late(fault, rule)
    assert (untimed.score, untimed.late_penalty, untimed.due_at) == (8.0, 0.0, None)
    assert fault.late_penalty == 0.0 and fault.late_seconds == 3 * 86_400


@pytest.mark.parametrize(("table", "words"), [
    ('due = "2026-03-01T23:59:00"', "deadline.due must be an ISO-8601 date-time with a UTC offset"),
    ("due = 2026-03-01", "deadline.due must be an ISO-8601 date-time with a UTC offset"),
    ('due = "2026-03-01T23:59:00Z"\npenalty = "weekly"', "deadline.penalty must be one of 'per_day', 'per_hour'"),
    ('due = "2026-03-01T23:59:00Z"\nrate = 1.5', "deadline.rate must be a fraction from 0 to 1"),
    ('due = "2026-03-01T23:59:00Z"\ncap = -0.1', "deadline.cap must be a fraction from 0 to 1"),
    ('due = "2026-03-01T23:59:00Z"\ncutoff = "2026-02-01T00:00:00Z"', "cutoff must be the same time or later"),
    ('due = "2026-03-01T23:59:00Z"\nextensions = "../ext.csv"', "deadline.extensions must be a .csv file inside"),
    ('due = "2026-03-01T23:59:00Z"\ngrace = 5', "unknown key deadline.grace"),
    ("rate = 0.1", "deadline.due is missing"),
])
def test_a_bad_deadline_is_one_line_naming_the_key(tmp_path, table, words):
    with pytest.raises(AssignmentError, match=words) as caught:
        policy(tmp_path, table)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("text", "words"), [
    ("name,due\nann,2026-03-08T23:59:00Z\n", "needs the columns student and due"),
    ("student,due\nann,next week\n", "line 2: due must be an ISO-8601 date-time"),
    ("student,due\nann,2026-02-08T23:59:00Z\n", "line 2: ann's due date .* is before the deadline"),
    ("student,due\nann,2026-03-08T23:59:00Z\nann,2026-03-09T23:59:00Z\n", "line 3: ann has a second extension"),
])
def test_a_bad_extensions_file_is_one_line_with_its_line(tmp_path, text, words):
    with pytest.raises(AssignmentError, match=words):
        policy(tmp_path, 'due = "2026-03-01T23:59:00+01:00"', text)


def course_with_deadline(tmp_path: Path, table: str) -> Path:
    """A copy of the tests' course whose assignment `tiny` has the [deadline] TABLE."""
    course = tmp_path / "course"
    shutil.copytree(REPO / "tests" / "files" / "course", course)
    set_deadline(course, table)
    return course


def set_deadline(course: Path, table: str) -> None:
    toml = course / "assignments" / "tiny" / "assignment.toml"
    text = toml.read_text(encoding="utf-8").split("\n[deadline]")[0]
    toml.write_text(text + (f"\n[deadline]\n{table}\n" if table else ""), encoding="utf-8")


def test_stored_penalties_follow_the_policy_when_it_changes_and_the_grading_key_does_not(tmp_path):
    course = course_with_deadline(tmp_path, 'due = "2026-03-01T23:59:00+01:00"\nrate = 0.1')
    assignment = load_assignment(course, "tiny")
    key = assignment.grading_key("data")
    book = Gradebook(tmp_path / "g.sqlite")
    ann = result("ann", 6.0, DUE + timedelta(hours=30))
    ann.assignment = "tiny"
    apply_late(ann, load_policy(assignment))
    book.store(ann)
    assert [(r.score, r.raw, r.late_penalty) for r in book.latest("tiny")] == [(4.0, 6.0, 2.0)]

    (course / "assignments" / "tiny" / "ext.csv").write_text("student,due\nann,2026-03-04T00:00:00Z\n")
    set_deadline(course, 'due = "2026-03-01T23:59:00+01:00"\nrate = 0.1\nextensions = "ext.csv"')
    assignment = load_assignment(course, "tiny")
    assert assignment.grading_key("data") == key, "a deadline change must not regrade notebooks"
    assert restate(book, assignment) == ["ann"]
    (stored,) = book.latest("tiny")
    assert (stored.score, stored.raw, stored.late_penalty, stored.late_seconds) == (6.0, 6.0, 0.0, 0.0)
    assert restate(book, assignment) == [], "nothing changes twice"

    set_deadline(course, 'due = "2026-03-01T23:59:00+01:00"\npenalty = "per_hour"\nrate = 0.01')
    restate(book, load_assignment(course, "tiny"))
    assert book.latest("tiny")[0].late_penalty == 3.0  # 30 started hours x 1% of 10 points
    set_deadline(course, "")
    restate(book, load_assignment(course, "tiny"))
    (stored,) = book.latest("tiny")
    assert (stored.score, stored.late_penalty, stored.due_at) == (6.0, 0.0, None)
    (course / "assignments" / "tiny" / "assignment.toml").write_text(
        (course / "assignments" / "tiny" / "assignment.toml").read_text().replace("points = 6", "points = 7"))
    assert load_assignment(course, "tiny").grading_key("data") != key


def test_a_gradebook_made_before_deadlines_opens_and_reads_its_scores_as_raw(tmp_path):
    path = tmp_path / "old.sqlite"
    Gradebook(path).store(result("ann", 7.0))
    with sqlite3.connect(path) as db:  # the grading_runs table as an older grader made it
        before_migrations(db)
        for column in ("raw_score", "late_penalty", "late_seconds", "due_at", "late_note"):
            db.execute(f"ALTER TABLE grading_runs DROP COLUMN {column}")
    (old,) = Gradebook(path).latest("late")
    assert (old.score, old.raw, old.raw_score, old.late_penalty, old.late_note) == (7.0, 7.0, None, 0.0, "")
    with sqlite3.connect(path) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(grading_runs)")}
    assert {"raw_score", "late_penalty", "late_seconds", "due_at", "late_note"} <= columns


def test_a_hand_in_time_with_an_offset_is_stored_as_the_same_moment(tmp_path):
    book = Gradebook(tmp_path / "g.sqlite")
    book.store(result("ann", submitted_at=DUE))
    assert book.latest("late")[0].submitted_at == DUE


def test_the_feedback_page_and_the_summary_show_raw_penalty_and_final(tmp_path):
    rule = policy(tmp_path, 'due = "2026-03-01T23:59:00+01:00"\nrate = 0.1')
    r = result(score=8.0, submitted_at=DUE + timedelta(hours=26))
    apply_late(r, rule)
    page = write_feedback(r, title="T", folder=tmp_path / "pages", notebook_html=False)
    text = page.read_text(encoding="utf-8")
    assert "Score from the checks</th><td>8 / 10" in text
    assert "Late penalty</th><td>−2: handed in 1 day 2 h after the due date 2026-03-01 23:59 +0100" in text
    assert "Final score</th><td>6 / 10" in text
    assert "1 day 2 h after your due date 2026-03-01 22:59 UTC" in text
    summary = write_summary([r], assignment="late", title="T", folder=tmp_path / "pages")
    assert "<td>6 / 10</td><td>8</td>" in summary.read_text(encoding="utf-8")
    assert "−2 (1 day 2 h late)" in summary.read_text(encoding="utf-8")
    on_time = result(submitted_at=DUE)
    apply_late(on_time, rule)
    text = write_feedback(on_time, title="T", folder=tmp_path / "p2", notebook_html=False).read_text()
    assert "Score from the checks" not in text and "(on time: due 2026-03-01 22:59 UTC)" in text


def test_assignment01_documents_a_deadline_that_parses_and_leaves_it_without_one(tmp_path):
    toml = (REPO / "assignments" / "assignment01" / "assignment.toml").read_text(encoding="utf-8")
    assert load_config(REPO / "assignments" / "assignment01" / "assignment.toml").deadline is None
    head, example = toml.split("# [deadline]\n")
    (tmp_path / "assignment.toml").write_text(
        head + "[deadline]\n" + "".join(line.removeprefix("# ") + "\n" for line in example.splitlines()),
        encoding="utf-8")
    deadline = load_config(tmp_path / "assignment.toml").deadline
    assert deadline is not None
    assert (deadline.due_at, deadline.penalty, deadline.rate, deadline.cap, deadline.extensions) == (
        DUE, "per_day", 0.1, 0.5, "extensions.csv")
    assert deadline.cutoff_at == DUE + timedelta(days=7)
