"""Helpers shared by assignment01's checks (trusted code: never shipped to students)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from grader import checks

MAXIMUM_POINTS = np.array([30.0, 30.0, 40.0])  # exercises, project, exam


def _made_up_points(n: int, seed: int) -> np.ndarray:
    """N students who exist nowhere: points uniform over each part's range."""
    return np.random.default_rng(seed).uniform(0, MAXIMUM_POINTS, size=(n, 3))


def _affine_error(model, rng: np.random.Generator) -> float:
    """How far MODEL is from affine on made-up course points."""
    u, v = rng.uniform(0, 40, size=(2, 64, 3))
    return checks.affine_error(model, u, v, rng)


# how a loader's message names the class it could not load: Keras' "Could not locate class 'X'",
# or "custom class X"
_CUSTOM_CLASS = re.compile(r"(?:locate class|custom class(?:es)?)\W+([A-Za-z_]\w*)")


def _keras_model(submission, name: str):
    """The student's model NAME; a model the grader cannot load safely because it uses a class of
    the student's own fails with what to do instead, whichever check loads it first."""
    try:
        return submission.model(name)
    except checks.StudentValueError as exc:
        found = _CUSTOM_CLASS.search(str(exc))
        if not found:
            raise
        raise checks.StudentValueError(
            f"your model uses the custom class {found[1]}; build it from Keras's built-in layers"
            " (Sequential or the functional API) so it can be graded: the grader loads models"
            " in safe mode, which runs none of your code") from None


@pytest.fixture
def keras_model():
    """The student's model by name, with a message that says what to do when it uses a custom
    class (a subclassed model or layer)."""
    return _keras_model


@pytest.fixture
def made_up_points():
    """Made-up students' points: what the checks give the student's functions (never hidden
    rows)."""
    return _made_up_points


@pytest.fixture
def affine_error():
    """How far a model's predictions are from an affine function."""
    return _affine_error
