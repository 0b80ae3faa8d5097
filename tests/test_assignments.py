"""The six assignments through the real pipeline, on the real data: each validates, and every
example gets its score.

One table, ASSIGNMENTS, holds what each assignment's examples must get; the common tests are
parametrized over it (ids: the assignment's name, so `-k assignment01` runs, and grades, only
assignment01), and the tests about one assignment alone are named after it.

WHAT IS GRADED ONCE, AND WHY. Running notebooks is what costs time, so every batch below is graded
once per run, by the first test that asks for it, and kept (`graded`, a session fixture keyed by
assignment) for every later test: a batch is never graded for an assignment none of the selected
tests asks about, and never twice.

- assignment01 to assignment03: all of the examples (assignments/NAME/submissions) in one `grader
  run` under a 30 s cell limit instead of the assignment's 60 (the hangs example spins for 30 s
  less; the longest cell of a reference takes about 10-16 s on two busy cores), and what `grader
  validate` demands is checked on that same batch's reference and starter.
- assignment04 to assignment06, whose references train for minutes: the reference trains once in
  the whole suite, in the real `grader validate` (reference and starter, the assignment's own
  limits), and its test reads the reference's feedback page. The other examples grade from a copy
  of the assignment whose assignment.toml has smaller limits (only the limits change), so that the
  hanging example spins for 30 s or a minute, not the 20 or 30 minutes a cell of the reference
  may take. assignment04's and assignment05's examples that train grade in a second batch: under
  larger test limits (assignment04's train for under 2 minutes each) or under the assignment's own
  (assignment05's gate-order, which must earn the accuracy points and so trains as the reference
  does, and partial, which trains briefly).

Elsewhere no test runs `grader validate` or `grader run` on a real assignment: the reference example
is the instructor notebook without its solution markers and the starter example is the released
notebook, so the batch's reference and starter stand for what `grader validate` grades (see
tests/examples.py). Tests that need no graded notebook (points add up, releases reproduce, no
hidden data reaches the kernel, the test limits change only the limits) stay fast; those that
grade are `slow`. assignment01's data is generated; the others need ../shared/datasets (they fail,
never skip, without it); CI has it.
"""

from __future__ import annotations

import html
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    assert_validates,
    grade_examples,
    hidden_data_to_kernel,
    import_real_data,
    validate,
)

Expected = dict[str, tuple[float, str, str]]  # student: (score, status, words in reason and page)
Points = dict[str, dict[str, float]]  # student: points of each check
IMAGES = "data:image/png;base64,"  # one plot embedded in a feedback page


@dataclass(frozen=True, eq=False)
class Assignment:
    """What one assignment's examples must get, and how they are graded in the tests."""

    name: str
    datasets: tuple[str, ...]  # imported from ../shared/datasets; none: the data is generated
    limits: dict[str, float]  # replace the assignment's [limits] for the `examples` batch
    expected: Expected  # the examples of the `examples` batch
    checks: Points  # where the example is about the checks
    # the reference trains for minutes: `grader validate` grades it (and the starter) once, and the
    # `examples` batch grades only EXPECTED's students; otherwise the batch grades every example
    # and stands for `grader validate`
    trains: bool = False
    reasons: dict[str, str] = field(default_factory=dict)  # student: more words in the reason
    # the reference's feedback page: how often each string occurs, words it shows; the check
    # whose message on the reference says "100% of the points"
    reference_page: dict[str, int] = field(default_factory=dict)
    reference_words: tuple[str, ...] = ()
    hidden_check: str | None = None
    untrained: tuple[str, str] | None = None  # (student, check): a model built, never trained
    trained: tuple[str, ...] = ()  # examples whose scores depend on training: their own batch
    trained_limits: dict[str, float] | None = None  # for that batch; None: the assignment's own


# The examples' cell limit for assignment01 to 03 instead of the assignments' 60 s: the hangs
# example spins for 30 s less, and the longest cell of a reference takes about 10-16 s on two busy
# cores.
CELL_SECONDS = 30
# assignment04's and 05's examples that do not train grade under these limits, so that the
# hanging example spins for 30 s, not the 30 (20) minutes the reference may.
QUICK_LIMITS = {"total_seconds": 120, "cell_seconds": 30}
# assignment05's checks after its lstm_step
NOTHING_ELSE = {"test_model_is_a_trained_lstm": 2, "test_learning_curves": 1,
                "test_hidden_accuracy": 4}
# assignment06's function checks
FUNCTIONS = {"test_energy": 1, "test_p_hidden": 1, "test_p_visible": 1, "test_sample": 1,
             "test_gibbs": 1}

ASSIGNMENTS = {a.name: a for a in (
    Assignment(
        name="assignment01",
        datasets=(),  # the grading data is generated, nothing to import
        limits={"cell_seconds": CELL_SECONDS},
        expected={
            "reference": (10, "graded", ""),
            "partial": (5, "graded", ""),
            "fit-fails": (6, "cell_error", "TypeError"),
            "starter": (0, "cell_error", "NotImplementedError"),
            "raises": (0, "cell_error", "FileNotFoundError"),
            "hangs": (0, "timeout", f"ran longer than {CELL_SECONDS} s"),
            "invalid": (0, "invalid", "not a valid notebook"),
        },
        checks={
            # statistics, model and curve right (its fit records no val_loss: the given plot
            # cell copes)
            "partial": {"test_means": 1, "test_minimums": 1, "test_maximums": 1,
                        "test_model_is_linear": 1, "test_training_history": 1,
                        "test_accuracy_reported": 0, "test_predict_grades": 0,
                        "test_hidden_accuracy": 0},
            # fit raises: every part that needs no trained model still scores; the hidden check
            # says why it cannot evaluate the model instead of plotting an untrained one
            "fit-fails": {"test_means": 1, "test_minimums": 1, "test_maximums": 1,
                          "test_model_is_linear": 1, "test_training_history": 0,
                          "test_accuracy_reported": 1, "test_predict_grades": 1,
                          "test_hidden_accuracy": 0},
        },
        reference_page={IMAGES: 2},  # training curve, predicted vs true
        untrained=("fit-fails", "test_hidden_accuracy"),
    ),
    Assignment(
        name="assignment02",  # Boston housing
        datasets=("boston_housing",),
        limits={"cell_seconds": CELL_SECONDS},
        expected={
            "reference": (10, "graded", ""),
            "starter": (0, "cell_error", "NotImplementedError"),
            "partial": (5, "graded", ""),
            "test-stats": (6, "graded", ""),
            "raises": (0, "cell_error", "FileNotFoundError"),
            "hangs": (0, "timeout", f"ran longer than {CELL_SECONDS} s"),
            "invalid": (0, "invalid", "not a valid notebook"),
        },
        checks={
            "partial": {"test_training_mean": 1, "test_training_std": 1, "test_normalize": 0,
                        "test_model_is_linear": 1, "test_training_curves": 1,
                        "test_hidden_error": 1},
            "test-stats": {"test_training_mean": 0, "test_training_std": 0, "test_normalize": 0,
                           "test_model_is_linear": 1, "test_training_curves": 1,
                           "test_hidden_error": 4},
        },
        reference_page={IMAGES: 2},  # training curves, predicted against true
        hidden_check="test_hidden_error",
        # raises: its model was built, but fit never ran; the hidden check says so instead of
        # plotting
        untrained=("raises", "test_hidden_error"),
    ),
    Assignment(
        name="assignment03",  # MNIST
        datasets=("mnist",),
        limits={"cell_seconds": CELL_SECONDS},
        expected={
            "reference": (10, "graded", ""),
            "starter": (0, "cell_error", "NotImplementedError"),
            "partial": (6, "graded", ""),
            "labels-regression": (4.5, "cell_error", "NotImplementedError"),
            "raises": (2, "cell_error", "KeyError"),
            "hangs": (0, "timeout", f"ran longer than {CELL_SECONDS} s"),
            "invalid": (0, "invalid", "not a valid notebook"),
        },
        checks={
            "partial": {"test_preprocess": 2, "test_regression": 1,
                        "test_regression_accuracy": 0, "test_classifier_is_linear": 1,
                        "test_training_curves": 1, "test_hidden_accuracy": 1},
            "labels-regression": {"test_preprocess": 2, "test_regression": 1,
                                  "test_regression_accuracy": 1,
                                  "test_classifier_is_linear": 0, "test_training_curves": 0.5,
                                  "test_hidden_accuracy": 0},
            "raises": {"test_preprocess": 2, "test_regression": 0,
                       "test_regression_accuracy": 0, "test_classifier_is_linear": 0,
                       "test_training_curves": 0, "test_hidden_accuracy": 0},
        },
        # regression box plot, training curves, confusion matrix, misclassified digits
        reference_page={IMAGES: 4},
        hidden_check="test_hidden_accuracy",
        # raises: its classifier was built, but fit never ran; no confusion matrix of an
        # untrained model
        untrained=("raises", "test_hidden_accuracy"),
    ),
    Assignment(
        name="assignment04",  # cats vs dogs, a convnet with data augmentation
        datasets=("cats_and_dogs",),
        limits=QUICK_LIMITS,
        expected={
            "starter": (0, "cell_error", "NotImplementedError"),
            "raises": (2, "cell_error", "ImportError"),
            "hangs": (0, "timeout", "ran longer than 30 s"),
            "invalid": (0, "invalid", "not a valid notebook"),
        },
        checks={
            # raises: its pipeline is right; it breaks at the slides' Keras 2 import, before any
            # model
            "raises": {"test_data_pipeline": 2, "test_model_is_a_trained_convnet": 0,
                       "test_learning_curves": 0, "test_augmentation": 0,
                       "test_hidden_accuracy": 0},
        },
        trains=True,
        reasons={"raises": "keras.preprocessing.image"},
        # learning curves, augmented photos, confusion matrix, the photos it got most wrong
        reference_page={IMAGES: 4},
        reference_words=("accuracy on 500 unseen photos is", "100% of the points"),
        trained=("partial", "trains-on-validation"),
        trained_limits={"total_seconds": 420, "cell_seconds": 240},  # they train < 2 min each
    ),
    Assignment(
        name="assignment05",  # IMDB sentiment with an LSTM, and one LSTM step in NumPy
        datasets=("imdb_reviews", "imdb_word_index"),
        limits=QUICK_LIMITS,
        expected={
            "starter": (0, "cell_error", "NotImplementedError"),
            "raises": (3, "cell_error", "ImportError"),
            "hangs": (3, "timeout", "ran longer than 30 s"),  # its lstm_step ran before the loop
            "invalid": (0, "invalid", "not a valid notebook"),
        },
        checks={
            # raises and hangs: their lstm_step is right and ran; they stop before any model
            "raises": {"test_lstm_step": 3, **dict.fromkeys(NOTHING_ELSE, 0)},
            "hangs": {"test_lstm_step": 3, **dict.fromkeys(NOTHING_ELSE, 0)},
        },
        trains=True,
        reasons={"raises": "CuDNNLSTM"},  # the slides' Keras 2 layer
        # learning curves and confusion matrix; the five reviews it got most wrong, as text
        reference_page={IMAGES: 2, "review read as": 5},
        reference_words=("accuracy on 25,000 unseen reviews is", "100% of the points"),
        trained=("gate-order", "partial"),
        trained_limits=None,  # gate-order trains as the reference does
    ),
    Assignment(
        name="assignment06",  # an RBM that recommends films, MovieLens 100k
        datasets=("movielens",),
        # the reference's longest cell (training) takes about 10 s on two busy cores; the hanging
        # example spins for a minute, not the five the assignment allows
        limits={"total_seconds": 240, "cell_seconds": 60},
        expected={
            "unmasked": (8, "graded", ""),
            "partial": (6, "graded", ""),
            "starter": (0, "cell_error", "NotImplementedError"),
            "raises": (7, "cell_error", "FileNotFoundError"),
            "hangs": (8, "timeout", "ran longer than 60 s"),
            "invalid": (0, "invalid", "not a valid notebook"),
        },
        checks={
            # only the mask is wrong: it loses exactly the cd_step check's points; its training,
            # which counts -1 in W, still recommends as well as popularity (1.02 of it; 1.0
            # earns full points)
            "unmasked": {**FUNCTIONS, "test_cd_step": 0, "test_reconstruction_error_falls": 1,
                         "test_recommendations": 2},
            # energy without the hidden biases, no errors recorded, the slides' probabilities as
            # scores (about 0.4 of popularity, 0.7 earns the least points: none)
            "partial": {**FUNCTIONS, "test_energy": 0, "test_cd_step": 2,
                        "test_reconstruction_error_falls": 0, "test_recommendations": 0},
            # every function right; it stops at reading the raw MovieLens file, before training
            "raises": {**FUNCTIONS, "test_cd_step": 2, "test_reconstruction_error_falls": 0,
                       "test_recommendations": 0},
            # its training never ends: what it defined before the timeout scores, its errors so
            # far too
            "hangs": {**FUNCTIONS, "test_cd_step": 2, "test_reconstruction_error_falls": 1,
                      "test_recommendations": 0},
        },
        trains=True,
        reference_page={IMAGES: 2},  # reconstruction error, precision bars
        # the recommended titles, escaped by the page (Schindler&#39;s List, ...)
        reference_words=("precision@10 relative to popularity", "100% of the points",
                         "What your RBM recommends to user 0", "Your scores recommend"),
    ),
)}


def each(where: Callable[[Assignment], bool] = lambda a: True,
         marks: Callable[[Assignment], Any] = lambda a: ()) -> list[Any]:
    """The assignments WHERE holds for, as parameters named after them, with MARKS(assignment)."""
    return [pytest.param(a, id=a.name, marks=marks(a)) for a in ASSIGNMENTS.values() if where(a)]


class Graded:
    """Every batch of the run, graded (or validated) by the first test that asks for it and kept
    for the others: one data cache, one `examples` batch, one `trained` batch and one `grader
    validate` per assignment at most."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._done: dict[tuple[str, str], Any] = {}

    def _once(self, kind: str, name: str, make: Callable[[Assignment], Any]) -> Any:
        """What MAKE made for NAME the first time; its failure, too, is kept and raised again
        (as a module fixture's is), so that a batch that failed is not graded again."""
        if (kind, name) not in self._done:
            try:
                self._done[kind, name] = make(ASSIGNMENTS[name])
            except BaseException as error:
                self._done[kind, name] = error
                raise
        made = self._done[kind, name]
        if isinstance(made, BaseException):
            raise made
        return made

    def _folder(self, name: str, kind: str) -> Path:
        return self._tmp.mktemp(f"{name}-{kind}")

    def data_home(self, name: str) -> Path:
        """A fresh dataset cache with the assignment's datasets imported from ../shared/datasets
        (none for assignment01, whose grading data is generated)."""
        return self._once("data-home", name, lambda a: import_real_data(self._tmp, *a.datasets)
                          if a.datasets else self._folder(name, "data-home"))

    def examples(self, name: str) -> Examples:
        """The `examples` batch: under the test limits, all examples, or those of EXPECTED where
        the reference trains (and is graded by `validated`)."""
        return self._once("examples", name, lambda a: grade_examples(
            name, self.data_home(name), self._folder(name, "examples"), limits=a.limits,
            students=a.expected if a.trains else None))

    def trained(self, name: str) -> Examples:
        """The examples that train, in one batch under the trained limits."""
        return self._once("trained", name, lambda a: grade_examples(
            name, self.data_home(name), self._folder(name, "trained"), limits=a.trained_limits,
            students=a.trained))

    def validated(self, name: str) -> Validated:
        """`grader validate NAME` on the real assignment, its own limits."""
        return self._once("validate", name, lambda a: validate(
            name, self.data_home(name), self._folder(name, "validate")))


@pytest.fixture(scope="session")
def graded(tmp_path_factory: pytest.TempPathFactory) -> Graded:
    """The run's batches, each graded once, lazily, keyed by assignment."""
    return Graded(tmp_path_factory)


@pytest.fixture
def examples(graded: Graded, assignment: Assignment) -> Examples:
    """The assignment's `examples` batch, graded once for every test that asks for it."""
    return graded.examples(assignment.name)


@pytest.fixture
def trained(graded: Graded, assignment: Assignment) -> Examples:
    """The assignment's examples that train, graded once for every test that asks for them."""
    return graded.trained(assignment.name)


def assert_reference_page(assignment: Assignment, page: str) -> None:
    """The reference's feedback page shows its plots and the expected words."""
    assert {s: page.count(s) for s in assignment.reference_page} == assignment.reference_page
    for words in assignment.reference_words:
        assert words in page, words


# What needs no graded notebook.

@pytest.mark.parametrize("assignment", each())
def test_the_checks_add_up_to_the_assignment_points(assignment):
    assert_points_add_up(assignment.name)


@pytest.mark.parametrize("assignment", each())
def test_no_check_sends_hidden_data_to_the_students_functions(assignment):
    assert_no_hidden_data_reaches_the_kernel(assignment.name)


@pytest.mark.parametrize("assignment", each())
def test_release_reproduces_the_committed_starter(assignment, tmp_path):
    assert_release_reproduces(assignment.name, tmp_path)


@pytest.mark.parametrize("assignment", each())
def test_the_reference_example_is_the_instructor_notebook(assignment):
    assert_reference_is_the_source(assignment.name)


@pytest.mark.parametrize("assignment", each())
def test_the_test_limits_change_only_the_limits(assignment, tmp_path):
    assert_only_limits_change(assignment.name, tmp_path / "course", assignment.limits)


# What the graded examples show, for every assignment.

@pytest.mark.slow
@pytest.mark.parametrize("assignment", each(marks=lambda a: (
    # the validate test trains the reference
    pytest.mark.timeout(VALIDATE_TIMEOUT) if a.trains else ())))
def test_validate(assignment, graded):
    if assignment.trains:  # the real `grader validate`, once; the reference's page
        validated = graded.validated(assignment.name)
        assert_valid(validated)
        assert_reference_page(assignment, validated.page)
    else:  # what `grader validate` demands, on the batch's reference and starter
        assert_validates(graded.examples(assignment.name))


@pytest.mark.slow
@pytest.mark.parametrize("assignment", each())
def test_examples_get_their_expected_scores(assignment, examples):
    assert_scores(examples, assignment.expected)


@pytest.mark.slow
@pytest.mark.parametrize("assignment", each())
def test_reasons_and_pages_say_what_went_wrong(assignment, examples):
    assert_reasons(examples, assignment.expected)
    for student, words in assignment.reasons.items():
        assert words in examples.results[student].reason, (student, words)


@pytest.mark.slow
@pytest.mark.parametrize("assignment", each())
def test_each_check_gives_its_points(assignment, examples):
    assert_check_points(examples, assignment.checks)


@pytest.mark.slow
@pytest.mark.parametrize("assignment", each(lambda a: not a.trains))
def test_the_reference_page_shows_its_plots_and_full_hidden_credit(assignment, examples):
    assert_reference_page(assignment, examples.page("reference"))
    if assignment.hidden_check is not None:
        hidden = examples.message("reference", assignment.hidden_check)
        assert "100% of the points" in hidden, hidden


@pytest.mark.slow
@pytest.mark.parametrize("assignment", each(lambda a: a.untrained is not None))
def test_a_model_that_was_never_trained_is_not_evaluated(assignment, examples):
    assert assignment.untrained is not None
    student, check = assignment.untrained
    unevaluated = examples.message(student, check)
    assert unevaluated.startswith("the model could not be evaluated: it was never trained"), (
        unevaluated)
    assert examples.images(student) == 0  # no plot of an untrained model


@pytest.mark.slow
@pytest.mark.parametrize("assignment", each(lambda a: bool(a.trained)))
def test_the_trained_examples_are_graded(assignment, trained):
    assert {s: r.status for s, r in trained.results.items()} == dict.fromkeys(
        assignment.trained, "graded"), {s: r.reason[:300] for s, r in trained.results.items()}


# assignment01

@pytest.mark.slow
def test_assignment01_the_summary_pairs_the_reference_with_its_faulty_copies_only(graded):
    """fit-fails, raises and hangs are the reference with one fault each: copied work, for the
    summary; the partial example and the starter pair with nobody."""
    examples = graded.examples("assignment01")
    assert re.fullmatch(r"[0-9a-f]{64}", examples.results["reference"].weights["model"])
    summary = (examples.folder / "reports" / "assignment01" / "index.html").read_text(
        encoding="utf-8")
    listed = set(re.findall(r"<td>([\w-]+) · ([\w-]+)</td>", summary))
    assert {("fit-fails", "reference"), ("hangs", "reference"), ("raises", "reference")} <= listed
    assert not {"partial", "starter", "invalid"} & {s for pair in listed for s in pair}
    assert "reference" not in examples.page("fit-fails")


def test_assignment01_the_hidden_data_check_catches_hidden_rows_sent_to_a_student_function():
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


# assignment02

@pytest.mark.slow
def test_assignment02_statistics_of_the_wrong_houses_are_named(graded):
    examples = graded.examples("assignment02")
    assert "the mean of the validation houses" in examples.message("test-stats", "test_training_mean")
    assert "the std of the validation houses" in examples.message("test-stats", "test_training_std")


# assignment04

@pytest.mark.slow
def test_assignment04_the_example_without_augmentation_loses_the_augmentation_points(graded):
    trained = graded.trained("assignment04")
    found = trained.points("partial")
    assert found["test_augmentation"] == 0
    assert "hardly changes the photos" in trained.message("partial", "test_augmentation")
    assert {k: found[k] for k in ("test_data_pipeline", "test_model_is_a_trained_convnet",
                                  "test_learning_curves")} == {
        "test_data_pipeline": 2, "test_model_is_a_trained_convnet": 2, "test_learning_curves": 1}
    # it overfits: some credit for accuracy, never full points, and no sign of the validation
    assert 0 < found["test_hidden_accuracy"] < 3, trained.message("partial", "test_hidden_accuracy")


@pytest.mark.slow
def test_assignment04_training_on_the_validation_photos_loses_the_accuracy_points(graded):
    trained = graded.trained("assignment04")
    cheat = "trains-on-validation"
    found = trained.points(cheat)
    assert found["test_hidden_accuracy"] == 0
    assert "trained on the validation photos" in trained.message(cheat, "test_hidden_accuracy")
    # the slides' ImageDataGenerator is accepted: its pipeline and its augment(images) count
    assert found["test_data_pipeline"] == 2 and found["test_augmentation"] == 2, found


# assignment05

@pytest.mark.slow
def test_assignment05_gates_in_the_wrong_order_lose_exactly_the_lstm_step_points(graded):
    trained = graded.trained("assignment05")
    assert trained.points("gate-order") == {"test_lstm_step": 0, **NOTHING_ELSE}
    message = trained.message("gate-order", "test_lstm_step")
    assert "h off by up to" in message and "c off by up to" in message, message
    assert "the order i, c, f, o; Keras' columns are i, f, c, o" in message, message


@pytest.mark.slow
def test_assignment05_the_partial_example_loses_the_points_of_what_it_left_out(graded):
    trained = graded.trained("assignment05")
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
def test_assignment05_the_five_worst_reviews_are_cut_and_escaped(graded):
    page = graded.trained("assignment05").page("gate-order")
    shown = page.split("most confidently wrong about</em></p><pre>")[1].split("</pre>")[0]
    reviews = [part.split(":\n", 1)[1].split("\n\n")[0]
               for part in shown.split("review read as")[1:]]
    texts = [html.unescape(review) for review in reviews]
    assert len(texts) == 5 and all(len(text) <= 300 for text in texts), texts
    assert any(len(text) == 300 and text.endswith("...") for text in texts), texts
    # the reviews' quotes and <br /> tags reach the page escaped, never as markup
    assert "<" not in shown and '"' not in shown and "&#34;" in shown, shown
    assert "<br" not in "".join(texts), texts


# assignment06

@pytest.mark.slow
def test_assignment06_a_mask_that_counts_unrated_entries_is_named(graded):
    message = graded.examples("assignment06").message("unmasked", "test_cd_step")
    assert message.startswith("unrated entries (-1) changed W: they must not count"), message


@pytest.mark.slow
def test_assignment06_the_slides_probabilities_alone_lose_to_popularity(graded):
    examples = graded.examples("assignment06")
    message = examples.message("partial", "test_recommendations")
    assert "below 0.7 needed for any points" in message, message
    assert "energy(v, h, W, a, b)" in examples.message("partial", "test_energy")


def _check_module(part: str, name: str):
    """One of assignment06's check files, imported here without running pytest on it."""
    import importlib.util

    checks = REPO / "assignments" / "assignment06" / "checks"
    path = checks / part / f"{name}.py" if part else checks / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"a06_{part}_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():  # its points marker is the grader's, unknown to this pytest
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        spec.loader.exec_module(module)
    return module


class _Scores:
    """A stand-in for the student's kernel that hands over one `scores` array."""

    def __init__(self, scores):
        self.scores = scores

    def array(self, name):
        assert name == "scores"
        return self.scores


def test_assignment06_scores_of_the_wrong_shape_or_with_nan_get_a_one_line_message():
    import numpy as np

    from grader.checks import StudentValueError

    hidden = _check_module("hidden", "test_hidden")
    with pytest.raises(StudentValueError, match=r"shape \(943, 1682\).*found \(1682, 943\)"):
        hidden._scores(_Scores(np.zeros((1682, 943))), (943, 1682))
    broken = np.zeros((943, 1682))
    broken[3, :5] = np.nan
    with pytest.raises(StudentValueError, match="holds 5 NaN or infinite values"):
        hidden._scores(_Scores(broken), (943, 1682))


def test_assignment06_a_film_nobody_in_the_batch_rated_tells_a_masked_update_from_an_unmasked_one():
    import numpy as np

    conftest = _check_module("", "conftest")
    x = conftest.made_up(11, empty_column=True)
    W, a, _ = conftest.cd_step(x.v, x.W, x.a, x.b, 0.5, 1, np.random.default_rng(11))
    assert np.array_equal(W[-1], x.W[-1]) and a[-1] == x.a[-1]
    # the unmasked example's statistics: the raw batches, -1 included
    vk = conftest.gibbs(x.v, x.W, x.a, x.b, 1, np.random.default_rng(11))
    ph0, phk = conftest.p_hidden(x.v, x.W, x.b), conftest.p_hidden(vk, x.W, x.b)
    unmasked = x.W + 0.5 * (x.v.T @ ph0 - vk.T @ phk) / len(x.v)
    assert np.abs(unmasked[-1] - x.W[-1]).max() > 1e-3
