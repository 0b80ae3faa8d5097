"""Helpers shared by assignment02's checks (trusted code: never shipped to students)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from grader import checks

N_TRAIN = 320  # the notebook's given cell: the first 320 houses train, the last 84 validate
FEATURES = ("CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX", "PTRATIO",
            "B", "LSTAT")


@dataclass(frozen=True)
class Houses:
    """The student file, split as the notebook splits it."""

    FEATURES: ClassVar[tuple[str, ...]] = FEATURES
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray

    def made_up(self, n: int, seed: int, spread: float = 1.0) -> np.ndarray:
        """N houses that exist nowhere: each feature uniform over (SPREAD times) its range."""
        x = np.concatenate([self.x_train, self.x_val])
        low, high = x.min(axis=0), x.max(axis=0)
        middle, half = (low + high) / 2, (high - low) / 2 * spread
        return np.random.default_rng(seed).uniform(middle - half, middle + half, size=(n, 13))


    def matches(self, name: str, found: np.ndarray, x: np.ndarray) -> bool:
        """Whether FOUND is the NAME ('mean' or 'std') of houses X (np.std's ddof 0 or 1 alike)."""
        if name == "mean":
            spread = self.x_train.std(axis=0)
            return bool(np.allclose(found, x.mean(axis=0), rtol=0, atol=2e-3 * spread))
        return any(np.allclose(found, x.std(axis=0, ddof=ddof), rtol=5e-3, atol=0)
                   for ddof in (0, 1))

    def close(self, mean: np.ndarray, std: np.ndarray, x: np.ndarray) -> bool:
        """Whether MEAN and STD are the statistics of houses X (np.std's ddof 0 or 1 alike)."""
        return self.matches("mean", mean, x) and self.matches("std", std, x)


@pytest.fixture(scope="session")
def houses(student_data) -> Houses:
    """The training and validation houses, as the notebook makes them."""
    with np.load(student_data / "boston_housing_train.npz") as data:
        x, y = data["x"], data["y"]
    return Houses(x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:])


def _other_houses(houses: Houses) -> dict[str, np.ndarray]:
    """The houses a wrong mean or std is most often taken from, by how a student reads them."""
    return {"all 404 houses, validation houses included": np.concatenate([houses.x_train,
                                                                          houses.x_val]),
            "the validation houses (x_val)": houses.x_val}


def _statistics_source(mean: np.ndarray, std: np.ndarray, houses: Houses) -> str:
    """Which houses MEAN and STD look like the statistics of, for a student's message."""
    for where, x in _other_houses(houses).items():
        if houses.close(mean, std, x):
            return where
    if houses.close(mean, std / 2, houses.x_train):
        return "the training houses, but with 2 * std: divide by std itself"
    return ""


@pytest.fixture
def statistics_source():
    """Where a wrong mean and std seem to come from ('' when nothing fits)."""
    return _statistics_source


def _statistic_source(name: str, found: np.ndarray, houses: Houses) -> str:
    """What a wrong NAME ('mean' or 'std') seems to be, completing 'yours is ...' ('' when
    nothing fits)."""
    for where, x in _other_houses(houses).items():
        if houses.matches(name, found, x):
            return f"the {name} of {where}"
    if name == "std" and houses.matches("std", found / 2, houses.x_train):
        return "twice the std of the training houses: keep the std itself"
    return ""


@pytest.fixture
def statistic_source():
    """What a wrong mean or std seems to be ('' when nothing fits)."""
    return _statistic_source


def _implied_statistics(x: np.ndarray, fx: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The mean and std a per-feature scaling FX = (X - mean) / std of houses X used, if any."""
    fx = fx.astype(float)
    if fx.shape != x.shape or len(x) < 3 or not np.all(np.isfinite(fx)):
        return None
    dx = x - x.mean(axis=0)
    scale = (dx * (fx - fx.mean(axis=0))).sum(axis=0) / (dx**2).sum(axis=0)
    shift = fx.mean(axis=0) - scale * x.mean(axis=0)
    if np.any(scale == 0) or not np.allclose(fx, x * scale + shift, rtol=1e-4, atol=1e-4):
        return None
    return -shift / scale, 1 / scale


@pytest.fixture
def implied_statistics():
    """The mean and std behind a student's normalised houses (None when nothing fits)."""
    return _implied_statistics


def _probe_normalize(submission, houses: Houses) -> tuple[np.ndarray, np.ndarray]:
    """The student's normalize as a per-feature scale and shift, read off made-up houses.

    This is how the hidden houses get normalised as the student's own function would do it
    without ever entering the student's kernel. Raises AssertionError when normalize is no
    fixed per-feature scaling (then no scale and shift describe it).
    """
    u = houses.made_up(40, seed=11)
    v = houses.made_up(25, seed=12, spread=2.0)  # other houses, other spread
    fu = submission.call_array("normalize", u)
    fv = submission.call_array("normalize", v)
    for x, fx in ((u, fu), (v, fv)):
        assert fx.shape == x.shape, (
            f"normalize should return an array of the shape it is given, {x.shape};"
            f" found {fx.shape}")
    fu, fv = fu.astype(float), fv.astype(float)
    du = u - u.mean(axis=0)
    scale = (du * (fu - fu.mean(axis=0))).sum(axis=0) / (du**2).sum(axis=0)
    shift = fu.mean(axis=0) - scale * u.mean(axis=0)
    for x, fx in ((u, fu), (v, fv)):
        assert np.all(np.isfinite(fx)) and np.allclose(fx, x * scale + shift, rtol=1e-4,
                                                       atol=1e-4), (
            "normalize is not the same per-feature scaling for every call: it should apply"
            " the fixed training mean and std, whatever houses it is given")
    return scale, shift


@pytest.fixture
def probe_normalize():
    """The student's normalize as (scale, shift) per feature; AssertionError when it is none."""
    return _probe_normalize


def _affine_error(model, houses: Houses) -> float:
    """How far MODEL is from affine on made-up houses."""
    u, v = houses.made_up(64, seed=21), houses.made_up(64, seed=22)
    return checks.affine_error(model, u, v, np.random.default_rng(23))


@pytest.fixture
def affine_error():
    """How far a model's predictions are from an affine function of its inputs."""
    return _affine_error
