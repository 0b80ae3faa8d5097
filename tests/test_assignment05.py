"""assignment05 (IMDB sentiment with an LSTM, and one LSTM step in NumPy) on the real data.

The reference trains once in the whole suite: `grader validate` (reference and starter, the
assignment's own limits) is one module fixture, and its test reads the reference's feedback page.
The other examples grade in two batches: those that train (gate-order, which must earn the
accuracy points and so trains as the reference does, and partial, which trains briefly) under the
assignment's limits, and those that do not from a copy of the assignment whose assignment.toml has
smaller limits (only the limits changed), so that the hanging example spins for 30 s, not the 20
minutes a cell may take. Skipped only where
../shared/datasets is absent; CI has it.
"""

from __future__ import annotations

import html
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
    assert_reference_is_the_source,
    assert_release_reproduces,
    assert_scores,
    assert_valid,
    grade_examples,
    import_real_data,
    validate,
)

NAME = "assignment05"
ASSIGNMENT = REPO / "assignments" / NAME
QUICK_LIMITS = {"total_seconds": 120, "cell_seconds": 30}
QUICK = {  # student: (score, status, words in the reason and on the page)
    "starter": (0, "cell_error", "NotImplementedError"),
    "raises": (3, "cell_error", "ImportError"),
    "hangs": (3, "timeout", "ran longer than 30 s"),  # its lstm_step ran before the loop
    "invalid": (0, "invalid", "not a valid notebook"),
}
TRAINED = ("gate-order", "partial")  # their scores depend on training
NOTHING_ELSE = {"test_model_is_a_trained_lstm": 2, "test_learning_curves": 1,
                "test_hidden_accuracy": 4}


@pytest.fixture(scope="module")
def data_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh dataset cache with the IMDB reviews and word index imported from ../shared/datasets."""
    return import_real_data(tmp_path_factory, "imdb_reviews", "imdb_word_index")


@pytest.fixture(scope="module")
def trained(data_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Examples:
    """The examples that train, graded in one batch under the assignment's limits."""
    return grade_examples(NAME, data_home, tmp_path_factory.mktemp("trained"), students=TRAINED)


@pytest.fixture(scope="module")
def quick(data_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Examples:
    """The examples that do not train, graded in one batch under QUICK_LIMITS."""
    return grade_examples(NAME, data_home, tmp_path_factory.mktemp("quick"), limits=QUICK_LIMITS,
                          students=QUICK)


@pytest.fixture(scope="module")
def validated(data_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Validated:
    """`grader validate assignment05`, once for the module."""
    return validate(NAME, data_home, tmp_path_factory.mktemp("validate"))


def test_the_checks_add_up_to_the_assignment_points():
    assert_points_add_up(NAME)


def test_no_check_sends_hidden_data_to_the_students_functions():
    assert_no_hidden_data_reaches_the_kernel(NAME)


def test_release_reproduces_the_committed_starter(tmp_path):
    assert_release_reproduces(NAME, tmp_path)


def test_the_reference_is_the_instructor_notebook():
    assert_reference_is_the_source(NAME)


def test_the_test_limits_change_only_the_limits(tmp_path):
    assert_only_limits_change(NAME, tmp_path / "course", QUICK_LIMITS)


@pytest.mark.slow
@pytest.mark.timeout(VALIDATE_TIMEOUT)  # the validated fixture trains the reference
def test_validate_trains_the_reference_to_full_points(validated):
    assert_valid(validated)
    page = validated.page
    assert "accuracy on 25,000 unseen reviews is" in page and "100% of the points" in page
    # learning curves and confusion matrix; the five reviews it got most wrong, as text
    assert page.count("data:image/png;base64,") == 2
    assert page.count("review read as") == 5


@pytest.mark.slow
def test_the_quick_examples_get_their_expected_scores(quick):
    assert_scores(quick, QUICK)
    assert_reasons(quick, QUICK)
    # raises and hangs: their lstm_step is right and ran; they stop before any model
    nothing_else = {"test_lstm_step": 3, **dict.fromkeys(NOTHING_ELSE, 0)}
    assert_check_points(quick, {"raises": nothing_else, "hangs": nothing_else})
    assert "CuDNNLSTM" in quick.results["raises"].reason  # the slides' Keras 2 layer


@pytest.mark.slow
def test_the_trained_examples_are_graded(trained):
    assert {s: r.status for s, r in trained.results.items()} == dict.fromkeys(TRAINED, "graded"), {
        s: r.reason[:300] for s, r in trained.results.items()}


@pytest.mark.slow
def test_gates_in_the_wrong_order_lose_exactly_the_lstm_step_points(trained):
    assert trained.points("gate-order") == {"test_lstm_step": 0, **NOTHING_ELSE}
    message = trained.message("gate-order", "test_lstm_step")
    assert "h off by up to" in message and "c off by up to" in message, message
    assert "the order i, c, f, o; Keras' columns are i, f, c, o" in message, message


@pytest.mark.slow
def test_the_partial_example_loses_the_points_of_what_it_left_out(trained):
    found = trained.points("partial")
    # h = o * c without the tanh: h is off, c right, and the message says so
    assert found["test_lstm_step"] == 0
    assert "h is off while c is right" in trained.message("partial", "test_lstm_step")
    # its TextVectorization model is graded on the raw hidden texts
    assert found["test_model_is_a_trained_lstm"] == 2
    # fit without validation: no val_loss to plot
    assert found["test_learning_curves"] == 0
    assert "val_loss" in trained.message("partial", "test_learning_curves")
    # 2 epochs on 10,000 reviews: some credit for accuracy, never full points
    assert 0 < found["test_hidden_accuracy"] < 4, trained.message("partial", "test_hidden_accuracy")


@pytest.mark.slow
def test_the_five_worst_reviews_are_cut_and_escaped(trained):
    page = trained.page("gate-order")
    shown = page.split("most confidently wrong about</em></p><pre>")[1].split("</pre>")[0]
    reviews = [part.split(":\n", 1)[1].split("\n\n")[0]
               for part in shown.split("review read as")[1:]]
    texts = [html.unescape(review) for review in reviews]
    assert len(texts) == 5 and all(len(text) <= 300 for text in texts), texts
    assert any(len(text) == 300 and text.endswith("...") for text in texts), texts
    # the reviews' quotes and <br /> tags reach the page escaped, never as markup
    assert "<" not in shown and '"' not in shown and "&#34;" in shown, shown
    assert "<br" not in "".join(texts), texts
