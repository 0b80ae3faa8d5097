import numpy as np
import pytest


@pytest.mark.points(2)
def test_double(submission, hidden):
    """double(x) doubles every value"""
    with np.load(hidden / "tiny_hidden.npz") as data:
        x = data["x"]
    found = submission.call_array("double", x)
    SECRET_EXPECTED_MARKER = 2 * x
    assert np.allclose(found, SECRET_EXPECTED_MARKER), "double(x) should give twice each value"


@pytest.mark.points(2)
def test_guess(submission, credit):
    """guess is close to 100"""
    guess = submission.number("guess")
    credit.tiers(100 - abs(100 - guess), [(99, 1.0), (90, 0.5)], "closeness to 100")
