import numpy as np
import pytest


@pytest.mark.points(1)
def test_total(submission, student_data):
    """total is the sum of x"""
    with np.load(student_data / "tiny.npz") as data:
        expected = float(data["x"].sum())
    found = submission.number("total")
    assert found == expected, f"total should be {expected:g}, found {found:g}"


@pytest.mark.points(1)
def test_squares(submission):
    """squares holds the squares of x"""
    found = submission.array("squares")
    assert np.array_equal(found, np.arange(6) ** 2), f"squares should be [0, 1, 4, ...], found {found}"
