from datetime import UTC, datetime

import pytest

from grader.errors import GradebookError
from grader.gradebook import Gradebook
from grader.plugin import Attachment, CheckOutcome
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
    book.store(result("eve", "s9", 0, status="internal_error"))
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
