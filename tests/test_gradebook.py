from datetime import UTC, datetime

import pytest

from grader.errors import GradebookError
from grader.gradebook import Gradebook
from grader.outcomes import Attachment, CheckOutcome
from grader.score import Result


def result(student: str, sha: str, score: float, status: str = "graded") -> Result:
    return Result(
        student=student, assignment="a1", notebook=f"/s/{student}.ipynb", sha256=sha,
        checks_sha256="c1", status=status, reason="", score=score, max_score=10,
        checks=[CheckOutcome("test_x", "x works", True, 10, score, "partial", "half",
                             [Attachment("text", "t", "body")])],
        failed_cell={"index": 1, "source": "1/0", "ename": "ZeroDivisionError", "evalue": "",
                     "traceback": ""},
        submitted_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_store_and_read_back_the_latest_run(tmp_path):
    book = Gradebook(tmp_path / "g.sqlite")
    book.store(result("bob", "s1", 3))
    book.store(result("alice", "s2", 7))
    book.store(result("bob", "s3", 9))
    latest = book.latest("a1")
    assert [(r.student, r.score, r.sha256) for r in latest] == [("alice", 7, "s2"), ("bob", 9, "s3")]
    check = latest[1].checks[0]
    assert (check.description, check.points, check.attachments[0].content) == ("x works", 9, "body")
    assert latest[1].failed_cell["ename"] == "ZeroDivisionError"
    assert latest[1].graded_at.tzinfo is not None
    assert book.count_runs("a1") == {"alice": 1, "bob": 2}
    assert book.latest("other") == []


def test_already_graded_needs_the_same_notebook_and_checks(tmp_path):
    book = Gradebook(tmp_path / "g.sqlite")
    book.store(result("bob", "s1", 3))
    book.store(result("eve", "s9", 0, status="error"))
    assert book.already_graded("bob", "a1", "s1", "c1")
    assert not book.already_graded("bob", "a1", "s2", "c1")
    assert not book.already_graded("bob", "a1", "s1", "c2")
    assert not book.already_graded("bob", "a2", "s1", "c1")
    assert not book.already_graded("eve", "a1", "s9", "c1"), "grader failures are retried"


def test_results_survive_reopening(tmp_path):
    Gradebook(tmp_path / "g.sqlite").store(result("bob", "s1", 3))
    assert Gradebook(f"sqlite:///{tmp_path / 'g.sqlite'}").latest("a1")[0].score == 3


def test_a_bad_gradebook_is_a_user_error(tmp_path):
    (tmp_path / "g.sqlite").write_text("this is not a database" * 100)
    with pytest.raises(GradebookError, match="cannot open the gradebook"):
        Gradebook(tmp_path / "g.sqlite")


def test_a_resubmitted_older_notebook_shows_its_own_grade(tmp_path):
    book = Gradebook(tmp_path / "g.sqlite")
    book.store(result("bob", "v1", 3))
    book.store(result("bob", "v2", 9))
    assert book.latest("a1")[0].score == 9
    book.mark_seen("bob", "a1", "v1")  # bob hands in v1 again: already graded, so skipped
    assert [(r.sha256, r.score) for r in book.latest("a1")] == [("v1", 3)]


def test_student_text_with_lone_surrogates_and_nuls_is_stored(tmp_path):
    book = Gradebook(tmp_path / "g.sqlite")
    bad = result("eve\ud800", "s1", 0, status="cell_error")
    bad.reason = "cell 2 raised ValueError: \ud800\udfff broken\x00text"
    bad.checks[0].message = "found \udcff"
    bad.failed_cell = {"index": 1, "source": "x = '\ud800'", "ename": "E", "evalue": "\ud800",
                       "traceback": ""}
    book.store(bad)
    stored = book.latest("a1")[0]
    assert stored.reason.startswith("cell 2 raised ValueError") and "\x00" not in stored.reason
    assert "\ud800" not in stored.student and stored.student.startswith("eve")
    assert stored.checks[0].message.startswith("found")


def test_a_locked_write_is_retried(tmp_path, monkeypatch):
    from sqlalchemy.exc import OperationalError

    book = Gradebook(tmp_path / "g.sqlite", attempts=3)
    real, calls = book._store, []

    def flaky(r):
        calls.append(r.student)
        if len(calls) < 3:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        real(r)

    monkeypatch.setattr(book, "_store", flaky)
    book.store(result("bob", "s1", 3))
    assert len(calls) == 3 and book.latest("a1")[0].score == 3


def test_a_write_that_keeps_failing_is_one_gradebook_error(tmp_path, monkeypatch):
    from sqlalchemy.exc import OperationalError

    book = Gradebook(tmp_path / "g.sqlite", attempts=2)

    def broken(r):
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(book, "_store", broken)
    with pytest.raises(GradebookError, match="failed 2 times: .*disk I/O error"):
        book.store(result("bob", "s1", 3))


def test_a_gradebook_of_an_older_grader_gets_the_new_columns(tmp_path):
    import sqlite3

    path = tmp_path / "g.sqlite"
    Gradebook(path).store(result("bob", "s1", 3))
    with sqlite3.connect(path) as db:  # what the previous release made: none of the new columns
        db.execute("ALTER TABLE grading_runs DROP COLUMN staff_detail")
        db.execute("ALTER TABLE submissions DROP COLUMN seen_at")
        db.execute("ALTER TABLE check_results DROP COLUMN fault")
        db.execute("ALTER TABLE grading_runs DROP COLUMN warmup_s")
    book = Gradebook(path)
    later = result("bob", "s2", 5, status="error")
    later.staff_detail = "kernel log"
    book.store(later)
    assert [(r.score, r.staff_detail) for r in book.latest("a1")] == [(5, "kernel log")]


def test_an_older_gradebooks_runs_read_back_with_zero_for_a_new_phase(tmp_path):
    import sqlite3

    path = tmp_path / "g.sqlite"
    Gradebook(path).store(result("bob", "s1", 3))
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE grading_runs DROP COLUMN queue_s")
    [old] = Gradebook(path).latest("a1")
    assert old.queue_s == 0.0 and old.total_s >= 0


def test_the_store_and_report_phases_are_recorded_on_the_stored_run(tmp_path):
    book = Gradebook(tmp_path / "g.sqlite")
    first = book.store(result("bob", "s1", 3))
    second = book.store(result("alice", "s2", 7))
    book.record_phases(first, store_s=0.25, report_s=1.5)
    stored = {r.student: r for r in book.latest("a1")}
    assert (stored["bob"].store_s, stored["bob"].report_s) == (0.25, 1.5)
    assert (stored["alice"].store_s, stored["alice"].report_s) == (0.0, 0.0)
    assert first != second
