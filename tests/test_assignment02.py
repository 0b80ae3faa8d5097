"""assignment02 (Boston housing) on the real data: it validates, and every example gets its score.

Needs ../shared/datasets (it fails, never skips, without it); CI has it. The examples are graded
once, in one `grader run`, for every slow test below (see tests/examples.py).
"""

from __future__ import annotations

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
    import_real_data,
)

NAME = "assignment02"
# The examples' cell limit instead of the assignment's 60 s: the hangs example spins for 30 s less,
# and the longest cell of the reference takes about 10-16 s on two busy cores.
CELL_SECONDS = 30

EXPECTED = {  # student: (score, status, words in the reason)
    "reference": (10, "graded", ""),
    "starter": (0, "cell_error", "NotImplementedError"),
    "partial": (5, "graded", ""),
    "test-stats": (6, "graded", ""),
    "raises": (0, "cell_error", "FileNotFoundError"),
    "hangs": (0, "timeout", f"ran longer than {CELL_SECONDS} s"),
    "invalid": (0, "invalid", "not a valid notebook"),
}
CHECKS = {  # student: points of each check, where the example is about the checks
    "partial": {"test_training_mean": 1, "test_training_std": 1, "test_normalize": 0,
                "test_model_is_linear": 1, "test_training_curves": 1, "test_hidden_error": 1},
    "test-stats": {"test_training_mean": 0, "test_training_std": 0, "test_normalize": 0,
                   "test_model_is_linear": 1, "test_training_curves": 1, "test_hidden_error": 4},
}


@pytest.fixture(scope="module")
def data_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh dataset cache with Boston housing imported from ../shared/datasets."""
    return import_real_data(tmp_path_factory, "boston_housing")


@pytest.fixture(scope="module")
def examples(data_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Examples:
    """All of assignment02's examples, graded once for every test below."""
    return grade_examples(NAME, data_home, tmp_path_factory.mktemp("examples"),
                          limits={"cell_seconds": CELL_SECONDS})


def test_the_checks_add_up_to_the_assignment_points():
    assert_points_add_up(NAME)


def test_no_check_sends_hidden_data_to_the_students_functions():
    assert_no_hidden_data_reaches_the_kernel(NAME)


def test_release_reproduces_the_committed_starter(tmp_path):
    assert_release_reproduces(NAME, tmp_path)


def test_the_reference_example_is_the_instructor_notebook():
    assert_reference_is_the_source(NAME)


@pytest.mark.slow
def test_validate(examples):
    assert_validates(examples)


@pytest.mark.slow
def test_examples_get_their_expected_scores(examples):
    assert_scores(examples, EXPECTED)


@pytest.mark.slow
def test_reasons_and_pages_say_what_went_wrong(examples):
    assert_reasons(examples, EXPECTED)


@pytest.mark.slow
def test_each_check_gives_its_points(examples):
    assert_check_points(examples, CHECKS)


@pytest.mark.slow
def test_statistics_of_the_wrong_houses_are_named(examples):
    assert "the mean of the validation houses" in examples.message("test-stats", "test_training_mean")
    assert "the std of the validation houses" in examples.message("test-stats", "test_training_std")


@pytest.mark.slow
def test_the_reference_gets_full_hidden_credit_and_its_plots(examples):
    hidden = examples.message("reference", "test_hidden_error")
    assert "100% of the points" in hidden, hidden
    assert examples.images("reference") == 2  # training curves, predicted against true


@pytest.mark.slow
def test_a_model_that_was_never_trained_is_not_evaluated(examples):
    # raises: its model was built, but fit never ran; the hidden check says so instead of plotting
    unevaluated = examples.message("raises", "test_hidden_error")
    assert unevaluated.startswith("the model could not be evaluated: it was never trained")
    assert examples.images("raises") == 0
