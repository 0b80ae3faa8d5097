"""Helpers shared by assignment04's checks (trusted code: never shipped to students).

Photos are read here, in the trusted process, the way `image_dataset_from_directory` reads them
(decoded to RGB, bilinear resize without antialiasing, float pixels 0-255), then put on the scale
the model takes: [0, 1], or 0-255 when the model starts with its own Rescaling(1/255)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from grader import checks
from grader.checks import StudentValueError, all_layers

CLASSES = ("cats", "dogs")  # label 0 and 1: the folders in alphabetical order, as both loaders do
AUGMENTING_PREFIX = "Random"  # RandomFlip, RandomRotation, RandomZoom, RandomTranslation, ...
PASSIVE = ("InputLayer",)  # layers that compute nothing before the model's first real layer


@dataclass(frozen=True)
class Photos:
    """Labelled photos on the scale the model takes, with the files they came from."""

    images: np.ndarray  # (n, height, width, 3) float32
    labels: np.ndarray  # (n,) 0 = cat, 1 = dog
    files: tuple[str, ...]


def augmenting_layers(model: Any) -> list[Any]:
    """The random preprocessing layers of MODEL (nested models included), in order."""
    return [layer for layer in all_layers(model)
            if type(layer).__name__.startswith(AUGMENTING_PREFIX)]


def rescales_itself(model: Any) -> bool:
    """Whether MODEL's first computing layer after the augmentation is Rescaling(1/255)."""
    for layer in all_layers(model):
        name = type(layer).__name__
        if name in PASSIVE or name.startswith(AUGMENTING_PREFIX):
            continue
        if name != "Rescaling":
            return False
        scale, offset = np.ravel(layer.scale), np.ravel(layer.offset)
        return bool(np.allclose(scale, 1 / 255, rtol=0.02) and np.allclose(offset, 0, atol=0.01))
    return False


def pixel_scale(model: Any) -> float:
    """The largest pixel value MODEL takes: 255 if it rescales itself, else 1."""
    return 255.0 if rescales_itself(model) else 1.0


def image_size(model: Any, submission: Any) -> tuple[int, int]:
    """(height, width) of the photos MODEL takes: its input shape, else the notebook's IMAGE_SIZE."""
    shape = tuple(model.inputs[0].shape)[1:] if model.inputs else ()
    if len(shape) != 3 or shape[2] != 3:
        raise StudentValueError(
            f"model should take colour photos of shape IMAGE_SIZE + (3,), found input shape {shape}"
            "; start it with keras.Input(shape=IMAGE_SIZE + (3,))")
    if shape[0] and shape[1]:
        return int(shape[0]), int(shape[1])
    return notebook_image_size(submission)


def notebook_image_size(submission: Any) -> tuple[int, int]:
    """The notebook's IMAGE_SIZE, (height, width)."""
    size = submission.get("IMAGE_SIZE")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) for s in size)):
        raise StudentValueError("IMAGE_SIZE should be (height, width), two whole numbers")
    return size[0], size[1]


def read_photos(files: list[Path], size: tuple[int, int], scale: float) -> np.ndarray:
    """FILES decoded and resized as image_dataset_from_directory does, pixels 0..SCALE."""
    import tensorflow as tf

    images = []
    for path in files:
        image = tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False)
        images.append(tf.image.resize(image, size, method="bilinear").numpy())
    return np.stack(images).astype("float32") * np.float32(scale / 255.0)


def labelled_photos(folder: Path, size: tuple[int, int], scale: float,
                    per_class: int | None = None) -> Photos:
    """The photos of FOLDER/cats and FOLDER/dogs (the first PER_CLASS of each, by file name)."""
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(CLASSES):
        found = sorted((folder / name).glob("*.jpg"), key=lambda p: int(p.name.split(".")[1]))
        found = found[:per_class] if per_class else found
        files += found
        labels += [label] * len(found)
    return Photos(read_photos(files, size, scale), np.array(labels), tuple(p.name for p in files))


def output_problem(model: Any) -> str:
    """'' when MODEL ends in one sigmoid unit or two softmax units, else what it ends in."""
    import keras

    found = tuple(model.outputs[0].shape)[1:]
    last = [layer for layer in all_layers(model)
            if isinstance(layer, (keras.layers.Dense, keras.layers.Activation,
                                  keras.layers.Softmax))]
    activation = ""
    if last:
        layer = last[-1]
        activation = ("softmax" if isinstance(layer, keras.layers.Softmax)
                      else getattr(layer.activation, "__name__", str(layer.activation)))
    if found == (1,) and activation == "sigmoid":
        return ""
    if found == (2,) and activation == "softmax":
        return ""
    return (f"model should end in one Dense unit with the sigmoid activation (or two softmax"
            f" units), found output shape {found} with the {activation or 'no'} activation")


def conv_blocks(model: Any) -> int:
    """How many Conv2D blocks MODEL has: runs of Conv2D layers each closed by a MaxPooling2D."""
    blocks, open_block = 0, False
    for layer in all_layers(model):
        name = type(layer).__name__
        if name in ("Conv2D", "SeparableConv2D"):
            open_block = True
        elif name == "MaxPooling2D" and open_block:
            blocks, open_block = blocks + 1, False
    return blocks


def dog_probability(model: Any, images: np.ndarray) -> np.ndarray:
    """MODEL's probability that each image shows a dog."""
    scores = np.asarray(model.predict(images, batch_size=50, verbose=0), dtype=float)
    if scores.ndim == 2 and scores.shape[1] == 2:
        return scores[:, 1]
    return scores.reshape(len(images))


def problem_for_evaluation(model: Any) -> str:
    """Why MODEL cannot be evaluated on photos ('' when it can)."""
    problem = checks.unevaluable(model)
    if problem:
        return problem
    problem = output_problem(model)
    return f"the model could not be evaluated: {problem}" if problem else ""


@pytest.fixture(scope="session")
def student_model(submission):
    """The student's model, its photo size and its pixel scale."""
    model = submission.model("model")
    return model, image_size(model, submission), pixel_scale(model)


@pytest.fixture(scope="session")
def photo_format(submission):
    """(height, width) and pixel scale the photos should have: the model's where there is one,
    else the notebook's IMAGE_SIZE in [0, 1]."""
    try:
        model = submission.model("model")
    except StudentValueError:
        return notebook_image_size(submission), 1.0
    return image_size(model, submission), pixel_scale(model)


@pytest.fixture(scope="session")
def training_folder(student_data) -> Path:
    """The students' training photos, as prepared (not as the student left them)."""
    return student_data / "cats_and_dogs" / "train"


@pytest.fixture(scope="session")
def validation_folder(student_data) -> Path:
    """The students' validation photos, as prepared."""
    return student_data / "cats_and_dogs" / "validation"


# The helpers as fixtures: checks are imported in importlib mode and cannot import conftest.
@pytest.fixture(scope="session")
def blocks_of():
    """How many Conv2D + MaxPooling2D blocks a model has."""
    return conv_blocks


@pytest.fixture(scope="session")
def ending_problem():
    """What is wrong with a model's output layer ('' when nothing)."""
    return output_problem


@pytest.fixture(scope="session")
def random_layers():
    """The augmentation layers of a model."""
    return augmenting_layers


@pytest.fixture(scope="session")
def photos_in():
    """Labelled photos of a cats/ dogs/ folder, read here as image_dataset_from_directory does."""
    return labelled_photos


@pytest.fixture(scope="session")
def dog_probabilities():
    """A model's probability that each photo shows a dog."""
    return dog_probability


@pytest.fixture(scope="session")
def evaluation_problem():
    """Why a model cannot be evaluated on photos ('' when it can)."""
    return problem_for_evaluation


@pytest.fixture
def untrained():
    """Whether a model was never trained."""
    return checks.untrained
