"""assignment06 (an RBM that recommends films, MovieLens 100k) on the real data.

`grader validate` (reference and starter, the assignment's own limits) is one module fixture, and
its test reads the reference's feedback page. The other examples grade in one batch from a copy of
the assignment whose assignment.toml has smaller limits (only the limits changed), so that the
hanging example spins for a minute, not the five the assignment allows. Skipped only where
../shared/datasets is absent; CI has it.
"""

from __future__ import annotations

import warnings
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

NAME = "assignment06"
ASSIGNMENT = REPO / "assignments" / NAME
# The reference's longest cell (training) takes about 10 s on two busy cores.
LIMITS: dict[str, float] = {"total_seconds": 240, "cell_seconds": 60}
EXPECTED = {  # student: (score, status, words in the reason and on the page)
    "unmasked": (8, "graded", ""),
    "partial": (6, "graded", ""),
    "starter": (0, "cell_error", "NotImplementedError"),
    "raises": (7, "cell_error", "FileNotFoundError"),
    "hangs": (8, "timeout", "ran longer than 60 s"),
    "invalid": (0, "invalid", "not a valid notebook"),
}
FUNCTIONS = {"test_energy": 1, "test_p_hidden": 1, "test_p_visible": 1, "test_sample": 1,
             "test_gibbs": 1}
CHECKS = {  # student: points of each check
    # only the mask is wrong: it loses exactly the cd_step check's points; its training, which
    # counts -1 in W, still recommends as well as popularity (1.02 of it; 1.0 earns full points)
    "unmasked": {**FUNCTIONS, "test_cd_step": 0, "test_reconstruction_error_falls": 1,
                 "test_recommendations": 2},
    # energy without the hidden biases, no errors recorded, the slides' probabilities as scores
    # (about 0.4 of popularity, 0.7 earns the least points: none)
    "partial": {**FUNCTIONS, "test_energy": 0, "test_cd_step": 2,
                "test_reconstruction_error_falls": 0, "test_recommendations": 0},
    # every function right; it stops at reading the raw MovieLens file, before training
    "raises": {**FUNCTIONS, "test_cd_step": 2, "test_reconstruction_error_falls": 0,
               "test_recommendations": 0},
    # its training never ends: what it defined before the timeout scores, its errors so far too
    "hangs": {**FUNCTIONS, "test_cd_step": 2, "test_reconstruction_error_falls": 1,
              "test_recommendations": 0},
}


@pytest.fixture(scope="module")
def data_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh dataset cache with movielens imported from ../shared/datasets."""
    return import_real_data(tmp_path_factory, "movielens")


@pytest.fixture(scope="module")
def examples(data_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Examples:
    """The examples other than the reference, graded in one batch under LIMITS."""
    return grade_examples(NAME, data_home, tmp_path_factory.mktemp("examples"), limits=LIMITS,
                          students=EXPECTED)


@pytest.fixture(scope="module")
def validated(data_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Validated:
    """`grader validate assignment06`, once for the module."""
    return validate(NAME, data_home, tmp_path_factory.mktemp("validate"))


def test_the_checks_add_up_to_the_assignment_points():
    assert_points_add_up(NAME)


def test_no_check_sends_hidden_data_to_the_students_functions():
    assert_no_hidden_data_reaches_the_kernel(NAME)


def test_release_reproduces_the_committed_starter(tmp_path):
    assert_release_reproduces(NAME, tmp_path)


def test_the_reference_example_is_the_instructor_notebook():
    assert_reference_is_the_source(NAME)


def test_the_test_limits_change_only_the_limits(tmp_path):
    assert_only_limits_change(NAME, tmp_path / "course", LIMITS)


@pytest.mark.slow
@pytest.mark.timeout(VALIDATE_TIMEOUT)  # the validated fixture trains the reference
def test_validate_gives_the_reference_full_points(validated):
    assert_valid(validated)
    page = validated.page
    assert "precision@10 relative to popularity" in page and "100% of the points" in page
    # the recommended titles, escaped by the page (Schindler&#39;s List, ...)
    assert "What your RBM recommends to user 0" in page and "Your scores recommend" in page
    assert page.count("data:image/png;base64,") == 2  # reconstruction error, precision bars


@pytest.mark.slow
def test_the_examples_get_their_expected_scores(examples):
    assert_scores(examples, EXPECTED)
    assert_reasons(examples, EXPECTED)


@pytest.mark.slow
def test_each_check_gives_its_points(examples):
    assert_check_points(examples, CHECKS)


@pytest.mark.slow
def test_a_mask_that_counts_unrated_entries_is_named(examples):
    message = examples.message("unmasked", "test_cd_step")
    assert message.startswith("unrated entries (-1) changed W: they must not count"), message


@pytest.mark.slow
def test_the_slides_probabilities_alone_lose_to_popularity(examples):
    message = examples.message("partial", "test_recommendations")
    assert "below 0.7 needed for any points" in message, message
    assert "energy(v, h, W, a, b)" in examples.message("partial", "test_energy")


def _check_module(part: str, name: str):
    """One of the assignment's check files, imported here without running pytest on it."""
    import importlib.util

    path = ASSIGNMENT / "checks" / part / f"{name}.py" if part else ASSIGNMENT / "checks" / f"{name}.py"
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


def test_scores_of_the_wrong_shape_or_with_nan_get_a_one_line_message():
    import numpy as np

    from grader.checks import StudentValueError

    hidden = _check_module("hidden", "test_hidden")
    with pytest.raises(StudentValueError, match=r"shape \(943, 1682\).*found \(1682, 943\)"):
        hidden._scores(_Scores(np.zeros((1682, 943))), (943, 1682))
    broken = np.zeros((943, 1682))
    broken[3, :5] = np.nan
    with pytest.raises(StudentValueError, match="holds 5 NaN or infinite values"):
        hidden._scores(_Scores(broken), (943, 1682))


def test_a_film_nobody_in_the_batch_rated_tells_a_masked_update_from_an_unmasked_one():
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
