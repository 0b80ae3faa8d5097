"""Helpers shared by assignment05's checks (trusted code: never shipped to students).

The hidden reviews are encoded here, in the trusted process, exactly as the notebook's given
`load_sequences` encodes the training reviews: word ranks of the `_seq.npz` file, every rank at or
above the student's NUM_WORDS replaced by 2 (out of vocabulary), the last MAXLEN tokens kept, 0s
in front (keras' `pad_sequences` defaults). A model whose input is a string tensor (it holds its
own TextVectorization) gets the raw texts instead."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from grader.checks import StudentValueError, all_layers

OOV = 2  # the index_from=3 convention: 0 pads, 1 starts a review, 2 is a word out of vocabulary
GATES = "ifco"  # Keras' order of the four blocks of columns of kernel, recurrent_kernel and bias


@dataclass(frozen=True)
class Reviews:
    """Labelled reviews: their texts and their word ranks (flat tokens cut by offsets)."""

    texts: tuple[str, ...]
    labels: np.ndarray  # (n,) 0 = negative, 1 = positive
    tokens: np.ndarray
    offsets: np.ndarray


def encode(tokens: np.ndarray, offsets: np.ndarray, num_words: int, maxlen: int) -> np.ndarray:
    """The reviews as the notebook's load_sequences makes them: (n, maxlen) int32."""
    x = np.zeros((len(offsets) - 1, maxlen), dtype="int32")
    for i in range(len(offsets) - 1):
        review = tokens[offsets[i]:offsets[i + 1]]
        review = np.where(review < num_words, review, OOV)[-maxlen:]
        x[i, maxlen - len(review):] = review
    return x


def read_reviews(folder: Path, stem: str) -> Reviews:
    """STEM.jsonl and STEM_seq.npz of FOLDER."""
    lines = (folder / f"{stem}.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    with np.load(folder / f"{stem}_seq.npz", allow_pickle=False) as data:
        tokens, offsets, labels = data["tokens"], data["offsets"], data["y"].astype(int)
    texts = tuple(row["text"] for row in rows)
    if len(texts) != len(labels) or not np.array_equal([r["label"] for r in rows], labels):
        raise ValueError(f"{stem}.jsonl and {stem}_seq.npz disagree")  # a fault of the data
    return Reviews(texts, labels, tokens, offsets)


def whole_number(submission: Any, name: str, low: int, high: int) -> int:
    """The notebook's NAME, a whole number from LOW to HIGH."""
    value = submission.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise StudentValueError(f"{name} should be a whole number from {low:,} to {high:,},"
                                f" found {value!r}")
    return value


def takes_text(model: Any) -> bool:
    """Whether MODEL takes raw texts (a string input) rather than word ranks."""
    return bool(model.inputs) and "string" in str(model.inputs[0].dtype)


def input_problem(model: Any, maxlen: int) -> str:
    """What is wrong with MODEL's input ('' when nothing): MAXLEN word ranks, or one text."""
    if not model.inputs or len(model.inputs) != 1:
        return "model should have one input: keras.Input(shape=(MAXLEN,), dtype='int32')"
    shape = tuple(model.inputs[0].shape)[1:]
    if takes_text(model):
        if shape in ((), (1,)):
            return ""
        return (f"a model that takes raw texts should take one string per review (shape () or"
                f" (1,)), found input shape {shape}")
    if len(shape) == 1 and shape[0] in (None, maxlen):
        return ""
    return (f"model should take MAXLEN = {maxlen} word indices per review, found input shape"
            f" {shape}: start it with keras.Input(shape=(MAXLEN,), dtype='int32')")


def model_inputs(model: Any, reviews: Reviews, num_words: int, maxlen: int) -> Any:
    """What MODEL takes for REVIEWS: their texts, or their ranks encoded with the student's
    NUM_WORDS and MAXLEN."""
    import tensorflow as tf

    if takes_text(model):
        shape = tuple(model.inputs[0].shape)[1:]
        texts = list(reviews.texts)
        return tf.constant([[t] for t in texts] if shape == (1,) else texts)
    return encode(reviews.tokens, reviews.offsets, num_words, maxlen)


def positive_probability(model: Any, inputs: Any) -> np.ndarray:
    """MODEL's probability that each review is positive."""
    scores = np.asarray(model.predict(inputs, batch_size=500, verbose=0), dtype=float)
    if scores.ndim == 2 and scores.shape[1] == 2:
        return scores[:, 1]
    if scores.ndim == 1 or scores.shape[1:] == (1,):
        return scores.reshape(len(scores))
    raise StudentValueError(f"model should give one probability per review, found outputs of"
                            f" shape {scores.shape[1:]}")


def layer_names(model: Any) -> list[str]:
    """The class names of MODEL's layers, nested models and Bidirectional wrappers read too."""
    names = []
    for layer in all_layers(model):
        names.append(type(layer).__name__)
        inner = getattr(layer, "forward_layer", None) or getattr(layer, "layer", None)
        if inner is not None:
            names.append(type(inner).__name__)
    return names


def lstm_numpy(x, h, c, kernel, recurrent_kernel, bias, order: str = GATES):
    """One LSTM step in float64, the four blocks of columns read in ORDER (Keras': 'ifco')."""
    def sigmoid(z):
        return 1 / (1 + np.exp(-z))

    z = x @ kernel + h @ recurrent_kernel + bias
    block = dict(zip(order, np.split(z, 4, axis=1)))
    c_new = sigmoid(block["f"]) * c + sigmoid(block["i"]) * np.tanh(block["c"])
    return sigmoid(block["o"]) * np.tanh(c_new), c_new


def lstm_keras(x, h, c, kernel, recurrent_kernel, bias):
    """One step of keras.layers.LSTM with these weights, from state (H, C): (h_new, c_new)."""
    import keras

    units = h.shape[1]
    layer = keras.layers.LSTM(units, return_state=True)
    layer.build((None, 1, x.shape[1]))
    layer.set_weights([kernel, recurrent_kernel, bias])
    _, h_new, c_new = layer(x[:, None, :], initial_state=[h, c])
    return np.asarray(h_new, dtype=float), np.asarray(c_new, dtype=float)


@pytest.fixture(scope="session")
def numbers(submission) -> tuple[int, int]:
    """The notebook's NUM_WORDS and MAXLEN."""
    return (whole_number(submission, "NUM_WORDS", 3, 1_000_000),
            whole_number(submission, "MAXLEN", 1, 5_000))


def load_model(submission: Any) -> Any:
    """The student's model, with what to do when Keras cannot load its TextVectorization back."""
    try:
        return submission.model("model")
    except StudentValueError as exc:
        if "repeated term" not in str(exc):
            raise
        raise StudentValueError(
            "model could not be loaded back: the vocabulary of its TextVectorization holds a"
            " line-break character (IMDB reviews hold '\\x85'), which Keras cannot reload;"
            " replace '\\x85' by a space in the texts you adapt it on") from None


@pytest.fixture(scope="session")
def student_model(submission):
    """The student's model."""
    return load_model(submission)


# The helpers as fixtures: checks are imported in importlib mode and cannot import conftest.
@pytest.fixture(scope="session")
def reviews_in():
    """Labelled reviews of a folder, read here (texts and word ranks)."""
    return read_reviews


@pytest.fixture(scope="session")
def inputs_for():
    """What a model takes for some reviews: texts, or ranks encoded as the notebook does."""
    return model_inputs


@pytest.fixture(scope="session")
def probabilities():
    """A model's probability that each review is positive."""
    return positive_probability


@pytest.fixture(scope="session")
def input_problem_of():
    """What is wrong with a model's input ('' when nothing)."""
    return input_problem


@pytest.fixture(scope="session")
def layers_of():
    """The class names of a model's layers."""
    return layer_names


@pytest.fixture(scope="session")
def lstm_reference():
    """(keras' one LSTM step, a NumPy step that reads the gates in a given order)."""
    return lstm_keras, lstm_numpy
