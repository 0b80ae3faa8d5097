"""assignment03 (MNIST) on the real data: it validates, and every example gets its score.

Skipped only where ../shared/datasets is absent; CI has it. About 2.5 minutes on two cores, one of
them the hangs example waiting out its 60 s cell limit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader.gradebook import Gradebook

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
NAME = "assignment03"
ASSIGNMENT = REPO / "assignments" / NAME

EXPECTED = {  # student: (score, status, words in the reason)
    "reference": (10, "graded", ""),
    "starter": (0, "cell_error", "NotImplementedError"),
    "partial": (5, "graded", ""),
    "labels-regression": (4, "cell_error", "NotImplementedError"),
    "raises": (2, "cell_error", "KeyError"),
    "hangs": (0, "timeout", "ran longer than 60 s"),
    "invalid": (0, "invalid", "not a valid notebook"),
}
CHECKS = {  # student: points of each check, where the example is about the checks
    "partial": {"test_preprocess": 2, "test_regression_on_labels": 0,
                "test_classifier_is_linear": 1, "test_training_curves": 1,
                "test_hidden_accuracy": 1},
    "labels-regression": {"test_preprocess": 2, "test_regression_on_labels": 2,
                          "test_classifier_is_linear": 0, "test_training_curves": 0,
                          "test_hidden_accuracy": 0},
    "raises": {"test_preprocess": 2, "test_regression_on_labels": 0,
               "test_classifier_is_linear": 0, "test_training_curves": 0,
               "test_hidden_accuracy": 0},
}


@pytest.fixture(scope="module")
def data_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh dataset cache with MNIST imported from ../shared/datasets."""
    if not SHARED.is_dir():
        pytest.skip(f"no real datasets at {SHARED}")
    home = tmp_path_factory.mktemp("data-home")
    run = grader("data", "import", SHARED, "mnist", home=home, cwd=home)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return home


def grader(*args: object, home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GRADER_DATA_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "grader", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def test_release_reproduces_the_committed_starter(tmp_path):
    course = tmp_path / "course"
    shutil.copytree(ASSIGNMENT, course / "assignments" / NAME)
    (course / "assignments" / NAME / "release" / f"{NAME}.ipynb").unlink()
    run = grader("release", NAME, "--course", course, home=tmp_path, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    made = (course / "assignments" / NAME / "release" / f"{NAME}.ipynb").read_bytes()
    assert made == (ASSIGNMENT / "release" / f"{NAME}.ipynb").read_bytes()
    assert made == (ASSIGNMENT / "submissions" / "starter.ipynb").read_bytes()


@pytest.mark.slow
def test_validate(data_home, tmp_path):
    run = grader("validate", NAME, "--course", REPO, home=data_home, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"{NAME} is valid: reference 10/10, starter 0" in run.stdout


@pytest.mark.slow
def test_examples_get_their_expected_scores(data_home, tmp_path):
    run = grader("run", NAME, "--course", REPO, "--workers", "2",
                 "--submissions", ASSIGNMENT / "submissions", home=data_home, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = {r.student: r for r in Gradebook(tmp_path / "gradebook.sqlite").latest(NAME)}
    found = {s: (r.score, r.status) for s, r in results.items()}
    assert found == {s: (score, status) for s, (score, status, _) in EXPECTED.items()}, {
        s: r.reason[:200] for s, r in results.items()}
    for student, (_, _, words) in EXPECTED.items():
        assert words in results[student].reason, (student, results[student].reason)
    for student, points in CHECKS.items():
        assert {c.name: c.points for c in results[student].checks} == points, student
    hidden = {c.name: c.message for c in results["reference"].checks}["test_hidden_accuracy"]
    assert "100% of the points" in hidden, hidden
    page = (tmp_path / "reports" / NAME / "reference.html").read_text(encoding="utf-8")
    # regression box plot, training curves, confusion matrix, misclassified digits
    assert page.count("data:image/png;base64,") == 4
