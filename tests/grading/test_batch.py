"""Batch-level rules that need no kernel: invalid notebooks are graded without one."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from grader.grading import batch as batch_module
from grader.grading.batch import grade_batch
from grader.grading.executor import Settings
from grader.model.assignments import load_assignment
from grader.model.errors import GradebookError, PreflightFailed
from grader.model.result import file_digest
from grader.model.submission import discover
from grader.reports.pages import ReportError, write_feedback
from grader.store.gradebook import Gradebook


def invalid_batch(folder: Path, *names: str) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.ipynb").write_text("{ not json")
    return discover(folder, notebook_name="tiny.ipynb")


def test_a_result_that_cannot_be_stored_never_stops_the_batch(course, tmp_path):
    class Flaky(Gradebook):
        def store(self, result):
            if result.student == "bob":
                raise GradebookError("the gradebook write failed 3 times: disk I/O error")
            super().store(result)

    book = Flaky(tmp_path / "g.sqlite")
    subs = invalid_batch(tmp_path / "subs", "alice", "bob", "carol")
    batch = grade_batch(load_assignment(course, "tiny"), subs, gradebook=book, prepared=None)
    assert len(batch.graded) == 3
    assert batch.unstored == [("bob", "the gradebook write failed 3 times: disk I/O error")]
    assert {r.student for r in book.latest("tiny")} == {"alice", "carol"}


def test_a_file_name_that_is_not_utf8_is_stored(course, tmp_path):
    book = Gradebook(tmp_path / "g.sqlite")
    folder = tmp_path / "subs"
    folder.mkdir()
    with open(os.fsencode(folder) + b"/eve\xff\xfe.ipynb", "w") as f:  # a lone surrogate in Python
        f.write("{")
    subs = discover(folder, notebook_name="")
    batch = grade_batch(load_assignment(course, "tiny"), subs, gradebook=book, prepared=None)
    assert batch.unstored == []
    [stored] = book.latest("tiny")
    assert stored.status == "invalid" and stored.student.startswith("eve")


@pytest.mark.parametrize(("raised", "status"), [
    (OSError(28, "No space left on device"), "error"),
    (ReportError("the executed notebook of alice could not be rendered (took too long)"), "invalid"),
], ids=["page-not-written", "notebook-not-rendered"])
def test_report_failures_are_recorded_on_the_result(course, tmp_path, monkeypatch, raised, status):
    def failing(*args, **kwargs):
        raise raised

    monkeypatch.setattr(batch_module, "write_feedback", failing)
    book = Gradebook(tmp_path / "g.sqlite")
    subs = invalid_batch(tmp_path / "subs", "alice")
    assignment = load_assignment(course, "tiny")
    settings = Settings(reports=tmp_path / "reports")
    grade_batch(assignment, subs, gradebook=book, prepared=None, settings=settings)
    stored = book.latest("tiny")[0]
    assert stored.status == status and str(raised.args[-1]) in stored.report_error
    rerun = grade_batch(assignment, subs, gradebook=book, prepared=None, settings=settings)
    # A page that was never written is a grader fault: the next run grades it again.
    assert len(rerun.graded) == (1 if status == "error" else 0)


def test_pages_are_written_off_the_slots_after_each_result_is_stored(course, tmp_path, monkeypatch):
    import threading

    book = Gradebook(tmp_path / "g.sqlite")
    real = batch_module.write_feedback
    seen = []

    def page(result, **kwargs):
        stored = {r.student for r in book.latest("tiny")}
        seen.append((threading.current_thread().name, result.student in stored))
        return real(result, **kwargs)

    monkeypatch.setattr(batch_module, "write_feedback", page)
    subs = invalid_batch(tmp_path / "subs", "alice", "bob", "carol")
    settings = Settings(workers=2, reports=tmp_path / "r")
    grade_batch(load_assignment(course, "tiny"), subs, gradebook=book, prepared=None,
                settings=settings)
    assert len(seen) == 3 and all(name.startswith("grader-report") and stored for name, stored in seen)
    results = book.latest("tiny")  # each run's store and page times were added once known
    assert all(r.store_s > 0 and r.report_s > 0 and r.queue_s >= 0 for r in results)


def test_a_graded_student_whose_page_is_missing_gets_it_on_the_next_run(course, tmp_path):
    book = Gradebook(tmp_path / "g.sqlite")
    subs = invalid_batch(tmp_path / "subs", "alice", "bob")
    assignment = load_assignment(course, "tiny")
    settings = Settings(reports=tmp_path / "r")
    grade_batch(assignment, subs, gradebook=book, prepared=None, settings=settings)
    (tmp_path / "r" / "alice.html").unlink()
    again = grade_batch(assignment, subs, gradebook=book, prepared=None, settings=settings)
    assert again.graded == [] and sorted(again.skipped) == ["alice", "bob"]
    assert "not JSON" in (tmp_path / "r" / "alice.html").read_text()
    assert book.count_runs("tiny") == {"alice": 1, "bob": 1}


def test_nothing_is_stored_before_the_preflight_and_a_failed_one_grades_nothing(course, tmp_path):
    book = Gradebook(tmp_path / "g.sqlite")
    subs = invalid_batch(tmp_path / "subs", "alice", "bob", "carol")
    assignment = load_assignment(course, "tiny")

    def failing() -> None:
        raise PreflightFailed("a sandboxed kernel cannot run here; nothing was graded")

    with pytest.raises(PreflightFailed, match="nothing was graded"):
        grade_batch(assignment, subs, gradebook=book, prepared=None, preflight=failing)
    assert book.latest("tiny") == []

    passed: list[float] = []

    def slow() -> None:
        time.sleep(1.0)
        passed.append(time.monotonic())

    stored: list[float] = []
    batch = grade_batch(assignment, subs, gradebook=book, prepared=None, preflight=slow,
                        on_result=lambda result: stored.append(time.monotonic()))
    assert len(batch.graded) == 3 and len(stored) == 3 and len(passed) == 1
    assert min(stored) >= passed[0]


def _fault(of, key: str):
    """OF as a run whose checks' own code raised (a broken check, grading key KEY)."""
    from dataclasses import replace

    from grader.model.result import mark_fault

    broken = replace(of, checks_sha256=key, graded_at=datetime.now(UTC))
    mark_fault(broken, "TypeError in the check's own code")
    return broken


def test_a_check_put_back_as_it_was_shows_its_grade_again_not_the_fault(course, tmp_path):
    """A broken check (another key) made every run a fault; the check is put back as it was,
    so its key is that of the first, good run: the rerun skips, and the gradebook's result and
    the page are the good run's again, never the fault's."""
    book = Gradebook(tmp_path / "g.sqlite")
    subs = invalid_batch(tmp_path / "subs", "alice", "bob")
    assignment = load_assignment(course, "tiny")
    settings = Settings(reports=tmp_path / "r")
    grade_batch(assignment, subs, gradebook=book, prepared=None, settings=settings)
    for good in book.latest("tiny"):  # the broken batch: stored and paged as a fault
        broken = _fault(good, "broken-check-key")
        book.store(broken)
        write_feedback(broken, title=assignment.config.title, folder=tmp_path / "r",
                       notebook_html=True)
    assert {r.status for r in book.latest("tiny")} == {"error"}
    again = grade_batch(assignment, subs, gradebook=book, prepared=None, settings=settings)
    assert again.graded == [] and sorted(again.skipped) == ["alice", "bob"]
    assert {r.student: r.status for r in book.latest("tiny")} == {"alice": "invalid", "bob": "invalid"}
    for student in ("alice", "bob"):
        page = (tmp_path / "r" / f"{student}.html").read_text()
        assert "not JSON" in page and "Not graded yet" not in page


def test_a_resubmission_a_b_a_shows_as_page_and_grade(course, tmp_path):
    """A -> B -> A: A is graded before, so skipped, and its page (B's until now) is written
    again with A's run."""
    book = Gradebook(tmp_path / "g.sqlite")
    assignment = load_assignment(course, "tiny")
    settings = Settings(reports=tmp_path / "r")
    page = tmp_path / "r" / "alice.html"
    shas = []
    for text in ("{ version A", "{ version B", "{ version A"):
        (tmp_path / "subs").mkdir(exist_ok=True)
        (tmp_path / "subs" / "alice.ipynb").write_text(text)
        subs = discover(tmp_path / "subs", notebook_name="tiny.ipynb")
        grade_batch(assignment, subs, gradebook=book, prepared=None, settings=settings)
        shas.append(file_digest(subs[0].path))
    assert book.count_runs("tiny") == {"alice": 2}
    [stored] = book.latest("tiny")
    assert stored.sha256 == shas[0] != shas[1]
    assert shas[0][:16] in page.read_text() and shas[1][:16] not in page.read_text()


def test_a_huge_student_message_is_capped_once_for_both_the_store_and_the_page(
        course, tmp_path, monkeypatch):
    from grader.grading import local
    from grader.model.submission import InvalidNotebook

    def huge(path):
        raise InvalidNotebook("x" * 9_000_000)

    monkeypatch.setattr(local, "read_notebook", huge)
    book = Gradebook(tmp_path / "g.sqlite")
    subs = invalid_batch(tmp_path / "subs", "alice")
    grade_batch(load_assignment(course, "tiny"), subs, gradebook=book, prepared=None,
                settings=Settings(reports=tmp_path / "r"))
    [stored] = book.latest("tiny")
    page = (tmp_path / "r" / "alice.html").read_text()
    assert len(stored.reason) <= 5000 and stored.reason.startswith("xxx")
    assert len(page) < 50_000 and stored.reason in page
