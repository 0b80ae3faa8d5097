"""Public checks of assignment05: students may read and run these."""

import itertools

import numpy as np
import pytest

from grader.checks import StudentValueError, all_layers, plot_curves, untrained

TOLERANCE = 1e-5
# (batch, input_dim, units) of the made-up steps: one like the slides', one with one review
SIZES = ((3, 5, 4), (1, 7, 2))
HINTS = {
    "h": "h is off while c is right: the new h is o * tanh(c_new), the output gate times the"
         " tanh of the new cell state",
    "c": "c is off while h is right",
    "both": "h and c are both off: check the gate order (Keras' columns are i, f, c, o: input,"
            " forget, candidate, output), the sigmoid on i, f and o, and the tanh on the candidate;"
            " c_new = f * c + i * candidate",
}


def _made_up_step(rng: np.random.Generator, batch: int, input_dim: int, units: int):
    """x, h, c, kernel, recurrent_kernel, bias drawn here (float32 values)."""
    def draw(*shape, scale=1.0):
        return rng.normal(scale=scale, size=shape).astype("float32").astype("float64")

    return (draw(batch, input_dim), draw(batch, units), draw(batch, units),
            draw(input_dim, 4 * units, scale=0.6), draw(units, 4 * units, scale=0.6),
            draw(4 * units, scale=0.6))


def _order_found(args, found_h, found_c, lstm_numpy) -> str:
    """The gate order ('fico', ...) whose step gives what the student's does, or ''."""
    for order in map("".join, itertools.permutations("ifco")):
        h, c = lstm_numpy(*args, order=order)
        if np.allclose(h, found_h, atol=TOLERANCE) and np.allclose(c, found_c, atol=TOLERANCE):
            return order
    return ""


@pytest.mark.points(3)
def test_lstm_step(submission, lstm_reference):
    """lstm_step computes one step of keras.layers.LSTM from its weights"""
    lstm_keras, lstm_numpy = lstm_reference
    rng = np.random.default_rng(2024)
    for batch, input_dim, units in SIZES:
        args = _made_up_step(rng, batch, input_dim, units)
        found = submission.call_array("lstm_step", *args)
        shape = (2, batch, units)
        if found.shape != shape:
            raise StudentValueError(
                f"lstm_step should return (h_new, c_new), each of shape (batch, units) ="
                f" {shape[1:]}, found {'shape ' + str(found.shape) if found.ndim else 'a number'}")
        expected_h, expected_c = lstm_keras(*[a.astype("float32") for a in args])
        off_h = float(np.max(np.abs(found[0] - expected_h)))
        off_c = float(np.max(np.abs(found[1] - expected_c)))
        if off_h <= TOLERANCE and off_c <= TOLERANCE:
            continue
        which = "both" if off_h > TOLERANCE and off_c > TOLERANCE else "h" if off_h > TOLERANCE \
            else "c"
        order = _order_found(args, found[0], found[1], lstm_numpy)
        hint = (f"your step reads the gates in the order {', '.join(order)}; Keras' columns are"
                " i, f, c, o (input, forget, candidate, output)" if order else HINTS[which])
        pytest.fail(f"lstm_step differs from keras.layers.LSTM with the same weights (batch"
                    f" {batch}, input_dim {input_dim}, units {units}): h off by up to"
                    f" {off_h:.2g}, c off by up to {off_c:.2g}. {hint}")


@pytest.mark.points(1)
def test_model_is_a_trained_lstm(student_model, numbers, layers_of, input_problem_of):
    """model is a trained Embedding + LSTM + one sigmoid unit that takes MAXLEN word indices"""
    num_words, maxlen = numbers
    model = student_model
    problem = input_problem_of(model, maxlen)
    assert not problem, problem
    names = layers_of(model)
    for needed, what in (("Embedding", "an Embedding layer"), ("LSTM", "an LSTM layer")):
        assert needed in names, (f"model should have {what}; its layers are"
                                 f" {', '.join(names)}")
    embeddings = [layer for layer in all_layers(model) if type(layer).__name__ == "Embedding"]
    if "TextVectorization" not in names:
        assert embeddings[0].input_dim >= num_words, (
            f"the Embedding layer has input_dim {embeddings[0].input_dim}, fewer than NUM_WORDS ="
            f" {num_words}: word indices go up to NUM_WORDS - 1; use Embedding(NUM_WORDS, ...)")
    found = tuple(model.outputs[0].shape)[1:]
    activation = getattr(all_layers(model)[-1], "activation", None)
    activation = getattr(activation, "__name__", str(activation))
    assert found == (1,) and activation == "sigmoid", (
        f"model should end in one Dense unit with the sigmoid activation (the probability that"
        f" the review is positive), found output shape {found} with the {activation} activation")
    assert not untrained(model), (
        "model has not been trained: its biases are still 0, where Keras starts them; check that"
        " the cell that calls fit runs without an error")


@pytest.mark.points(1)
def test_learning_curves(submission, feedback):
    """history records the training and validation loss and accuracy of every epoch"""
    import matplotlib.pyplot as plt

    history = submission.history("history")
    accuracy = next((k for k in ("accuracy", "acc", "binary_accuracy") if k in history),
                    "accuracy")
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.0))
    plot_curves(axes[0], history, "loss", "loss (binary cross-entropy)")
    plot_curves(axes[1], history, accuracy, "accuracy")
    fig.tight_layout()
    feedback.figure(fig, "Your learning curves: a validation loss that turns up while the"
                         " training loss keeps falling is overfitting")
    missing = [k for k in ("loss", accuracy, "val_loss", "val_" + accuracy) if not history.get(k)]
    assert not missing, (
        f"history does not record {', '.join(missing)}: compile with metrics=['accuracy'] and"
        " pass validation_split=0.1 to fit")
    epochs = len(history["loss"])
    assert epochs >= 2, f"history holds {epochs} epoch: train for more than one"
