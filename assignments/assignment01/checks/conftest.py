"""Helpers shared by assignment01's checks (trusted code: never shipped to students)."""

from __future__ import annotations

import numpy as np
import pytest


def _linear_problem(model) -> str:
    """Why MODEL is not linear, or '' when it is: one Dense layer without activation, after at
    most some affine scaling (Normalization, Rescaling)."""
    import keras

    affine = (keras.layers.InputLayer, keras.layers.Normalization, keras.layers.Rescaling)
    dense = [layer for layer in model.layers if not isinstance(layer, affine)]
    for layer in dense:
        if not isinstance(layer, keras.layers.Dense):
            return f"it has a {type(layer).__name__} layer; a linear model has only one Dense layer"
        activation = getattr(layer.activation, "__name__", str(layer.activation))
        if activation != "linear":
            return f"its Dense layer uses the {activation} activation; a linear model uses none"
    if len(dense) != 1:
        return f"it has {len(dense)} Dense layers; a linear model has exactly one, with no hidden layer"
    return ""


def _affine_error(model, rng: np.random.Generator) -> float:
    """How far MODEL is from affine: |f(a u + (1-a) v) - (a f(u) + (1-a) f(v))|, largest."""
    u = rng.uniform(0, 40, size=(64, 3)).astype("float32")
    v = rng.uniform(0, 40, size=(64, 3)).astype("float32")
    a = rng.uniform(-1, 2, size=(64, 1)).astype("float32")
    mix = model.predict(a * u + (1 - a) * v, verbose=0)
    return float(np.max(np.abs(mix - (a * model.predict(u, verbose=0) + (1 - a) * model.predict(v, verbose=0)))))


@pytest.fixture
def linear_problem():
    """Why a model is not linear ('' when it is)."""
    return _linear_problem


@pytest.fixture
def affine_error():
    """How far a model's predictions are from an affine function."""
    return _affine_error
