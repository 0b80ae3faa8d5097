"""Hidden checks of assignment05: the model reads the sentiment of 25,000 reviews it never saw.

The hidden reviews never enter the notebook's kernel: they are encoded (or, for a model with its
own TextVectorization, handed over as texts) and the model evaluated here, in the trusted
process."""

import numpy as np
import pytest

from grader.checks import confusion_figure, unevaluable

CLASS_NAMES = ("negative", "positive")
SHOWN_MISTAKES = 5
SHOWN_CHARACTERS = 300
# Set from the measured reference (README.md: Reference).
TIERS = [(0.87, 1.0), (0.85, 0.75), (0.82, 0.5), (0.75, 0.25)]


def _excerpt(text: str) -> str:
    """The review on one line (its <br /> tags as spaces), cut to SHOWN_CHARACTERS."""
    flat = " ".join(text.replace("<br />", " ").split())
    return flat if len(flat) <= SHOWN_CHARACTERS else flat[:SHOWN_CHARACTERS - 3] + "..."


def _mistakes(texts, labels, positive, predicted) -> str:
    """The SHOWN_MISTAKES reviews the model was most confidently wrong about."""
    confidence = np.where(predicted == 1, positive, 1 - positive)
    wrong = np.flatnonzero(predicted != labels)
    picked = wrong[np.argsort(-confidence[wrong], kind="stable")[:SHOWN_MISTAKES]]
    return "\n\n".join(
        f"{k}. a {CLASS_NAMES[labels[i]]} review read as {CLASS_NAMES[predicted[i]]}"
        f" (probability {confidence[i]:.3f}):\n{_excerpt(texts[i])}"
        for k, i in enumerate(picked, start=1))


@pytest.mark.points(4)
def test_hidden_accuracy(student_model, numbers, hidden, reviews_in, inputs_for, probabilities,
                         input_problem_of, credit, feedback):
    """The model reads the sentiment of 25,000 reviews it has never seen"""
    model = student_model
    num_words, maxlen = numbers
    problem = unevaluable(model) or input_problem_of(model, maxlen)
    assert not problem, problem
    reviews = reviews_in(hidden, "imdb_test")
    positive = probabilities(model, inputs_for(model, reviews, num_words, maxlen))
    n = len(reviews.labels)
    assert np.all(np.isfinite(positive)), (
        "the model could not be evaluated: its outputs for unseen reviews are not finite numbers"
        " (did training diverge?)")
    predicted = (positive >= 0.5).astype(int)
    accuracy = float(np.mean(predicted == reviews.labels))
    feedback.figure(confusion_figure(reviews.labels, predicted, CLASS_NAMES, noun="review"),
                    f"How your model read the {n:,} reviews it never saw")
    if accuracy < 1:
        feedback.text("The unseen reviews your model was most confidently wrong about",
                      _mistakes(reviews.texts, reviews.labels, positive, predicted))
    credit.tiers(accuracy, TIERS, f"accuracy on {n:,} unseen reviews")
