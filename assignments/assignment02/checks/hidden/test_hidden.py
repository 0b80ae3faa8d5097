"""Hidden checks of assignment02: the model prices houses it has never seen.

The hidden houses never enter the notebook's kernel: the model is evaluated on them here, in the
trusted process; the student's normalize gets only made-up houses."""

import numpy as np
import pytest

from grader.checks import StudentValueError, shape_problem, unevaluable

FULL_MSE = 24.36  # 5% above 23.20, the least-squares optimum of a linear model on Keras' split


def _test_houses(hidden):
    with np.load(hidden / "boston_housing_test.npz") as data:
        return data["x"], data["y"]


@pytest.mark.points(3)
def test_hidden_error(submission, hidden, houses, credit, feedback, probe_normalize):
    """The model prices unseen houses well"""
    import matplotlib.pyplot as plt

    model = submission.model("model")
    # graded whenever its predictions can be read: a model that is not linear (an activation,
    # a hidden layer) loses test_model_is_linear's point, and only that
    problem = unevaluable(model) or shape_problem(
        model, "model", inputs=13, outputs=1, takes="13 inputs (the normalised features)",
        gives="1 output (the price)")
    assert not problem, problem
    try:
        scale, shift = probe_normalize(submission, houses)
    except (AssertionError, StudentValueError) as exc:
        mean, std = houses.x_train.mean(axis=0), houses.x_train.std(axis=0)
        scale, shift = 1 / std, -mean / std
        feedback.text("How the unseen houses were normalised",
                      f"Your normalize could not be used ({exc}), so the unseen houses were"
                      " normalised with the mean and std of the training houses instead.")
    x, y = _test_houses(hidden)
    predicted = model.predict((x * scale + shift).astype("float32"), verbose=0).ravel()
    assert np.all(np.isfinite(predicted)), (
        "the model could not be evaluated: its predictions for unseen houses are not finite"
        " numbers (did training diverge?)")
    mse = float(np.mean((predicted - y) ** 2))
    mae = float(np.mean(np.abs(predicted - y)))
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.scatter(y, predicted, s=14, alpha=0.7, color="tab:red")
    top = max(50.0, float(predicted.max()))
    ax.plot([0, top], [0, top], color="tab:blue", linewidth=1, label="predicted = true")
    ax.set_xlabel(r"true median price (k\$)")
    ax.set_ylabel(r"your model's prediction (k\$)")
    ax.set_title(rf"MSE {mse:.1f} k\$², MAE {mae:.2f} k\$", fontsize=10)
    ax.legend(loc="upper left")
    feedback.figure(fig, f"Predicted against true prices of {len(y)} houses your model never saw")
    credit.tiers(mse, [(FULL_MSE, 1.0), (27.0, 0.75), (32.0, 0.5), (45.0, 0.25)],
                 f"mean squared error on {len(y)} unseen houses (mean absolute error {mae:.2f} k$)",
                 lower_is_better=True)
