"""assignment01's grading data, generated from a documented points-to-grade rule.

Each of 2000 students has an ability a ~ N(0.68, 0.16). Each part of the course is scored as
clip(a + N(0, 0.08), 0, 1) times its maximum, rounded down to half points:

    x[:, 0]  exercises   0..30 points
    x[:, 1]  project     0..30 points
    x[:, 2]  exam        0..40 points

The teacher adds up the points, with a little judgement: total = sum(x) + N(0, 1.5). The grade is
0 (fail) below 50 and then one grade per 10 points, capped at 5:

    y = clip(floor((total - 40) / 10), 0, 5)

so 50..59 -> 1, 60..69 -> 2, 70..79 -> 3, 80..89 -> 4, 90 and above -> 5. A linear model can learn
y ~ (sum(x) - 45) / 10 and, after rounding, grades most students right; the clipping at 0 and 5 and
the noise keep it from being perfect. The student file and the hidden file are independent samples
from the same rule with different seeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from grader.data.npz import save_npz

INPUTS: list[str] = []  # generated, nothing to download
VERSION = "1"
MAXIMA = np.array([30.0, 30.0, 40.0])
STUDENT_SEED = 20240101
HIDDEN_SEED = 20240102
N_STUDENT = 2000
N_HIDDEN = 2000


def sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw n students' points x (n, 3) and grades y (n, 1) from the rule above."""
    rng = np.random.default_rng(seed)
    ability = rng.normal(0.68, 0.16, size=(n, 1))
    share = np.clip(ability + rng.normal(0.0, 0.08, size=(n, 3)), 0.0, 1.0)
    x = np.floor(share * MAXIMA * 2.0) / 2.0
    total = x.sum(axis=1, keepdims=True) + rng.normal(0.0, 1.5, size=(n, 1))
    y = np.clip(np.floor((total - 40.0) / 10.0), 0, 5)
    return x.astype("float32"), y.astype("float32")


def build(raw: Mapping[str, Path], student: Path, hidden: Path) -> None:
    """Write grading.npz for the student and grading_hidden.npz for the hidden checks."""
    x, y = sample(N_STUDENT, STUDENT_SEED)
    save_npz(student / "grading.npz", {"x": x, "y": y})
    hx, hy = sample(N_HIDDEN, HIDDEN_SEED)
    save_npz(hidden / "grading_hidden.npz", {"x": hx, "y": hy})
