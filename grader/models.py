"""What checks ask of a student's Keras model, loaded in the trusted process."""

from __future__ import annotations

from typing import Any

import numpy as np

_AFFINE_LAYERS = ("InputLayer", "Normalization", "Rescaling")


def linear_problem(model: Any) -> str:
    """Why MODEL is not linear, or '' when it is: one Dense layer without activation, after at
    most some affine scaling (Normalization, Rescaling)."""
    import keras

    affine = tuple(getattr(keras.layers, name) for name in _AFFINE_LAYERS)
    dense = [layer for layer in model.layers if not isinstance(layer, affine)]
    for layer in dense:
        if not isinstance(layer, keras.layers.Dense):
            return f"it has a {type(layer).__name__} layer; a linear model has only one Dense layer"
        activation = getattr(layer.activation, "__name__", str(layer.activation))
        if activation != "linear":
            return f"its Dense layer uses the {activation} activation; a linear model uses none"
    if len(dense) != 1:
        return f"it has {len(dense)} Dense layers; a linear model has exactly one, no hidden layer"
    return ""


def untrained(model: Any) -> bool:
    """Whether MODEL's Dense layers still have the zero biases Keras starts them with."""
    import keras

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    return bool(dense) and all(
        layer.use_bias and not np.any(layer.get_weights()[1]) for layer in dense)


def affine_error(model: Any, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> float:
    """How far MODEL is from affine on inputs U and V: the largest
    |f(a u + (1-a) v) - (a f(u) + (1-a) f(v))| over random a in [-1, 2]."""
    a = rng.uniform(-1, 2, size=(len(u), 1)).astype("float32")
    u, v = u.astype("float32"), v.astype("float32")
    mix = model.predict(a * u + (1 - a) * v, verbose=0)
    ends = a * model.predict(u, verbose=0) + (1 - a) * model.predict(v, verbose=0)
    return float(np.max(np.abs(mix - ends)))


def unevaluable(model: Any) -> str:
    """Why MODEL's predictions would say nothing about the student's work, or '' when they
    would: a model that was never trained (its notebook stopped before fit) is not graded on
    data, nor plotted."""
    if untrained(model):
        return ("the model could not be evaluated: it was never trained (its biases are still 0,"
                " where Keras starts them); check that the cell that calls fit runs without an"
                " error")
    return ""
