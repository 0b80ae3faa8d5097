"""Helpers shared by assignment03's checks (trusted code: never shipped to students)."""

from __future__ import annotations

import numpy as np
import pytest

from grader import models

N_TRAIN = 50_000  # the notebook's given cell: the first 50,000 digits train, the last 10,000 validate


def _vectors(images: np.ndarray) -> np.ndarray:
    """Images as the models take them: rows of 784 pixels in [0, 1], as preprocess makes them."""
    return images.reshape(len(images), 28 * 28).astype("float32") / 255.0


@pytest.fixture(scope="session")
def vectors():
    """The preprocessing the notebook asks for, done in the trusted process."""
    return _vectors


@pytest.fixture(scope="session")
def validation_digits(student_data) -> tuple[np.ndarray, np.ndarray]:
    """The last 10,000 digits of the student file (images, labels), as the notebook splits it."""
    with np.load(student_data / "mnist_train.npz") as data:
        return data["x"][N_TRAIN:], data["y"][N_TRAIN:]


def _layer_problem(model, units: int, activations: tuple[str, ...]) -> str:
    """Why MODEL is not one Dense layer of UNITS units (no hidden layer), or '' when it is.

    Layers that compute nothing at prediction time (Dropout), reshape (Flatten, Reshape), scale
    by fixed numbers (Rescaling, Normalization) or apply a final softmax are allowed around the
    Dense layer: the model stays linear in its inputs."""
    import keras

    passive = (keras.layers.InputLayer, keras.layers.Normalization, keras.layers.Rescaling,
               keras.layers.Dropout, keras.layers.Softmax, keras.layers.Flatten,
               keras.layers.Reshape)
    layers = [layer for layer in model.layers if not isinstance(layer, passive)]
    dense = [layer for layer in layers if isinstance(layer, keras.layers.Dense)]
    for layer in layers:
        if isinstance(layer, keras.layers.Activation):
            name = getattr(layer.activation, "__name__", str(layer.activation))
            if name not in (*activations, "linear"):
                return f"it has a {name} activation layer; use {' or '.join(activations)}"
        elif not isinstance(layer, keras.layers.Dense):
            return f"it has a {type(layer).__name__} layer; a linear model has only one Dense layer"
    if len(dense) != 1:
        return (f"it has {len(dense)} Dense layers; a linear model has exactly one, with no hidden"
                " layer")
    activation = getattr(dense[0].activation, "__name__", str(dense[0].activation))
    if activation not in activations:
        return f"its Dense layer uses the {activation} activation; use {' or '.join(activations)}"
    if dense[0].units != units:
        return f"its Dense layer has {dense[0].units} units; it should have {units}"
    return ""


@pytest.fixture
def layer_problem():
    """Why a model is not a single Dense layer of the given units ('' when it is)."""
    return _layer_problem


def _shape_problem(model, name: str, outputs: int) -> str:
    """'' when MODEL takes vectors of 784 values and gives OUTPUTS numbers, else what is wrong."""
    inputs = tuple(model.inputs[0].shape)[1:] if model.inputs else None
    if inputs != (784,):
        return (f"{name} should take vectors of 784 values (preprocessed images), found input"
                f" shape {inputs}")
    found = tuple(model.outputs[0].shape)[1:]
    if found != (outputs,):
        return f"{name} should give {outputs} output(s), found output shape {found}"
    return ""


@pytest.fixture
def shape_problem():
    """What is wrong with a model's input and output shapes ('' when nothing)."""
    return _shape_problem


@pytest.fixture
def untrained():
    """Whether a model was never trained (its Dense biases are still all zero)."""
    return models.untrained


@pytest.fixture
def unevaluable():
    """Why a model's predictions would mean nothing ('' when they would not)."""
    return models.unevaluable
