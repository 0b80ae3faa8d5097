"""assignment04 (cats vs dogs, a convnet with data augmentation) on the real data.

The full reference trains once in the whole suite: `grader validate` (reference and starter, the
assignment's own limits) is one module fixture, and its test reads the reference's feedback page.
The other examples grade in two batches from copies of the assignment whose assignment.toml has
smaller limits (only the limits changed): those that train briefly, and those that do not, so that
the hanging example does not wait out the 30-minute cell limit the reference's training needs.
Skipped only where ../shared/datasets is absent; CI has it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.examples import (
    REPO,
    VALIDATE_TIMEOUT,
    Examples,
    Validated,
    assert_check_points,
    assert_no_hidden_data_reaches_the_kernel,
    assert_only_limits_change,
    assert_points_add_up,
    assert_reasons,
    assert_release_reproduces,
    assert_scores,
    assert_valid,
    grade_examples,
    import_real_data,
    validate,
)

NAME = "assignment04"
ASSIGNMENT = REPO / "assignments" / NAME
# The examples that train (< 2 minutes each) grade under these limits, those that do not under
# QUICK_LIMITS, so that the hanging example spins for 30 s, not the 30 minutes the reference may.
TRAINED_LIMITS = {"total_seconds": 420, "cell_seconds": 240}
QUICK_LIMITS = {"total_seconds": 120, "cell_seconds": 30}
QUICK = {  # student: (score, status, words in the reason and on the page)
    "starter": (0, "cell_error", "NotImplementedError"),
    "raises": (2, "cell_error", "ImportError"),
    "hangs": (0, "timeout", "ran longer than 30 s"),
    "invalid": (0, "invalid", "not a valid notebook"),
}
TRAINED = ("partial", "trains-on-validation")  # their scores depend on training


@pytest.fixture(scope="module")
def data_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh dataset cache with cats_and_dogs imported from ../shared/datasets."""
    return import_real_data(tmp_path_factory, "cats_and_dogs")


@pytest.fixture(scope="module")
def trained(data_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Examples:
    """The examples that train briefly, graded in one batch under TRAINED_LIMITS."""
    return grade_examples(NAME, data_home, tmp_path_factory.mktemp("trained"),
                          limits=TRAINED_LIMITS, students=TRAINED)


@pytest.fixture(scope="module")
def quick(data_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Examples:
    """The examples that do not train, graded in one batch under QUICK_LIMITS."""
    return grade_examples(NAME, data_home, tmp_path_factory.mktemp("quick"), limits=QUICK_LIMITS,
                          students=QUICK)


@pytest.fixture(scope="module")
def validated(data_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Validated:
    """`grader validate assignment04`, once for the module."""
    return validate(NAME, data_home, tmp_path_factory.mktemp("validate"))


def test_the_checks_add_up_to_the_assignment_points():
    assert_points_add_up(NAME)


def test_no_check_sends_hidden_data_to_the_students_functions():
    assert_no_hidden_data_reaches_the_kernel(NAME)


def test_release_reproduces_the_committed_starter(tmp_path):
    assert_release_reproduces(NAME, tmp_path)


def test_the_test_limits_change_only_the_limits(tmp_path):
    assert_only_limits_change(NAME, tmp_path / "course", QUICK_LIMITS)


@pytest.mark.slow
@pytest.mark.timeout(VALIDATE_TIMEOUT)  # the validated fixture trains the reference
def test_validate_trains_the_reference_to_full_points(validated):
    assert_valid(validated)
    page = validated.page
    assert "accuracy on 500 unseen photos is" in page and "100% of the points" in page
    # learning curves, augmented photos, confusion matrix, the photos it got most wrong
    assert page.count("data:image/png;base64,") == 4


@pytest.mark.slow
def test_the_quick_examples_get_their_expected_scores(quick):
    assert_scores(quick, QUICK)
    assert_reasons(quick, QUICK)
    # raises: its pipeline is right; it breaks at the slides' Keras 2 import, before any model
    assert_check_points(quick, {"raises": {
        "test_data_pipeline": 2, "test_model_is_a_trained_convnet": 0, "test_learning_curves": 0,
        "test_augmentation": 0, "test_hidden_accuracy": 0}})
    assert "keras.preprocessing.image" in quick.results["raises"].reason


@pytest.mark.slow
def test_the_trained_examples_are_graded(trained):
    assert {s: r.status for s, r in trained.results.items()} == dict.fromkeys(TRAINED, "graded"), {
        s: r.reason[:300] for s, r in trained.results.items()}


@pytest.mark.slow
def test_the_example_without_augmentation_loses_the_augmentation_points(trained):
    found = trained.points("partial")
    assert found["test_augmentation"] == 0
    assert "hardly changes the photos" in trained.message("partial", "test_augmentation")
    assert {k: found[k] for k in ("test_data_pipeline", "test_model_is_a_trained_convnet",
                                  "test_learning_curves")} == {
        "test_data_pipeline": 2, "test_model_is_a_trained_convnet": 2, "test_learning_curves": 1}
    # it overfits: some credit for accuracy, never full points, and no sign of the validation
    assert 0 < found["test_hidden_accuracy"] < 3, trained.message("partial", "test_hidden_accuracy")


@pytest.mark.slow
def test_training_on_the_validation_photos_loses_the_accuracy_points(trained):
    cheat = "trains-on-validation"
    found = trained.points(cheat)
    assert found["test_hidden_accuracy"] == 0
    assert "trained on the validation photos" in trained.message(cheat, "test_hidden_accuracy")
    # the slides' ImageDataGenerator is accepted: its pipeline and its augment(images) count
    assert found["test_data_pipeline"] == 2 and found["test_augmentation"] == 2, found
