"""assignment03 (MNIST) on the real data: it validates, and every example gets its score.

Skipped only where ../shared/datasets is absent; CI has it. About 2.5 minutes on two cores, one of
them the hangs example waiting out its 60 s cell limit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.examples import (
    assert_no_hidden_data_reaches_the_kernel,
    assert_points_add_up,
    assert_release_reproduces,
    assert_validates,
    grade_examples,
    images_on_page,
    import_real_data,
)

NAME = "assignment03"

EXPECTED = {  # student: (score, status, words in the reason)
    "reference": (10, "graded", ""),
    "starter": (0, "cell_error", "NotImplementedError"),
    "partial": (6, "graded", ""),
    "labels-regression": (4.5, "cell_error", "NotImplementedError"),
    "raises": (2, "cell_error", "KeyError"),
    "hangs": (0, "timeout", "ran longer than 60 s"),
    "invalid": (0, "invalid", "not a valid notebook"),
}
CHECKS = {  # student: points of each check, where the example is about the checks
    "partial": {"test_preprocess": 2, "test_regression": 1, "test_regression_accuracy": 0,
                "test_classifier_is_linear": 1, "test_training_curves": 1,
                "test_hidden_accuracy": 1},
    "labels-regression": {"test_preprocess": 2, "test_regression": 1,
                          "test_regression_accuracy": 1, "test_classifier_is_linear": 0,
                          "test_training_curves": 0.5, "test_hidden_accuracy": 0},
    "raises": {"test_preprocess": 2, "test_regression": 0, "test_regression_accuracy": 0,
               "test_classifier_is_linear": 0, "test_training_curves": 0,
               "test_hidden_accuracy": 0},
}


@pytest.fixture(scope="module")
def data_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh dataset cache with MNIST imported from ../shared/datasets."""
    return import_real_data(tmp_path_factory, "mnist")


def test_the_checks_add_up_to_the_assignment_points():
    assert_points_add_up(NAME)


def test_no_check_sends_hidden_data_to_the_students_functions():
    assert_no_hidden_data_reaches_the_kernel(NAME)


def test_release_reproduces_the_committed_starter(tmp_path):
    assert_release_reproduces(NAME, tmp_path)


@pytest.mark.slow
def test_validate(data_home, tmp_path):
    assert_validates(NAME, data_home, tmp_path)


@pytest.mark.slow
def test_examples_get_their_expected_scores(data_home, tmp_path):
    results = grade_examples(NAME, data_home, tmp_path, EXPECTED, CHECKS)
    hidden = {c.name: c.message for c in results["reference"].checks}["test_hidden_accuracy"]
    assert "100% of the points" in hidden, hidden
    # regression box plot, training curves, confusion matrix, misclassified digits
    assert images_on_page(NAME, "reference", tmp_path) == 4
    # raises: its classifier was built, but fit never ran; no confusion matrix of an untrained model
    unevaluated = {c.name: c.message for c in results["raises"].checks}["test_hidden_accuracy"]
    assert unevaluated.startswith("the model could not be evaluated: it was never trained")
    assert images_on_page(NAME, "raises", tmp_path) == 0
