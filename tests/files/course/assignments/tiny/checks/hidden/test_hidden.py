import numpy as np
import pytest


@pytest.mark.points(2)
def test_double(submission):
    """double(x) doubles every value"""
    x = np.random.default_rng(1).normal(size=5)  # made up here: hidden data never enters the kernel
    found = submission.call_array("double", x)
    SECRET_EXPECTED_MARKER = 2 * x
    assert np.allclose(found, SECRET_EXPECTED_MARKER), "double(x) should give twice each value"


@pytest.mark.points(2)
def test_guess(submission, credit, hidden):
    """guess is close to the hidden target"""
    with np.load(hidden / "tiny_hidden.npz") as data:
        target = float(data["target"])
    guess = submission.number("guess")
    credit.tiers(target - abs(target - guess), [(target - 1, 1.0), (target - 10, 0.5)], "closeness")
