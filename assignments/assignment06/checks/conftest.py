"""Helpers shared by assignment06's checks (trusted code: never shipped to students).

The trusted RBM below follows the notebook's documented contract exactly, including the order of
its random draws, so that the student's functions, given the same seed, must give the same
numbers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

N_VISIBLE, N_HIDDEN, BATCH = 7, 4, 5


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def known(v: np.ndarray) -> np.ndarray:
    """V with its unrated entries (-1) as 0."""
    return np.where(v < 0, 0.0, v)


def energy(v, h, W, a, b):
    """E(v, h) of each pair of rows."""
    return -(v @ a) - (h @ b) - np.sum((v @ W) * h, axis=1)


def p_hidden(v, W, b):
    """p(h = 1 | v)."""
    return sigmoid(v @ W + b)


def p_visible(h, W, a):
    """p(v = 1 | h)."""
    return sigmoid(h @ W.T + a)


def sample(p, rng):
    """A Bernoulli sample of P, drawn as the notebook documents."""
    return (rng.random(p.shape) < p).astype(p.dtype)


def gibbs(v, W, a, b, k, rng):
    """K steps of Gibbs sampling from V, unrated entries kept at -1."""
    start = v
    for _ in range(k):
        h = sample(p_hidden(known(v), W, b), rng)
        v = sample(p_visible(h, W, a), rng)
        v = np.where(start < 0, -1.0, v)
    return v


def cd_step(v, W, a, b, lr, k, rng):
    """One CD-k update from batch V; unrated entries count in no statistic."""
    vk = gibbs(v, W, a, b, k, rng)
    x0, xk = known(v), known(vk)
    ph0, phk = p_hidden(x0, W, b), p_hidden(xk, W, b)
    n = len(v)
    return (W + lr * (x0.T @ ph0 - xk.T @ phk) / n, a + lr * np.mean(x0 - xk, axis=0),
            b + lr * np.mean(ph0 - phk, axis=0))


def made_up(seed: int, unrated: float = 0.4, empty_column: bool = False) -> SimpleNamespace:
    """A small made-up RBM and batch: W, a, b, v (with -1 for unrated), h. With EMPTY_COLUMN the
    last film is unrated by the whole batch."""
    rng = np.random.default_rng(seed)
    v = (rng.random((BATCH, N_VISIBLE)) < 0.5).astype(float)
    v[rng.random(v.shape) < unrated] = -1.0
    if empty_column:
        v[:, -1] = -1.0
    return SimpleNamespace(
        W=rng.normal(0, 0.8, (N_VISIBLE, N_HIDDEN)), a=rng.normal(0, 0.5, N_VISIBLE),
        b=rng.normal(0, 0.5, N_HIDDEN), v=v,
        h=(rng.random((BATCH, N_HIDDEN)) < 0.5).astype(float))


@pytest.fixture(scope="session")
def rbm():
    """The trusted RBM functions and made_up(seed) inputs."""
    return SimpleNamespace(sigmoid=sigmoid, known=known, energy=energy, p_hidden=p_hidden,
                           p_visible=p_visible, sample=sample, gibbs=gibbs, cd_step=cd_step,
                           made_up=made_up)


@pytest.fixture(scope="session")
def train_ratings(student_data) -> tuple[np.ndarray, np.ndarray]:
    """The students' ratings (943, 1682) and the films' titles, as prepared."""
    with np.load(student_data / "movielens_train.npz") as data:
        return data["ratings"], data["titles"]
