"""Public checks of assignment04: students may read and run these."""

import numpy as np
import pytest

from grader.checks import plot_curves

MIN_BLOCKS = 3


def _labels_problem(labels: np.ndarray, batch: int) -> str:
    """What is wrong with a batch of labels ('' when nothing): 0/1 per photo, or one-hot pairs."""
    if labels.ndim == 2 and labels.shape == (batch, 2):
        labels = labels.argmax(axis=1) if np.all(labels.sum(axis=1) == 1) else labels
    flat = labels.reshape(-1)
    if flat.shape != (batch,):
        return (f"sample_labels should hold one label per photo ({batch}), found shape"
                f" {labels.shape}")
    if not np.all(np.isin(flat, (0, 1))):
        return (f"sample_labels should be 0 (cat) or 1 (dog), found values like"
                f" {np.unique(flat)[:5]}; use label_mode='binary' (or class_mode='binary')")
    return ""


@pytest.mark.points(2)
def test_data_pipeline(submission, photo_format):
    """train_data gives batches of photos of the model's size, rescaled, with 0/1 labels"""
    size, scale = photo_format
    images = submission.array("sample_images")
    labels = submission.array("sample_labels")
    expected = (*size, 3)
    assert images.ndim == 4 and images.shape[1:] == expected, (
        f"sample_images (a batch of train_data) should have shape (batch,) + {expected}, the"
        f" photo size your model takes; found {images.shape}")
    assert images.dtype.kind == "f", (
        f"the photos should be floating-point numbers (float32), found {images.dtype}")
    problem = _labels_problem(labels, len(images))
    assert not problem, problem
    low, high = float(images.min()), float(images.max())
    if scale == 1:
        assert low >= -1e-3 and high <= 1 + 1e-3, (
            f"the photos of train_data should lie in [0, 1], found values from {low:.3g} to"
            f" {high:.3g}: divide the pixels by 255 (rescale=1./255)")
        assert high > 0.2, (
            f"the photos of train_data are nearly black (largest value {high:.3g}): were they"
            " divided by 255 twice?")
    else:
        assert low >= -1e-3 and 1.5 < high <= 255 + 1e-3, (
            f"your model rescales the photos itself (its Rescaling(1/255) layer), so train_data"
            f" should give pixels from 0 to 255, found values from {low:.3g} to {high:.3g}:"
            " rescale once, in the pipeline or in the model, not both")


@pytest.mark.points(1)
def test_model_is_a_trained_convnet(student_model, blocks_of, ending_problem, untrained):
    """model is a trained convolutional network with one sigmoid output (or two softmax outputs)"""
    model, _, _ = student_model
    blocks = blocks_of(model)
    assert blocks >= MIN_BLOCKS, (
        f"model should have at least {MIN_BLOCKS} blocks of Conv2D layers each followed by"
        f" MaxPooling2D, found {blocks}")
    problem = ending_problem(model)
    assert not problem, problem
    assert not untrained(model), (
        "model has not been trained: its biases and batch-normalisation statistics are still"
        " where Keras starts them; check that the cell that calls fit runs without an error")


@pytest.mark.points(1)
def test_learning_curves(submission, feedback):
    """history records the training and validation loss and accuracy of every epoch"""
    import matplotlib.pyplot as plt

    history = submission.history("history")
    accuracy = next((k for k in ("accuracy", "acc", "binary_accuracy",
                                 "sparse_categorical_accuracy") if k in history), "accuracy")
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.0))
    plot_curves(axes[0], history, "loss", "loss (binary cross-entropy)")
    plot_curves(axes[1], history, accuracy, "accuracy")
    fig.tight_layout()
    feedback.figure(fig, "Your learning curves: a widening gap between training and validation"
                         " is overfitting")
    missing = [k for k in ("loss", accuracy, "val_loss", "val_" + accuracy) if not history.get(k)]
    assert not missing, (
        f"history does not record {', '.join(missing)}: compile with metrics=['accuracy'] and"
        " pass validation_data=validation_data to fit")
    epochs = len(history["loss"])
    assert epochs >= 2, f"history holds {epochs} epoch: train for more than one"
