"""assignment01 through the real pipeline: the reference, the starter and the other examples.

Its examples are graded once, in one `grader run`, for every slow test below (see tests/examples.py).
"""

import re
from pathlib import Path

import pytest

from tests.examples import (
    Examples,
    assert_check_points,
    assert_no_hidden_data_reaches_the_kernel,
    assert_points_add_up,
    assert_reasons,
    assert_reference_is_the_source,
    assert_release_reproduces,
    assert_scores,
    assert_validates,
    grade_examples,
    hidden_data_to_kernel,
)

NAME = "assignment01"
# The examples' cell limit instead of the assignment's 60 s: the hangs example spins for 30 s less,
# and the longest cell of the reference takes about 10-16 s on two busy cores.
CELL_SECONDS = 30
EXPECTED = {  # student: (score, status, words in the reason)
    "reference": (10, "graded", ""),
    "partial": (5, "graded", ""),
    "fit-fails": (6, "cell_error", "TypeError"),
    "starter": (0, "cell_error", "NotImplementedError"),
    "raises": (0, "cell_error", "FileNotFoundError"),
    "hangs": (0, "timeout", f"ran longer than {CELL_SECONDS} s"),
    "invalid": (0, "invalid", "not a valid notebook"),
}
CHECKS = {  # student: points of each check, where the example is about the checks
    # statistics, model and curve right (its fit records no val_loss: the given plot cell copes)
    "partial": {"test_means": 1, "test_minimums": 1, "test_maximums": 1,
                "test_model_is_linear": 1, "test_training_history": 1,
                "test_accuracy_reported": 0, "test_predict_grades": 0, "test_hidden_accuracy": 0},
    # fit raises: every part that needs no trained model still scores; the hidden check says why
    # it cannot evaluate the model instead of plotting an untrained one
    "fit-fails": {"test_means": 1, "test_minimums": 1, "test_maximums": 1,
                  "test_model_is_linear": 1, "test_training_history": 0,
                  "test_accuracy_reported": 1, "test_predict_grades": 1,
                  "test_hidden_accuracy": 0},
}


@pytest.fixture(scope="module")
def data_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh dataset cache: the grading data is generated, nothing to import."""
    return tmp_path_factory.mktemp("data-home")


@pytest.fixture(scope="module")
def examples(data_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Examples:
    """All of assignment01's examples, graded once for every test below."""
    return grade_examples(NAME, data_home, tmp_path_factory.mktemp("examples"),
                          limits={"cell_seconds": CELL_SECONDS})


def test_release_reproduces_the_committed_starter(tmp_path):
    assert_release_reproduces(NAME, tmp_path)


def test_the_reference_example_is_the_instructor_notebook():
    assert_reference_is_the_source(NAME)


@pytest.mark.slow
def test_validate_assignment01(examples):
    assert_validates(examples)


@pytest.mark.slow
def test_examples_get_the_expected_scores(examples):
    assert_scores(examples, EXPECTED)


@pytest.mark.slow
def test_reasons_and_pages_say_what_went_wrong(examples):
    assert_reasons(examples, EXPECTED)


@pytest.mark.slow
def test_each_check_gives_its_points(examples):
    assert_check_points(examples, CHECKS)


@pytest.mark.slow
def test_the_reference_page_shows_its_plots(examples):
    assert examples.images("reference") == 2  # training curve, predicted vs true


@pytest.mark.slow
def test_a_model_that_was_never_trained_is_not_evaluated(examples):
    hidden = examples.message("fit-fails", "test_hidden_accuracy")
    assert hidden.startswith("the model could not be evaluated: it was never trained"), hidden
    assert examples.images("fit-fails") == 0  # no plot of an untrained model


@pytest.mark.slow
def test_the_summary_pairs_the_reference_with_its_faulty_copies_only(examples):
    """fit-fails, raises and hangs are the reference with one fault each: copied work, for the
    summary; the partial example and the starter pair with nobody."""
    assert re.fullmatch(r"[0-9a-f]{64}", examples.results["reference"].weights["model"])
    summary = (examples.folder / "reports" / NAME / "index.html").read_text(encoding="utf-8")
    listed = set(re.findall(r"<td>([\w-]+) · ([\w-]+)</td>", summary))
    assert {("fit-fails", "reference"), ("hangs", "reference"), ("raises", "reference")} <= listed
    assert not {"partial", "starter", "invalid"} & {s for pair in listed for s in pair}
    assert "reference" not in examples.page("fit-fails")


def test_the_checks_add_up_to_the_assignment_points():
    assert_points_add_up(NAME)


def test_no_check_sends_hidden_data_to_the_students_functions():
    assert_no_hidden_data_reaches_the_kernel(NAME)


def test_the_hidden_data_check_catches_hidden_rows_sent_to_a_student_function():
    # assignment01's predict_grades check as it was: it sent 50 hidden students to the kernel
    before = '''
def test_predict_grades(submission, hidden):
    model = submission.model("model")
    x, _ = _hidden(hidden)
    sample = x[:50]
    found = submission.call_array("predict_grades", sample).ravel()
'''
    assert len(hidden_data_to_kernel(before)) == 1
    helper = "def test_h(submission, hidden, probe):\n    probe(submission, hidden / 'x.npz')\n"
    assert len(hidden_data_to_kernel(helper)) == 1
    made_up = before.replace("x, _ = _hidden(hidden)", "x = made_up_points(50, seed=7)")
    assert hidden_data_to_kernel(made_up) == []
