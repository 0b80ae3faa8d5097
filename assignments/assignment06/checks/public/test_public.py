"""Public checks of assignment06: students may read and run these.

Each function is called with small made-up inputs and seeds (7 films, 4 hidden units, 5 users)
and compared with the grader's own implementation of the notebook's instructions."""

import numpy as np
import pytest

from grader.checks import StudentValueError, plot_curves

TOLERANCE = 1e-6
SEEDS = (11, 12)


def _compare(found: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Fail with what differs when FOUND is not EXPECTED (shape first, then values)."""
    found = np.asarray(found, dtype=float)
    assert found.shape == expected.shape, (
        f"{what} should have shape {expected.shape}, found {found.shape}")
    assert np.all(np.isfinite(found)), f"{what} holds NaN or infinite values"
    worst = np.unravel_index(int(np.argmax(np.abs(found - expected))), expected.shape)
    assert np.allclose(found, expected, rtol=0, atol=TOLERANCE), (
        f"{what} is off: at index {tuple(int(i) for i in worst)} it should be"
        f" {expected[worst]:.6f}, found {found[worst]:.6f}")


@pytest.mark.points(1)
def test_energy(submission, rbm):
    """energy(v, h, W, a, b) gives the energy of each pair of rows"""
    for seed in SEEDS:
        x = rbm.made_up(seed, unrated=0)
        found = submission.call_array("energy", x.v, x.h, x.W, x.a, x.b)
        _compare(found.reshape(-1) if found.size == len(x.v) else found,  # (n, 1) is fine too
                 rbm.energy(x.v, x.h, x.W, x.a, x.b),
                 "energy(v, h, W, a, b) (one energy per row: -a.v - b.h - v W h)")


@pytest.mark.points(1)
def test_p_hidden(submission, rbm):
    """p_hidden(v, W, b) = sigmoid(v W + b)"""
    for seed in SEEDS:
        x = rbm.made_up(seed, unrated=0)
        _compare(submission.call_array("p_hidden", x.v, x.W, x.b), rbm.p_hidden(x.v, x.W, x.b),
                 "p_hidden(v, W, b)")


@pytest.mark.points(1)
def test_p_visible(submission, rbm):
    """p_visible(h, W, a) = sigmoid(h W^T + a)"""
    for seed in SEEDS:
        x = rbm.made_up(seed, unrated=0)
        _compare(submission.call_array("p_visible", x.h, x.W, x.a),
                 rbm.p_visible(x.h, x.W, x.a), "p_visible(h, W, a)")


@pytest.mark.points(1)
def test_sample(submission, rbm):
    """sample(p, rng) draws (rng.random(p.shape) < p) as 0s and 1s"""
    p = np.random.default_rng(5).random((40, 6))
    for seed in SEEDS:
        found = submission.call_array("sample", p, seed)
        _compare(found, rbm.sample(p, np.random.default_rng(seed)),
                 "sample(p, rng), drawn as (rng.random(p.shape) < p).astype(p.dtype),")


@pytest.mark.points(1)
def test_gibbs(submission, rbm):
    """gibbs(v, W, a, b, k, rng) runs k steps and keeps unrated films at -1"""
    for seed, k in zip(SEEDS, (1, 3), strict=True):
        x = rbm.made_up(seed)
        found = submission.call_array("gibbs", x.v, x.W, x.a, x.b, k, seed)
        expected = rbm.gibbs(x.v, x.W, x.a, x.b, k, np.random.default_rng(seed))
        if found.shape == expected.shape:
            moved = int(np.sum((x.v < 0) & (found != -1)))
            assert not moved, (
                f"gibbs changed {moved} unrated entries (-1) of v: put -1 back where the starting"
                " v was unrated, after every step")
        _compare(found, expected, f"gibbs(v, W, a, b, k={k}, rng) (draw h, then v, each step)")


def _update(submission, x, lr: float, k: int, seed: int) -> tuple[np.ndarray, ...]:
    """The student's cd_step on X, as (W, a, b)."""
    try:
        flat = submission.call_array("cd_step_as_one_array", x.v, x.W, x.a, x.b, lr, k, seed)
    except StudentValueError as exc:
        if "is not defined" not in str(exc):
            raise
        raise StudentValueError(
            "cd_step_as_one_array is not defined: keep the given function after cd_step, it is"
            " how the grader reads your update") from None
    flat = flat.ravel()
    sizes = (x.W.size, x.a.size, x.b.size)
    if flat.size != sum(sizes):
        raise StudentValueError(
            f"cd_step should return (W, a, b) of shapes {x.W.shape}, {x.a.shape}, {x.b.shape};"
            f" cd_step_as_one_array found {flat.size} numbers in all instead of {sum(sizes)}")
    W, a, b = np.split(flat, np.cumsum(sizes)[:2])
    return W.reshape(x.W.shape), a, b


@pytest.mark.points(2)
def test_cd_step(submission, rbm):
    """cd_step makes one CD-k update in which unrated films (-1) count for nothing"""
    for seed, k, lr in zip(SEEDS, (1, 2), (0.1, 0.5), strict=True):
        x = rbm.made_up(seed, empty_column=True)  # the last film is unrated by the whole batch
        W, a, b = _update(submission, x, lr, k, seed)
        assert np.allclose(W[-1], x.W[-1], rtol=0, atol=TOLERANCE) and abs(
            a[-1] - x.a[-1]) <= TOLERANCE, (
            "unrated entries (-1) changed W: they must not count in the statistics (a film that"
            " nobody in the batch rated moved its row of W or its bias a); use known(v0) and"
            " known(vk) in the outer products and the means")
        expected = rbm.cd_step(x.v, x.W, x.a, x.b, lr, k, np.random.default_rng(seed))
        for name, found, want in zip("Wab", (W, a, b), expected, strict=True):
            _compare(found, want, f"the new {name} of cd_step(v, W, a, b, lr={lr}, k={k}, rng)")


@pytest.mark.points(1)
def test_reconstruction_error_falls(submission, feedback):
    """errors holds the reconstruction error of each epoch, and it falls"""
    import matplotlib.pyplot as plt

    errors = submission.array("errors").ravel()
    assert errors.size >= 2, (
        f"errors should hold one reconstruction error per epoch (at least 2), found {errors.size}")
    assert np.all(np.isfinite(errors)), "errors holds NaN or infinite values: did training diverge?"
    fig, ax = plt.subplots(figsize=(5, 3.2))
    plot_curves(ax, {"loss": errors.tolist()}, "loss", "reconstruction error",
                ylabel="mean squared error")
    feedback.figure(fig, "Your reconstruction error, epoch by epoch")
    assert errors[-1] < errors[0], (
        f"the reconstruction error should fall while training: {errors[0]:.4f} -> {errors[-1]:.4f}")
