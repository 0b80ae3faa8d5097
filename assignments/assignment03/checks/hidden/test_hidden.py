"""Hidden checks of assignment03: the classifier reads digits it has never seen.

The hidden digits never enter the notebook's kernel: the model is evaluated on them here, in the
trusted process."""

import numpy as np
import pytest

from grader.checks import confusion_figure, mistakes_figure, shape_problem, unevaluable

DIGITS = [str(d) for d in range(10)]
PREPROCESSED = "vectors of 784 values (preprocessed images)"


def _test_digits(hidden):
    with np.load(hidden / "mnist_test.npz") as data:
        return data["x"], data["y"]


@pytest.mark.points(4)
def test_hidden_accuracy(submission, hidden, vectors, credit, feedback):
    """The classifier reads unseen digits right"""
    model = submission.model("model")
    problem = unevaluable(model)
    assert not problem, problem
    # graded whenever its answers can be read: the digit with the highest output is its answer
    # whatever the activation (softmax, logits, even sigmoid), and a model that is not a linear
    # classifier loses test_classifier_is_linear's point, and only that
    problem = shape_problem(model, "model", 784, 10, takes=PREPROCESSED)
    assert not problem, f"{problem}: the unseen digits are given to it as preprocess makes them"
    images, labels = _test_digits(hidden)
    scores = model.predict(vectors(images), batch_size=1000, verbose=0)
    assert np.all(np.isfinite(scores)), (
        "the model could not be evaluated: its outputs for unseen digits are not finite numbers"
        " (did training diverge?)")
    predicted = np.argmax(scores, axis=1)
    accuracy = float(np.mean(predicted == labels))
    feedback.figure(confusion_figure(labels, predicted, DIGITS, noun="digit"),
                    f"How your classifier read the {len(labels):,} digits it never saw (rows: the"
                    " true digit; columns: its answer; green: right)")
    if accuracy < 1:
        feedback.figure(mistakes_figure(images, labels, predicted, scores.max(axis=1), DIGITS),
                        "The unseen digits it got wrong with the highest score")
    credit.tiers(accuracy, [(0.92, 1.0), (0.90, 0.75), (0.85, 0.5), (0.70, 0.25)],
                 f"accuracy on {len(labels):,} unseen digits")
