"""Public checks of assignment03: students may read and run these."""

import numpy as np
import pytest

from grader.checks import StudentValueError, history_problem, layer_problem, plot_curves, shape_problem, untrained

PREPROCESSED = "vectors of 784 values (preprocessed images)"


@pytest.mark.points(1)
def test_preprocess(submission):
    """preprocess turns images into vectors of 784 values in [0, 1]"""
    images = np.random.default_rng(3).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    for batch in (images, images[:1]):
        found = submission.call_array("preprocess", batch)
        n = len(batch)
        assert found.shape == (n, 784), (
            f"preprocess should turn {n} image(s) of 28 x 28 pixels into an array of shape"
            f" ({n}, 784); found shape {found.shape}")
        assert found.dtype.kind == "f", (
            f"preprocess should give floating-point values (float32), found {found.dtype}")
        assert found.max() <= 1.0 + 1e-6, (
            f"preprocess gives values up to {found.max():.4g}: divide the pixels by 255 so that"
            " they lie in [0, 1]")
        expected = batch.reshape(n, 784) / 255.0
        worst = int(np.argmax(np.abs(found - expected).max(axis=0)))
        assert np.allclose(found, expected, atol=1e-6), (
            f"preprocess should keep each image's pixels in row order (reshape) and divide them"
            f" by 255: value {worst + 1} of the first image should be {expected[0, worst]:.4f},"
            f" found {found[0, worst]:.4f}")


def _regression_guesses(submission, validation_digits, vectors):
    """The student's regression and its predictions for the validation digits (images, labels,
    guesses), computed here from the exported model."""
    regression = submission.model("regression")
    problem = shape_problem(regression, "regression", 784, 1, takes=PREPROCESSED)
    assert not problem, problem
    images, labels = validation_digits
    guesses = regression.predict(vectors(images), batch_size=1000, verbose=0).ravel()
    return regression, labels, guesses


@pytest.mark.points(1)
def test_regression(submission, validation_digits, vectors, feedback):
    """regression is a trained model of one Dense unit without activation"""
    import matplotlib.pyplot as plt

    regression, labels, guesses = _regression_guesses(submission, validation_digits, vectors)
    problem = layer_problem(regression, units=1, activations=("linear",))
    assert not problem, f"regression should be one Dense unit with no activation: {problem}"
    assert not untrained(regression), (
        "regression has not been trained: its bias is still 0; train it with regression.fit")
    assert np.all(np.isfinite(guesses)), (
        "regression predicts NaN or infinite numbers: its training diverged (are the inputs"
        " scaled to [0, 1]?)")
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.boxplot([guesses[labels == d] for d in range(10)], positions=range(10), widths=0.6,
               showfliers=False)
    ax.plot([-0.5, 9.5], [-0.5, 9.5], color="tab:red", linewidth=1, label="prediction = label")
    ax.set_xlabel("true label")
    ax.set_ylabel("regression's prediction")
    ax.legend(loc="upper left")
    feedback.figure(fig, "What your regression predicts for each digit of the 10,000 validation"
                         " digits (boxes: middle half of the predictions; whiskers: most of the rest)")


@pytest.mark.points(1)
def test_regression_accuracy(submission, validation_digits, vectors):
    """regression_accuracy is the regression's accuracy on the validation digits"""
    _, labels, guesses = _regression_guesses(submission, validation_digits, vectors)
    expected = float(np.mean(np.round(guesses) == labels))
    found = submission.number("regression_accuracy")
    assert abs(found - expected) <= 0.01, (
        f"regression_accuracy should be the share of the 10,000 validation digits whose rounded"
        f" prediction equals their label, {expected:.3f} for your regression; found {found:.3f}")


@pytest.mark.points(1)
def test_classifier_is_linear(submission):
    """model is a trained linear classifier: one Dense layer of 10 units, no hidden layer"""
    model = submission.model("model")
    problem = layer_problem(model, units=10, activations=("softmax", "linear"))
    assert not problem, f"model is not a linear classifier: {problem}"
    problem = shape_problem(model, "model", 784, 10, takes=PREPROCESSED)
    assert not problem, problem
    assert not untrained(model), "model has not been trained: its biases are still 0"


@pytest.mark.points(1)
def test_training_curves(submission, feedback, credit):
    """history and regression_history hold training and validation loss (half the points each)"""
    import matplotlib.pyplot as plt

    histories = {}
    for name in ("regression_history", "history"):
        if submission.has(name):
            histories[name] = submission.history(name)
    panels = []  # (history, metric, title)
    if "regression_history" in histories:
        panels.append((histories["regression_history"], "loss",
                       "regression on the labels: loss (MSE)"))
    if "history" in histories:
        # the accuracy under whatever name its metric gives it (accuracy, categorical_accuracy,
        # sparse_categorical_accuracy, ...), as the given plot cell reads it
        accuracy = next((k for k in histories["history"]
                         if "acc" in k and not k.startswith("val_")), "accuracy")
        panels.append((histories["history"], "loss", "classifier: loss (cross-entropy)"))
        panels.append((histories["history"], accuracy, "classifier: accuracy"))
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(3.7 * len(panels), 3.0), squeeze=False)
        for ax, (history, metric, title) in zip(axes[0], panels):
            plot_curves(ax, history, metric, title)
        if "history" in histories:
            try:
                line = submission.number("regression_accuracy")
            except StudentValueError:
                line = None
            if line is not None:
                axes[0][-1].axhline(line, color="gray", linestyle="--",
                                    label="regression_accuracy")
                axes[0][-1].legend(fontsize=8)
        fig.tight_layout()
        feedback.figure(fig, "Your training and validation curves")
    names = ("regression_history", "history")
    problems = [p for p in (history_problem(histories, name) for name in names) if p]
    if problems:
        credit.award(1 - len(problems) / len(names), "; ".join(problems))
