"""assignment01 through the real pipeline: the reference, the starter and the other examples."""

import subprocess
import sys

import pytest

from grader.gradebook import Gradebook
from tests.conftest import REPO

EXPECTED = {  # student: (score, status, words in the reason)
    "reference": (10, "graded", ""),
    "partial": (5, "graded", ""),
    "starter": (0, "cell_error", "NotImplementedError"),
    "raises": (0, "cell_error", "FileNotFoundError"),
    "hangs": (0, "timeout", "ran longer than 60 s"),
    "invalid": (0, "invalid", "not a valid notebook"),
}


def grader(*args, cwd):
    return subprocess.run([sys.executable, "-m", "grader", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_validate_assignment01(data_home, tmp_path):
    run = grader("validate", "assignment01", "--course", REPO, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "assignment01 is valid: reference 10/10, starter 0" in run.stdout


@pytest.mark.slow
def test_examples_get_the_expected_scores_and_reasons(data_home, tmp_path):
    run = grader("run", "assignment01", "--course", REPO, "--workers", "2",
                 "--submissions", REPO / "assignments" / "assignment01" / "submissions", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    results = {r.student: r for r in Gradebook(tmp_path / "gradebook.sqlite").latest("assignment01")}
    assert {s: (r.score, r.status) for s, r in results.items()} == {
        s: (score, status) for s, (score, status, _) in EXPECTED.items()}
    for student, (_, _, words) in EXPECTED.items():
        page = (tmp_path / "reports" / "assignment01" / f"{student}.html").read_text()
        assert words in results[student].reason and words in page, student
    reference = (tmp_path / "reports" / "assignment01" / "reference.html").read_text()
    assert reference.count("data:image/png;base64,") == 2  # training curve, predicted vs true
