"""assignment01 through the real pipeline: the reference, the starter and the other examples."""

import pytest

from tests.examples import (
    assert_release_reproduces,
    assert_validates,
    grade_examples,
    images_on_page,
)

NAME = "assignment01"
EXPECTED = {  # student: (score, status, words in the reason)
    "reference": (10, "graded", ""),
    "partial": (5, "graded", ""),
    "starter": (0, "cell_error", "NotImplementedError"),
    "raises": (0, "cell_error", "FileNotFoundError"),
    "hangs": (0, "timeout", "ran longer than 60 s"),
    "invalid": (0, "invalid", "not a valid notebook"),
}
CHECKS = {  # the partly right example: statistics, model and curve right; the rest wrong
    "partial": {"test_statistics": 2, "test_model_is_linear": 2, "test_training_history": 1,
                "test_accuracy_reported": 0, "test_predict_grades": 0, "test_hidden_accuracy": 0},
}


def test_release_reproduces_the_committed_starter(tmp_path):
    assert_release_reproduces(NAME, tmp_path)


@pytest.mark.slow
def test_validate_assignment01(data_home, tmp_path):
    assert_validates(NAME, data_home, tmp_path)


@pytest.mark.slow
def test_examples_get_the_expected_scores_and_reasons(data_home, tmp_path):
    grade_examples(NAME, data_home, tmp_path, EXPECTED, CHECKS)
    assert images_on_page(NAME, "reference", tmp_path) == 2  # training curve, predicted vs true
