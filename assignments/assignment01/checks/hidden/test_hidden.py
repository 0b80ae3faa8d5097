"""Hidden checks of assignment01: they grade the model on students it has never seen.

The hidden students never enter the notebook's kernel: the model is evaluated on them here, in
the trusted process; the student's functions get only made-up students."""

import numpy as np
import pytest

from grader.checks import shape_problem, unevaluable


def _hidden(hidden):
    with np.load(hidden / "grading_hidden.npz") as data:
        return data["x"], data["y"].ravel()


def _grades(model, x):
    return np.clip(np.round(model.predict(x, verbose=0)), 0, 5).ravel()


@pytest.mark.points(1)
def test_accuracy_reported(submission, student_data, keras_model):
    """accuracy is the share of rounded predictions equal to the grades"""
    model = keras_model(submission, "model")
    with np.load(student_data / "grading.npz") as data:
        x, y = data["x"], data["y"].ravel()
    expected = float(np.mean(_grades(model, x) == y))
    found = submission.number("accuracy")
    assert abs(found - expected) <= 0.02, (
        f"accuracy should be the share of students graded right by your model, {expected:.3f};"
        f" found {found:.3f} (round the predictions before comparing)"
    )


@pytest.mark.points(1)
def test_predict_grades(submission, made_up_points, keras_model):
    """predict_grades gives whole grades 0-5 that match the model"""
    model = keras_model(submission, "model")
    points = made_up_points(50, seed=7)  # made-up students: no hidden row enters the notebook
    found = submission.call_array("predict_grades", points).ravel()
    assert found.shape == (50,), f"predict_grades should give one grade per row: 50, found {found.shape}"
    assert np.all(found == np.round(found)), "predict_grades should give whole grades"
    assert found.min() >= 0 and found.max() <= 5, "predict_grades should give grades from 0 to 5"
    agree = float(np.mean(found == _grades(model, points)))
    assert agree >= 0.95, f"predict_grades agrees with the model on {agree:.0%} of students only"


@pytest.mark.points(3)
def test_hidden_accuracy(submission, hidden, credit, feedback, keras_model):
    """The model grades unseen students right"""
    import matplotlib.pyplot as plt

    model = keras_model(submission, "model")
    # graded whenever its predictions can be read: a model that is not linear (an activation,
    # a hidden layer) loses test_model_is_linear's point, and only that
    problem = unevaluable(model) or shape_problem(
        model, "model", inputs=3, outputs=1, takes="3 inputs (the three parts)",
        gives="1 output (the grade)")
    assert not problem, problem
    x, y = _hidden(hidden)
    raw = model.predict(x, verbose=0).ravel()
    assert np.all(np.isfinite(raw)), (
        "the model could not be evaluated: its predictions for unseen students are not finite"
        " numbers (did training diverge?)")
    accuracy = float(np.mean(np.clip(np.round(raw), 0, 5) == y))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    jitter = np.random.default_rng(1).uniform(-0.15, 0.15, size=y.shape)
    ax.scatter(y + jitter, raw, s=4, alpha=0.4)
    ax.plot([0, 5], [0, 5], color="black", linewidth=1)
    ax.set_xlabel("true grade")
    ax.set_ylabel("predicted grade")
    feedback.figure(fig, f"Predicted against true grades of {len(y)} unseen students")
    credit.tiers(accuracy, [(0.75, 1.0), (0.65, 0.6), (0.50, 0.3)], "accuracy on unseen students")
