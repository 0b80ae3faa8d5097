"""Public checks of assignment02: students may read and run these."""

import numpy as np
import pytest

from grader.checks import linear_problem, plot_curves, shape_problem, untrained


def _training_statistic(submission, houses, statistic_source, name: str) -> None:
    """Check the student's NAME ('mean' or 'std') against that of the training houses."""
    found = submission.array(name).ravel().astype(float)
    assert found.shape == (13,), (
        f"{name} should hold 13 values, one per feature; found shape {found.shape}")
    if houses.matches(name, found, houses.x_train):
        return
    expected = getattr(houses.x_train, name)(axis=0)
    worst = int(np.argmax(np.abs(found - expected) / houses.x_train.std(axis=0)
                          if name == "mean" else np.abs(found / expected - 1)))
    where = statistic_source(name, found, houses)
    detail = (f"yours is {where}" if where else
              f"{houses.FEATURES[worst]} should have {name} {expected[worst]:.4g}, yours has"
              f" {found[worst]:.4g}")
    raise AssertionError(
        f"{name} should be the {name} of each feature over the 320 training houses (x_train)"
        f" only: {detail}. Validation and test houses must not shape anything the model learns"
        " from.")


@pytest.mark.points(1)
def test_training_mean(submission, houses, statistic_source):
    """mean is the mean of each feature over the training houses only"""
    _training_statistic(submission, houses, statistic_source, "mean")


@pytest.mark.points(1)
def test_training_std(submission, houses, statistic_source):
    """std is the standard deviation of each feature over the training houses only"""
    _training_statistic(submission, houses, statistic_source, "std")


@pytest.mark.points(2)
def test_normalize(submission, houses, implied_statistics, statistics_source):
    """normalize scales new houses with the training mean and std"""
    mean, std = houses.x_train.mean(axis=0), houses.x_train.std(axis=0)
    batch = houses.made_up(12, seed=5)
    for x in (batch, batch[:1]):
        found = submission.call_array("normalize", x)
        assert found.shape == x.shape, (
            f"normalize should return one row of 13 values per house: shape {x.shape} for"
            f" {len(x)} house(s), found {found.shape}")
        found = found.astype(float)
        expected = (x - mean) / std
        if np.allclose(found, expected, rtol=5e-3, atol=2e-3):
            continue
        if len(x) == 1:
            raise AssertionError(
                f"normalize gives {found.ravel()[:3].round(3).tolist()}... for a single new house,"
                f" not {expected.ravel()[:3].round(3).tolist()}...: it should use the training"
                " mean and std, whatever houses it is given (a single house has no std of its"
                " own)")
        own = (x - x.mean(axis=0)) / x.std(axis=0)
        implied = implied_statistics(x, found)
        if np.allclose(found, own, rtol=5e-3, atol=2e-3):
            detail = ("it scales the houses it is given by their own mean and std; use the"
                      " training mean and std for every house")
        elif implied is not None and statistics_source(*implied, houses):
            detail = f"it uses the statistics of {statistics_source(*implied, houses)}"
        else:
            worst = np.unravel_index(np.argmax(np.abs(found - expected)), found.shape)
            detail = (f"house {worst[0] + 1}, {houses.FEATURES[worst[1]]}: expected"
                      f" {expected[worst]:.4g}, found {found[worst]:.4g}")
        raise AssertionError(
            f"normalize(x) should return (x - mean) / std with the mean and std of the training"
            f" houses, for any new houses x; for 12 made-up houses it does not: {detail}")


@pytest.mark.points(1)
def test_model_is_linear(submission, houses, affine_error):
    """model is a trained linear Keras model with 13 inputs and 1 output"""
    model = submission.model("model")
    problem = linear_problem(model)
    assert not problem, f"model is not linear: {problem}"
    assert not untrained(model), (
        "model has not been trained: its bias is still 0, where Keras starts it; train it with"
        " model.fit")
    problem = shape_problem(model, "model", inputs=13, outputs=1,
                            takes="13 inputs (the features)", gives="1 output (the price)")
    assert not problem, problem
    assert affine_error(model, houses) <= 1e-2, (
        "model is not linear: its predictions are not an affine function of the features")


@pytest.mark.points(1)
def test_training_curves(submission, feedback):
    """history holds training and validation loss, and the training loss went down"""
    import matplotlib.pyplot as plt

    history = submission.history("history")
    loss, val_loss = history.get("loss", []), history.get("val_loss", [])
    assert len(loss) >= 2, f"history should record at least 2 epochs of loss, found {len(loss)}"
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    plot_curves(ax, history, "loss", ylabel=r"mean squared error (k\$²)", log=True)
    feedback.figure(fig, "Your training and validation curves")
    assert val_loss, ("history has no val_loss: pass validation_data=(normalize(x_val), y_val) to"
                      " model.fit so that the validation error is recorded")
    assert loss[-1] < loss[0], (
        f"the training loss should go down: {loss[0]:.4g} in the first epoch, {loss[-1]:.4g} in"
        " the last")
