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


@pytest.mark.points(0.5)
def test_p_hidden(submission, rbm):
    """p_hidden(v, W, b) = sigmoid(v W + b)"""
    for seed in SEEDS:
        x = rbm.made_up(seed, unrated=0)
        _compare(submission.call_array("p_hidden", x.v, x.W, x.b), rbm.p_hidden(x.v, x.W, x.b),
                 "p_hidden(v, W, b)")


@pytest.mark.points(0.5)
def test_p_visible(submission, rbm):
    """p_visible(h, W, a) = sigmoid(h W^T + a)"""
    for seed in SEEDS:
        x = rbm.made_up(seed, unrated=0)
        _compare(submission.call_array("p_visible", x.h, x.W, x.a),
                 rbm.p_visible(x.h, x.W, x.a), "p_visible(h, W, a)")


@pytest.mark.points(0.5)
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


def _own(submission, name: str, *args) -> np.ndarray | None:
    """The student's NAME(*ARGS), or None where it raises or is missing: that is charged at its
    own check, not again here."""
    try:
        return submission.call_array(name, *args)
    except StudentValueError:
        return None


def _expected_updates(submission, rbm, x, lr: float, k: int, seed: int) -> tuple[list, bool]:
    """The updates cd_step may rightly give: the contract's statistics built from the student's
    own gibbs and p_hidden, and from the grader's (a mistake in gibbs or p_hidden is charged at
    its own check, so a cd_step that uses them as the contract says is right here). The first is
    the student's own where their gibbs ran (then the second value is True)."""
    trusted_vk = rbm.gibbs(x.v, x.W, x.a, x.b, k, np.random.default_rng(seed))
    chains = [trusted_vk]
    own_vk = _own(submission, "gibbs", x.v, x.W, x.a, x.b, k, seed)
    if own_vk is not None and own_vk.shape == x.v.shape and np.all(np.isfinite(own_vk)):
        chains.insert(0, own_vk.astype(float))

    def own_p_hidden(v, W, b):
        found = _own(submission, "p_hidden", v, W, b)
        return found if found is not None and found.shape == (len(v), len(b)) else None

    updates = []
    for vk in chains:
        x0, xk = rbm.known(x.v), rbm.known(vk)
        for p_hidden in (own_p_hidden, rbm.p_hidden):
            ph0, phk = p_hidden(x0, x.W, x.b), p_hidden(xk, x.W, x.b)
            if ph0 is None or phk is None or not (np.all(np.isfinite(ph0))
                                                  and np.all(np.isfinite(phk))):
                continue
            updates.append((x.W + lr * (x0.T @ ph0 - xk.T @ phk) / len(x.v),
                            x.a + lr * np.mean(x0 - xk, axis=0),
                            x.b + lr * np.mean(ph0 - phk, axis=0)))
    return updates, len(chains) == 2


def _matches(found: tuple, expected: tuple) -> bool:
    return all(f.shape == e.shape and np.allclose(f, e, rtol=0, atol=TOLERANCE)
               for f, e in zip(found, expected, strict=True))


@pytest.mark.points(1.5)
def test_cd_step(submission, rbm):
    """cd_step makes one CD-k update in which unrated films (-1) count for nothing"""
    for seed, k, lr in zip(SEEDS, (1, 2), (0.1, 0.5), strict=True):
        x = rbm.made_up(seed, empty_column=True)  # the last film is unrated by the whole batch
        W, a, b = _update(submission, x, lr, k, seed)
        expected, own = _expected_updates(submission, rbm, x, lr, k, seed)
        if any(_matches((W, a, b), update) for update in expected):
            continue
        assert np.allclose(W[-1], x.W[-1], rtol=0, atol=TOLERANCE) and abs(
            a[-1] - x.a[-1]) <= TOLERANCE, (
            "unrated entries (-1) changed W: they must not count in the statistics (a film that"
            " nobody in the batch rated moved its row of W or its bias a); use known(v0) and"
            " known(vk) in the outer products and the means")
        for name, found, want in zip("Wab", (W, a, b), expected[0], strict=True):
            _compare(found, want, f"the new {name} of cd_step(v, W, a, b, lr={lr}, k={k}, rng)"
                                  + (" (from your own gibbs)" if own else ""))


STARS = {0: ("unrated", -1.0), 1: ("1 star", 0.0), 2: ("2 stars", 0.0), 3: ("3 stars", 0.0),
         4: ("4 stars", 1.0), 5: ("5 stars", 1.0)}


@pytest.mark.points(1)
def test_liked(submission, train_ratings):
    """V is 1 where the rating is 4 or 5 (liked), 0 where it is 1 to 3, -1 where unrated"""
    ratings, _ = train_ratings
    V = submission.array("V")
    assert V.shape == ratings.shape, (
        f"V should have the shape of ratings, {ratings.shape}, found {V.shape}")
    wrong = []
    for stars, (what, want) in STARS.items():
        found = V[ratings == stars]
        off = found[found != want]
        if off.size:
            values = ", ".join(f"{value:g}" for value in np.unique(off)[:3])
            wrong.append(f"{off.size:,} of the {found.size:,} entries {what} are {values} instead"
                         f" of {want:g}")
    assert not wrong, "V is off: " + "; ".join(wrong) + (
        ". Liked is 4 or 5 stars (1), 1 to 3 stars is not liked (0), unrated is -1")


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
