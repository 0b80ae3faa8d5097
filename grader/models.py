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


def all_layers(model: Any) -> list[Any]:
    """MODEL's layers in order, with those of nested models (a Sequential inside) in its place."""
    found = []
    for layer in model.layers:
        found.extend(all_layers(layer) if hasattr(layer, "layers") else [layer])
    return found


# Weights Keras starts at a known constant, by layer type: (weight name, its start value).
_STARTS = {
    "Dense": (("bias", 0.0),),
    "EinsumDense": (("bias", 0.0),),
    "Conv1D": (("bias", 0.0),),
    "Conv2D": (("bias", 0.0),),
    "Conv3D": (("bias", 0.0),),
    "SeparableConv2D": (("bias", 0.0),),
    "DepthwiseConv2D": (("bias", 0.0),),
    "BatchNormalization": (("gamma", 1.0), ("beta", 0.0), ("moving_mean", 0.0),
                           ("moving_variance", 1.0)),
}


def untrained(model: Any) -> bool:
    """Whether MODEL was never trained: every weight Keras starts at a constant (the biases of
    Dense and convolution layers, BatchNormalization's scale, offset and moving statistics)
    still has that value. A model without such weights counts as trained: nothing tells."""
    start_values = []
    for layer in all_layers(model):
        for name, start in _STARTS.get(type(layer).__name__, ()):
            weight = getattr(layer, name, None)
            if weight is not None:
                start_values.append(bool(np.all(np.asarray(weight) == start)))
    return bool(start_values) and all(start_values)


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
