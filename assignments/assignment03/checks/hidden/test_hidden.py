"""Hidden checks of assignment03: the classifier reads digits it has never seen.

The hidden digits never enter the notebook's kernel: the model is evaluated on them here, in the
trusted process."""

import numpy as np
import pytest


def _test_digits(hidden):
    with np.load(hidden / "mnist_test.npz") as data:
        return data["x"], data["y"]


def _confusion_figure(labels, predicted):
    import matplotlib.pyplot as plt

    counts = np.zeros((10, 10), dtype=int)
    np.add.at(counts, (labels, predicted), 1)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    shown = counts.astype(float)
    np.fill_diagonal(shown, np.nan)  # the mistakes carry the colour; the diagonal is written
    image = ax.imshow(shown, cmap="Reds")
    for i in range(10):
        for j in range(10):
            if counts[i, j]:
                ax.text(j, i, counts[i, j], ha="center", va="center", fontsize=7,
                        color="black" if i != j else "tab:green",
                        fontweight="bold" if i == j else "normal")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    fig.colorbar(image, ax=ax, shrink=0.8, label="mistakes")
    return fig


def _mistakes_figure(images, labels, predicted, confidence):
    import matplotlib.pyplot as plt

    wrong = np.flatnonzero(predicted != labels)
    picked = wrong[np.argsort(-confidence[wrong], kind="stable")[:12]]
    fig, axes = plt.subplots(2, 6, figsize=(8, 3.2))
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, i in zip(axes.ravel(), picked):
        ax.imshow(images[i], cmap="binary")
        ax.set_title(f"{labels[i]} read as {predicted[i]}", fontsize=9)
    fig.tight_layout()
    return fig


@pytest.mark.points(4)
def test_hidden_accuracy(submission, hidden, vectors, layer_problem, shape_problem, unevaluable,
                         credit, feedback):
    """The classifier reads unseen digits right"""
    model = submission.model("model")
    problem = unevaluable(model)
    assert not problem, problem
    problem = layer_problem(model, units=10, activations=("softmax", "linear"))
    assert not problem, f"only a linear classifier earns these points: {problem}"
    problem = shape_problem(model, "model", 10)
    assert not problem, f"{problem}: the unseen digits are given to it as preprocess makes them"
    images, labels = _test_digits(hidden)
    scores = model.predict(vectors(images), batch_size=1000, verbose=0)
    assert np.all(np.isfinite(scores)), (
        "the model could not be evaluated: its outputs for unseen digits are not finite numbers"
        " (did training diverge?)")
    predicted = np.argmax(scores, axis=1)
    accuracy = float(np.mean(predicted == labels))
    feedback.figure(_confusion_figure(labels, predicted),
                    f"How your classifier read the {len(labels):,} digits it never saw (rows: the"
                    " true digit; columns: its answer; green: right)")
    if accuracy < 1:
        feedback.figure(_mistakes_figure(images, labels, predicted, scores.max(axis=1)),
                        "The unseen digits it got wrong with the highest score")
    credit.tiers(accuracy, [(0.92, 1.0), (0.90, 0.75), (0.85, 0.5), (0.70, 0.25)],
                 f"accuracy on {len(labels):,} unseen digits")
