"""Public checks of assignment01: students may read and run these."""

import numpy as np
import pytest

from grader.checks import linear_problem, plot_curves, shape_problem


def _statistic(submission, student_data, name: str, compute) -> None:
    """Check the student's NAME against COMPUTE(x) on the student file, one value per part."""
    with np.load(student_data / "grading.npz") as data:
        expected = compute(data["x"])
    found = submission.array(name).ravel()
    assert found.shape == (3,), f"{name} should hold 3 values, one per part; found shape {found.shape}"
    assert np.allclose(found, expected, atol=1e-3), (
        f"{name} should be {np.round(expected, 3).tolist()}, found {np.round(found, 3).tolist()}"
    )


@pytest.mark.points(1)
def test_means(submission, student_data):
    """means holds the mean points of each of the three parts"""
    _statistic(submission, student_data, "means", lambda x: x.mean(axis=0))


@pytest.mark.points(0.5)
def test_minimums(submission, student_data):
    """minimums holds the lowest points of each of the three parts"""
    _statistic(submission, student_data, "minimums", lambda x: x.min(axis=0))


@pytest.mark.points(0.5)
def test_maximums(submission, student_data):
    """maximums holds the highest points of each of the three parts"""
    _statistic(submission, student_data, "maximums", lambda x: x.max(axis=0))


@pytest.mark.points(1)
def test_model_is_linear(submission, keras_model, affine_error):
    """model is a linear Keras model with 3 inputs and 1 output, built from Keras's layers"""
    model = keras_model(submission, "model")
    problem = linear_problem(model)
    assert not problem, f"model is not linear: {problem}"
    problem = shape_problem(model, "model", inputs=3, outputs=1,
                            takes="3 inputs (the three parts)", gives="1 output (the grade)")
    assert not problem, problem
    assert affine_error(model, np.random.default_rng(0)) <= 1e-2, (
        "model is not linear: its predictions are not an affine function of the points")


@pytest.mark.points(1)
def test_training_history(submission, feedback):
    """history holds the training loss, and the loss went down"""
    import matplotlib.pyplot as plt

    history = submission.history("history")
    loss = history.get("loss", [])
    assert len(loss) >= 2, f"history should record at least 2 epochs of loss, found {len(loss)}"
    fig, ax = plt.subplots(figsize=(5, 3))
    plot_curves(ax, history, "loss", ylabel="loss", log=True)
    feedback.figure(fig, "Your training curve")
    assert loss[-1] < loss[0], f"the loss should go down during training: {loss[0]:.3g} -> {loss[-1]:.3g}"
