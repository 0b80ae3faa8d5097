"""Helpers shared by assignment01's checks (trusted code: never shipped to students)."""

from __future__ import annotations

import numpy as np
import pytest

from grader import models


def _affine_error(model, rng: np.random.Generator) -> float:
    """How far MODEL is from affine on made-up course points."""
    u, v = rng.uniform(0, 40, size=(2, 64, 3))
    return models.affine_error(model, u, v, rng)


@pytest.fixture
def linear_problem():
    """Why a model is not linear ('' when it is)."""
    return models.linear_problem


@pytest.fixture
def affine_error():
    """How far a model's predictions are from an affine function."""
    return _affine_error
