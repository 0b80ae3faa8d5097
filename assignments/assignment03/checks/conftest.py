"""Helpers shared by assignment03's checks (trusted code: never shipped to students)."""

from __future__ import annotations

import numpy as np
import pytest

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
