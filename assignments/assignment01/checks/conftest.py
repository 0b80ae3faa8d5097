"""Helpers shared by assignment01's checks (trusted code: never shipped to students)."""

from __future__ import annotations

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


@pytest.fixture
def made_up_points():
    """Made-up students' points: what the checks give the student's functions (never hidden
    rows)."""
    return _made_up_points


@pytest.fixture
def affine_error():
    """How far a model's predictions are from an affine function."""
    return _affine_error
