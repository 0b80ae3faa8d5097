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
# every check's points of assignment01 to 03 (the written answers are the rubric's)
A01_FULL = {"test_means": 1, "test_minimums": 0.5, "test_maximums": 0.5, "test_model_is_linear": 1,
            "test_training_history": 1, "test_accuracy_reported": 1, "test_predict_grades": 1,
            "test_hidden_accuracy": 3}
A02_FULL = {"test_training_mean": 1, "test_training_std": 1, "test_normalize": 2,
            "test_model_is_linear": 1, "test_training_curves": 1, "test_hidden_error": 3}
A03_FULL = {"test_preprocess": 1, "test_regression": 1, "test_regression_accuracy": 1,
            "test_classifier_is_linear": 1, "test_training_curves": 1, "test_hidden_accuracy": 4}
# assignment05's checks after its lstm_step
NOTHING_ELSE = {"test_model_is_a_trained_lstm": 1, "test_learning_curves": 1,
                "test_hidden_accuracy": 4}
# assignment06's function checks
FUNCTIONS = {"test_energy": 1, "test_p_hidden": 0.5, "test_p_visible": 0.5, "test_sample": 0.5,
             "test_gibbs": 1}

ASSIGNMENTS = {a.name: a for a in (
    Assignment(
        name="assignment01",
        datasets=(),  # the grading data is generated, nothing to import
        limits={"cell_seconds": CELL_SECONDS},
        # the checks give 9 points, the staff the written answer's 1 (assignment.toml's rubric)
        expected={
            "reference": (9, "graded", ""),
            "other-style": (9, "graded", ""),
            "relu-output": (8, "graded", ""),
            "subclassed": (3, "graded", ""),
            "partial": (4, "graded", ""),
            "fit-fails": (5, "cell_error", "TypeError"),
            "starter": (0, "cell_error", "NotImplementedError"),
            "raises": (0, "cell_error", "FileNotFoundError"),
            "hangs": (0, "timeout", f"ran longer than {CELL_SECONDS} s"),
            "invalid": (0, "invalid", "not a valid notebook"),
        },
        checks={
            # a correct solution in other styles (vectorised NumPy, the functional API, tf.data,
            # its own validation split, np.rint): every check's points
            "other-style": A01_FULL,
            # one mistake, a relu on the output unit: charged once, by the linear check; its
            # predictions can be read, so the hidden accuracy is graded (0.89)
            "relu-output": {**A01_FULL, "test_model_is_linear": 0},
            # a correct, registered subclassed model: safe mode cannot load it, and every check
            # that needs it says so (test_assignment01_a_subclassed_model_is_told_to_use_keras_layers)
            "subclassed": {**A01_FULL, "test_model_is_linear": 0, "test_accuracy_reported": 0,
                           "test_predict_grades": 0, "test_hidden_accuracy": 0},
            # statistics, model and curve right (its fit records no val_loss: the given plot
            # cell copes)
            "partial": {**A01_FULL, "test_accuracy_reported": 0, "test_predict_grades": 0,
                        "test_hidden_accuracy": 0},
            # fit raises: every part that needs no trained model still scores; the hidden check
            # says why it cannot evaluate the model instead of plotting an untrained one
            "fit-fails": {**A01_FULL, "test_training_history": 0, "test_hidden_accuracy": 0},
        },
        reference_page={IMAGES: 2},  # training curve, predicted vs true
        untrained=("fit-fails", "test_hidden_accuracy"),
    ),
    Assignment(
        name="assignment02",  # Boston housing
        datasets=("boston_housing",),
        limits={"cell_seconds": CELL_SECONDS},
        # the checks give 9 points, the staff the written answers' 1 (assignment.toml's rubric)
        expected={
            "reference": (9, "graded", ""),
            "other-style": (9, "graded", ""),
            "relu-output": (8, "graded", ""),
            "starter": (0, "cell_error", "NotImplementedError"),
            "partial": (4.75, "graded", ""),
            "test-stats": (5, "graded", ""),
            "raises": (0, "cell_error", "FileNotFoundError"),
            "hangs": (0, "timeout", f"ran longer than {CELL_SECONDS} s"),
            "invalid": (0, "invalid", "not a valid notebook"),
        },
        checks={
            # a correct solution in other styles (np.std with ddof=1, NumPy ufuncs, the
            # functional API, tf.data, loss and metric objects): every check's points
            "other-style": A02_FULL,
            # one mistake, a relu on the output unit: charged once, by the linear check; its
            # predictions can be read, so the hidden error is graded
            "relu-output": {**A02_FULL, "test_model_is_linear": 0},
            "partial": {**A02_FULL, "test_normalize": 0, "test_hidden_error": 0.75},
            "test-stats": {**A02_FULL, "test_training_mean": 0, "test_training_std": 0,
                           "test_normalize": 0},
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
        # the checks give 9 points, the staff the written answer's 1 (assignment.toml's rubric)
        expected={
            "reference": (9, "graded", ""),
            "other-style": (9, "graded", ""),
            "sigmoid-output": (8, "graded", ""),
            "starter": (0, "cell_error", "NotImplementedError"),
            "partial": (5, "graded", ""),
            "labels-regression": (3.5, "cell_error", "NotImplementedError"),
            "raises": (1, "cell_error", "KeyError"),
            "hangs": (0, "timeout", f"ran longer than {CELL_SECONDS} s"),
            "invalid": (0, "invalid", "not a valid notebook"),
        },
        checks={
            # a correct solution in other styles (reshape(-1, 784), the functional API, tf.data,
            # one-hot labels, logits with from_logits=True): every check's points
            "other-style": A03_FULL,
            # one mistake, sigmoid for softmax: charged once, by the classifier check; its
            # answers (argmax) can be read, so the hidden accuracy is graded
            "sigmoid-output": {**A03_FULL, "test_classifier_is_linear": 0},
            "partial": {**A03_FULL, "test_regression_accuracy": 0, "test_hidden_accuracy": 1},
            "labels-regression": {**A03_FULL, "test_classifier_is_linear": 0,
                                  "test_training_curves": 0.5, "test_hidden_accuracy": 0},
            "raises": {**dict.fromkeys(A03_FULL, 0), "test_preprocess": 1},
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
        # other-style: tf.data, one-hot labels, 2 softmax units, its own Rescaling, 64 x 64 photos,
        # the functional API; trained briefly (26 s measured), it shows every other check takes it
        trained=("partial", "trains-on-validation", "other-style"),
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
        # other-style: the functional API, tf.data, logits with from_logits=True and a sigmoid
        # added after training, a gate-by-gate lstm_step; a smaller LSTM (MAXLEN 256, 32 units, 3
        # epochs: 54 s measured, 0.876 on the hidden reviews) that earns full marks
        trained=("gate-order", "partial", "other-style"),
        trained_limits=None,  # gate-order trains as the reference does
    ),
    Assignment(
        name="assignment06",  # an RBM that recommends films, MovieLens 100k
        datasets=("movielens",),
        # the reference's longest cell (training) takes about 10 s on two busy cores; the hanging
        # example spins for a minute, not the five the assignment allows
        limits={"total_seconds": 240, "cell_seconds": 60},
        # the checks give 9 points, the staff the written answer's 1 (assignment.toml's rubric)
        expected={
            "other-style": (9, "graded", ""),
            "gibbs-mask": (7, "graded", ""),
            "liked-above-4": (8, "graded", ""),
            "unmasked": (7.5, "graded", ""),
            "partial": (5, "graded", ""),
            "starter": (0, "cell_error", "NotImplementedError"),
            "raises": (5, "cell_error", "FileNotFoundError"),
            "hangs": (7, "timeout", "ran longer than 60 s"),
            "invalid": (0, "invalid", "not a valid notebook"),
        },
        checks={
            # a correct solution in another style (einsum, scipy's expit, shuffled batches,
            # np.select): every check's points
            "other-style": {**FUNCTIONS, "test_cd_step": 1.5, "test_liked": 1,
                            "test_reconstruction_error_falls": 1, "test_recommendations": 2},
            # only gibbs is wrong (it masks the 0s too, v <= 0): test_gibbs takes its point, and
            # test_cd_step, whose expectation is built from the student's own gibbs, gives its
            # points. What the broken chain does to training is the training's own result: the
            # model learns to call every film liked, so its reconstruction error rises (0.40 ->
            # 0.44), while its recommendations still beat popularity (1.18 of it)
            "gibbs-mask": {**FUNCTIONS, "test_gibbs": 0, "test_cd_step": 1.5, "test_liked": 1,
                           "test_reconstruction_error_falls": 0, "test_recommendations": 2},
            # only "liked" is wrong (5 stars only): charged once, at test_liked; its training
            # still beats popularity (1.13 of it measured)
            "liked-above-4": {**FUNCTIONS, "test_cd_step": 1.5, "test_liked": 0,
                              "test_reconstruction_error_falls": 1, "test_recommendations": 2},
            # only the mask is wrong: it loses exactly the cd_step check's points; its training,
            # which counts -1 in W, still recommends as well as popularity (1.02 of it; 1.0
            # earns full points)
            "unmasked": {**FUNCTIONS, "test_cd_step": 0, "test_liked": 1,
                         "test_reconstruction_error_falls": 1, "test_recommendations": 2},
            # energy without the hidden biases, no errors recorded, the slides' probabilities as
            # scores (about 0.4 of popularity, 0.7 earns the least points: none)
            "partial": {**FUNCTIONS, "test_energy": 0, "test_cd_step": 1.5, "test_liked": 1,
                        "test_reconstruction_error_falls": 0, "test_recommendations": 0},
            # every function right; it stops at reading the raw MovieLens file, before V
            "raises": {**FUNCTIONS, "test_cd_step": 1.5, "test_liked": 0,
                       "test_reconstruction_error_falls": 0, "test_recommendations": 0},
            # its training never ends: what it defined before the timeout scores, its errors so
            # far too
            "hangs": {**FUNCTIONS, "test_cd_step": 1.5, "test_liked": 1,
                      "test_reconstruction_error_falls": 1, "test_recommendations": 0},
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
def test_every_written_answer_has_a_rubric_item(assignment):
    """Each markdown cell the starter leaves for an answer ("YOUR ANSWER HERE") is what one of
    assignment.toml's [[rubric]] items shows the staff, and in the reference that item finds the
    model answer: no written answer goes ungraded."""
    import nbformat

    from grader.course.review import written_answer
    from grader.model.assignments import load_assignment

    loaded = load_assignment(REPO, assignment.name)
    starter = loaded.release_notebook.read_text(encoding="utf-8")
    reference = (loaded.root / "submissions" / "reference.ipynb").read_text(encoding="utf-8")
    asked = [c.source for c in nbformat.reads(starter, as_version=4).cells
             if c.cell_type == "markdown" and "YOUR ANSWER HERE" in c.source]
    assert asked and loaded.config.rubric, "the starter asks for written answers: add [[rubric]]"
    shown = {item.name: written_answer(starter, item.cell) for item in loaded.config.rubric}
    assert all(any(answer in text for text in shown.values()) for answer in asked), shown
    for item in loaded.config.rubric:
        model_answer = written_answer(reference, item.cell)
        assert model_answer and "YOUR ANSWER HERE" not in model_answer, (item.name, model_answer)


@pytest.mark.parametrize("assignment", each())
def test_the_test_limits_change_only_the_limits(assignment, tmp_path):
    assert_only_limits_change(assignment.name, tmp_path / "course", assignment.limits)


def _tier_bars(source: str) -> list[float]:
    """The thresholds of every `credit.tiers(value, [(threshold, fraction), ...], ...)` in a
    check file's SOURCE (the list, or a threshold in it, may be a module constant)."""
    import ast

    tree = ast.parse(source)
    constants = {target.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                 for target in node.targets if isinstance(target, ast.Name)}

    def value(node: ast.expr) -> Any:
        node = constants.get(node.id, node) if isinstance(node, ast.Name) else node
        return node.value if isinstance(node, ast.Constant) else node

    return [value(pair.elts[0])
            for call in ast.walk(tree) if isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute) and call.func.attr == "tiers"
            and len(call.args) > 1 and isinstance(pairs := value(call.args[1]), ast.List)
            for pair in pairs.elts if isinstance(pair, ast.Tuple)]


@pytest.mark.parametrize("assignment", each())
def test_the_starter_states_every_bar_and_restriction(assignment):
    """The starter's text names every threshold its checks grade against, and, where a model is
    graded (all but assignment06, whose RBM is NumPy), that models are built from Keras's
    built-in layers because the grader loads them in safe mode."""
    import nbformat

    from grader.model.assignments import load_assignment

    loaded = load_assignment(REPO, assignment.name)
    text = " ".join(c.source for c in nbformat.read(loaded.release_notebook, as_version=4).cells
                    if c.cell_type == "markdown")
    text = " ".join(text.split())
    bars = [bar for path in loaded.check_files() for bar in _tier_bars(path.read_text("utf-8"))]
    assert bars and [f"{bar:g}" for bar in bars if f"{bar:g}" not in text] == []
    if assignment.name != "assignment06":
        assert "built-in layers only" in text.lower() and "safe mode" in text, text[:3000]


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


@pytest.mark.slow
def test_assignment01_a_subclassed_model_is_told_to_use_keras_layers(graded):
    """A correct, registered subclassed model: safe mode cannot load it, and the public check
    says why and what to do, not Keras' advice to register the class (it is registered)."""
    examples = graded.examples("assignment01")
    message = examples.message("subclassed", "test_model_is_linear")
    assert message.startswith("your model uses the custom class GradeModel; build it from"
                              " Keras's built-in layers (Sequential or the functional API)"), message
    assert "register_keras_serializable" not in message, message


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
        "test_data_pipeline": 2, "test_model_is_a_trained_convnet": 1, "test_learning_curves": 1}
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


@pytest.mark.slow
def test_assignment04_a_solution_in_another_style_loses_nothing_for_its_style(graded):
    """tf.data, one-hot labels, two softmax units, its own Rescaling(1/255) and 64 x 64 photos:
    every check takes it; trained for seconds, only its accuracy is low, and that is graded."""
    trained = graded.trained("assignment04")
    found = trained.points("other-style")
    assert {k: v for k, v in found.items() if k != "test_hidden_accuracy"} == {
        "test_data_pipeline": 2, "test_model_is_a_trained_convnet": 1, "test_learning_curves": 1,
        "test_augmentation": 2}, found
    accuracy = trained.message("other-style", "test_hidden_accuracy")
    assert accuracy.startswith("accuracy on 500 unseen photos is"), accuracy


@pytest.mark.slow
def test_assignment05_a_solution_in_another_style_gets_full_marks(graded):
    trained = graded.trained("assignment05")
    assert trained.points("other-style") == {"test_lstm_step": 3, **NOTHING_ELSE}, {
        c.name: c.message for c in trained.results["other-style"].checks}


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
    assert found["test_model_is_a_trained_lstm"] == 1
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


class _Kernel:
    """A stand-in for the student's kernel: call_array runs FUNCTIONS here, array hands VALUES."""

    def __init__(self, functions=(), values=()):
        self.functions, self.values = dict(functions), dict(values)

    def call_array(self, name, *args):
        import numpy as np

        from grader.checks import StudentValueError

        if name not in self.functions:
            raise StudentValueError(f"{name} is not defined")
        return np.asarray(self.functions[name](*args), dtype=float)

    def array(self, name):
        return self.values[name]


def test_assignment06_a_gibbs_mistake_is_charged_at_test_gibbs_only():
    """A gibbs that masks the 0s too (v <= 0) fails test_gibbs; a cd_step that follows the
    contract on that gibbs passes test_cd_step: its expectation is built from the student's own
    gibbs, not the grader's."""
    from types import SimpleNamespace

    import numpy as np

    conftest, public = _check_module("", "conftest"), _check_module("public", "test_public")
    rbm = SimpleNamespace(**{name: getattr(conftest, name) for name in (
        "known", "energy", "p_hidden", "p_visible", "sample", "gibbs", "cd_step", "made_up")})

    def gibbs(v, W, a, b, k, rng):
        rng, start = np.random.default_rng(rng), v
        for _ in range(k):
            h = rbm.sample(rbm.p_hidden(rbm.known(v), W, b), rng)
            v = np.where(start <= 0, -1.0, rbm.sample(rbm.p_visible(h, W, a), rng))
        return v

    def cd_step_as_one_array(v, W, a, b, lr, k, rng):
        x0, xk = rbm.known(v), rbm.known(gibbs(v, W, a, b, k, rng))
        ph0, phk = rbm.p_hidden(x0, W, b), rbm.p_hidden(xk, W, b)
        return np.concatenate([(W + lr * (x0.T @ ph0 - xk.T @ phk) / len(v)).ravel(),
                               a + lr * np.mean(x0 - xk, axis=0), b + lr * np.mean(ph0 - phk, axis=0)])

    kernel = _Kernel({"gibbs": gibbs, "p_hidden": rbm.p_hidden,
                      "cd_step_as_one_array": cd_step_as_one_array})
    with pytest.raises(AssertionError, match=r"gibbs\(v, W, a, b, k=1, rng\).* is off"):
        public.test_gibbs(kernel, rbm)
    public.test_cd_step(kernel, rbm)


def test_assignment06_liked_as_five_stars_only_fails_the_check_that_reads_V():
    import numpy as np

    public = _check_module("public", "test_public")
    ratings = np.random.default_rng(3).integers(0, 6, (20, 30)).astype("float32")
    right = np.where(ratings >= 4, 1.0, np.where(ratings > 0, 0.0, -1.0))
    public.test_liked(_Kernel(values={"V": right}), (ratings, None))
    five_only = np.where(ratings > 4, 1.0, np.where(ratings > 0, 0.0, -1.0))
    fours = int((ratings == 4).sum())
    with pytest.raises(AssertionError, match=rf"V is off: {fours} of the {fours} entries 4 stars"
                                             r" are 0 instead of 1\."):
        public.test_liked(_Kernel(values={"V": five_only}), (ratings, None))
