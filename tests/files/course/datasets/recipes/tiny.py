"""A tiny recipe for the tests: a student file and a hidden file, generated."""

from pathlib import Path

import numpy as np

INPUTS: list[str] = []
VERSION = "1"


def build(raw, student: Path, hidden: Path) -> None:
    np.savez(student / "tiny.npz", x=np.arange(6, dtype="float64"))
    np.savez(hidden / "tiny_hidden.npz", x=np.array([3.0, -1.5, 10.0]), target=np.float64(100.0))
