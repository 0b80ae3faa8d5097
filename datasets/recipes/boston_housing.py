"""Boston housing: Keras' own train/test split; the 102 test houses are hidden.

Student  boston_housing_train.npz  x (404, 13) float64, y (404,) float64 (median value, k$)
Hidden   boston_housing_test.npz   x (102, 13) float64, y (102,) float64

The split is the one keras.datasets.boston_housing.load_data() makes (test_split=0.2, seed=113),
so what students get equals Keras' x_train/y_train. Column 12 ("B") encodes the share of Black
residents: the assignment must discuss it, not use it uncritically.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from grader.data.npz import save_npz

INPUTS = ["boston_housing"]
VERSION = "1"
TEST_SPLIT = 0.2
SEED = 113  # Keras' default


def keras_split(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Shuffle and split exactly as keras.datasets.boston_housing.load_data does."""
    indices = np.arange(len(x))
    np.random.RandomState(SEED).shuffle(indices)
    x, y = x[indices], y[indices]
    cut = int(len(x) * (1 - TEST_SPLIT))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def build(raw: Mapping[str, Path], student: Path, hidden: Path) -> None:
    """Write the training houses for students and the test houses for the hidden checks."""
    with np.load(raw["boston_housing"], allow_pickle=False) as data:
        x, y = data["x"], data["y"]
    x_train, y_train, x_test, y_test = keras_split(x, y)
    save_npz(student / "boston_housing_train.npz", {"x": x_train, "y": y_train})
    save_npz(hidden / "boston_housing_test.npz", {"x": x_test, "y": y_test})
