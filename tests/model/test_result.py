import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from grader.grading.execute import ExecutionStatus
from grader.grading.score import status_of
from grader.model.outcomes import CheckOutcome
from grader.model.result import GRADER_FAULTS, Result, Status, result_from_dict, result_to_dict
from grader.store.gradebook import Gradebook


def result(student: str, status: Status | str) -> Result:
    return Result(
        student=student, assignment="a1", notebook=f"/s/{student}.ipynb", sha256=f"sha-{student}",
        checks_sha256="c1", status=status, reason="", score=1, max_score=10,
        checks=[CheckOutcome("test_x", "x works", True, 10, 1, "partial", "half")],
        submitted_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_a_plain_string_becomes_its_status_and_an_unknown_one_is_refused():
    assert result("bob", "cell_error").status is Status.CELL_ERROR
    with pytest.raises(ValueError, match="'graded!'"):
        result("bob", "graded!")


def test_a_stored_status_reads_back_as_the_same_status_and_is_stored_as_its_value(gradebook_target):
    book = Gradebook(gradebook_target)
    for status in (Status.GRADED, Status.TIMEOUT, Status.ERROR):
        book.store(result(str(status), status))
    with book.engine.connect() as connection:
        stored = set(connection.scalars(text("SELECT status FROM grading_runs")))
    assert stored == {"graded", "timeout", "error"} and all(type(s) is str for s in stored)
    back = {r.student: r.status for r in book.latest("a1")}
    assert back == {"graded": Status.GRADED, "timeout": Status.TIMEOUT, "error": Status.ERROR}
    assert all(type(s) is Status for s in back.values())


@pytest.mark.parametrize("legacy", ["internal_error", "kernel_failed"])
def test_a_legacy_status_of_an_older_gradebook_counts_as_a_grader_fault(gradebook_target, legacy):
    book = Gradebook(gradebook_target)
    book.store(result("eve", Status.GRADED))
    with book.engine.begin() as connection:
        connection.execute(text("UPDATE grading_runs SET status = :legacy"), {"legacy": legacy})
    [back] = book.latest("a1")
    assert back.status == legacy and back.status in GRADER_FAULTS and not back.counted
    assert not book.already_graded("eve", "a1", "sha-eve", "c1"), "a grader fault is graded again"


def test_json_carries_the_status_as_its_value_and_reads_it_back_as_the_status():
    original = result("bob", Status.KERNEL_DIED)
    data = json.loads(json.dumps(result_to_dict(original)))
    assert data["status"] == "kernel_died"
    back = result_from_dict(data)
    assert back.status is Status.KERNEL_DIED and back == original


@pytest.mark.parametrize(("ran", "status"), [
    (ExecutionStatus.OK, Status.GRADED), (ExecutionStatus.CELL_ERROR, Status.CELL_ERROR),
    (ExecutionStatus.TIMEOUT, Status.TIMEOUT), (ExecutionStatus.KERNEL_DIED, Status.KERNEL_DIED),
    (ExecutionStatus.KERNEL_FAILED, Status.ERROR),
])
def test_how_a_run_ended_gives_the_result_s_status(ran, status):
    assert status_of(ran, "", []) is status
    assert status_of(ran, "the checks broke", []) is Status.ERROR
