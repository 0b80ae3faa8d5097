"""MNIST: the 60,000 training digits for students; the 10,000 test digits are hidden.

Student  mnist_train.npz  x (60000, 28, 28) uint8 (0-255), y (60000,) uint8 (0-9)
Hidden   mnist_test.npz   x (10000, 28, 28) uint8, y (10000,) uint8

Same arrays and order as keras.datasets.mnist.load_data(); zip-compressed to keep bundles small.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from grader.data.npz import save_npz

INPUTS = ["mnist"]
VERSION = "1"


def build(raw: Mapping[str, Path], student: Path, hidden: Path) -> None:
    """Write the training split for students and the test split for the hidden checks."""
    with np.load(raw["mnist"], allow_pickle=False) as data:
        train = {"x": data["x_train"], "y": data["y_train"]}
        test = {"x": data["x_test"], "y": data["y_test"]}
    save_npz(student / "mnist_train.npz", train, compress=True)
    save_npz(hidden / "mnist_test.npz", test, compress=True)
