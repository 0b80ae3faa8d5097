"""How the gradebook fixtures here were made: run with an earlier grader's package on the path.

    git archive COMMIT grader | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old python tests/files/gradebooks/make_fixtures.py OUT.sql

release.sql: the grader before Alembic migrations (d42c3e9); older.sql: an older release
(abc14c8), without the phase, weight and late columns and without the overrides table. Each
holds three results: ann (7 of 10, two checks), bob (two runs, 3 then 9), eve (a grader fault);
release.sql also a reviewer's override of ann's accuracy check (3 -> 5 points).
"""

import sqlite3
import sys
import tempfile
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

from grader.gradebook import Gradebook
from grader.outcomes import Attachment, CheckOutcome
from grader.score import Result


def result(student: str, sha: str, points: tuple[float, float], status: str = "graded") -> Result:
    checks = [CheckOutcome("test_shape", "the shape is right", True, 4, points[0], "passed", "ok",
                           [Attachment("text", "shape", "(3, 4)")]),
              CheckOutcome("test_accuracy", "accuracy above 0.9", False, 6, points[1], "partial",
                           "accuracy 0.85 is below 0.9", [])]
    extra = {"graded_at": datetime(2026, 3, 2, 10, 0, tzinfo=UTC)}
    if "weights" in {f.name for f in fields(Result)}:
        extra["weights"] = {"model.keras": "ab" * 32}
    return Result(student=student, assignment="a1", notebook=f"/s/{student}.ipynb", sha256=sha,
                  checks_sha256="key1", status=status, reason="" if status == "graded" else "grader",
                  score=sum(points), max_score=10, checks=checks, device="CPU", sandboxed=True,
                  execution_s=2.5, submitted_at=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
                  staff_detail="" if status == "graded" else "the kernel died", **extra)


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.sqlite"
        book = Gradebook(path)
        book.store(result("ann", "a" * 64, (4, 3)))
        book.store(result("bob", "b" * 64, (3, 0)))
        book.store(result("bob", "c" * 64, (4, 5)))
        book.store(result("eve", "e" * 64, (0, 0), status="error"))
        if hasattr(book, "add_override"):  # the staff's change of ann's accuracy check: 3 -> 5
            from grader.score import Override
            book.add_override("a1", "ann", Override(
                kind="check", item="test_accuracy", points=5, was=3, comment="rounding",
                reviewer="ta", made_at=datetime(2026, 3, 3, tzinfo=UTC), sha256="a" * 64))
        book.engine.dispose()
        with sqlite3.connect(path) as db:
            out.write_text("\n".join(db.iterdump()) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
