"""Hidden checks of assignment04: the augmentation keeps labels, the model recognises new photos.

The hidden photos never enter the notebook's kernel: they are read and the model evaluated on
them here, in the trusted process. The augmentation is tried on the students' own training
photos only."""

import numpy as np
import pytest

from grader.checks import StudentValueError, confusion_figure, mistakes_figure

AUGMENTED_PER_CLASS = 4  # the first 4 cats and 4 dogs of the training folder
LEVELS = 6  # colour levels per channel of the histograms that tell photos apart
KEPT_NEEDED = 0.75  # share of augmented photos that must be closest to their own photo
UPSIDE_DOWN_FLAGGED = 3  # of 16 skies turned over: vertical flips or rotations past 90 degrees
GAP_STANDARD_ERRORS = 4  # validation better than hidden by more than this: trained on validation
GAP_AT_LEAST = 0.05
CLASS_NAMES = ("cat", "dog")
# Set from the measured reference: 0.792 on these 500 photos after 38 epochs, the most that fits
# the 15 minutes `grader validate` may take on two CPU cores (README.md: Reference).
TIERS = [(0.78, 1.0), (0.74, 0.75), (0.70, 0.5), (0.60, 0.25)]


def _colour_histograms(images: np.ndarray) -> np.ndarray:
    """Each image's share of pixels in each of LEVELS**3 colour boxes (rows add up to 1), its
    channels first standardised (so brightness and contrast changes do not count).

    Flips, rotations, shifts and moderate zooms move pixels but keep most of their colours, so
    an augmented photo's histogram stays closest to its own photo's."""
    images = images.astype("float64")
    mean = images.mean(axis=(1, 2), keepdims=True)
    spread = np.maximum(images.std(axis=(1, 2), keepdims=True), 1e-6)
    standard = (images - mean) / spread  # mostly within 2 standard deviations
    boxes = np.clip(((standard + 2) / 4 * LEVELS).astype(int), 0, LEVELS - 1)
    codes = (boxes[..., 0] * LEVELS + boxes[..., 1]) * LEVELS + boxes[..., 2]
    counts = np.stack([np.bincount(c.ravel(), minlength=LEVELS**3) for c in codes])
    return counts / counts.sum(axis=1, keepdims=True)


def _own_photo_matches(originals: np.ndarray, augmented: np.ndarray) -> int:
    """How many augmented photos (two calls' worth, in order) are closest in colours to their own
    photo among all the originals (histogram intersection)."""
    own, found = _colour_histograms(originals), _colour_histograms(augmented)
    overlap = np.minimum(found[:, None, :], own[None, :, :]).sum(axis=-1)
    return int(np.sum(overlap.argmax(axis=1) == np.arange(len(augmented)) % len(originals)))


def _sky(shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Images bright at the top and dark at the bottom, like a sky over the ground."""
    height = shape[1]
    rows = np.linspace(0.9, 0.1, height, dtype="float32")[None, :, None, None]
    return np.broadcast_to(rows * scale, shape).copy()


def _upside_down(augmented_skies: np.ndarray, scale: float) -> int:
    """How many augmented skies get brighter from top to bottom: turned over. Pixels near 0 are
    left out: they are the fill of a rotation or shift, not the sky."""
    grey = augmented_skies.mean(axis=-1)
    turned = 0
    for image in grey:
        sky = image > 0.05 * scale
        rows = np.flatnonzero(sky.any(axis=1))
        if len(rows) < 2:
            continue
        brightness = [image[r][sky[r]].mean() for r in rows]
        turned += int(np.corrcoef(rows, brightness)[0, 1] > 0)
    return turned


def _augmenter(submission, model, random_layers):
    """A function that augments a batch as the submission does, and what it is."""
    layers = random_layers(model)
    if layers:
        def through_layers(images):
            x = images
            for layer in layers:
                x = layer(x, training=True)
            return np.asarray(x)
        names = ", ".join(type(layer).__name__ for layer in layers)
        return through_layers, f"the augmentation layers of model ({names})"

    def through_augment(images):
        try:
            return submission.call_array("augment", images)
        except StudentValueError as exc:
            if "is not defined" not in str(exc):
                raise
            raise AssertionError(
                "no augmentation found: model has no random preprocessing layers (RandomFlip,"
                " RandomRotation, ...) and augment is not defined. Augment the training photos,"
                " in the model or in the pipeline, and define augment(images)") from None
    return through_augment, "augment(images)"


def _grid(photos, first, second):
    """The photos over two rows of their augmented versions."""
    from grader.checks import image_grid

    names = [f"{name[:3]} {name.split('.')[1]}" for name in photos.files]
    titles = [*names, *["augmented"] * len(names), *["again"] * len(names)]
    return image_grid([*photos.images, *first, *second], titles, columns=len(names))


@pytest.mark.points(2)
def test_augmentation(submission, student_model, training_folder, photos_in, random_layers,
                      credit, feedback):
    """The training photos are augmented: randomly, visibly, and each keeps its label"""
    import keras

    model, size, scale = student_model
    photos = photos_in(training_folder, size, scale, per_class=AUGMENTED_PER_CLASS)
    originals = photos.images
    augment, used = _augmenter(submission, model, random_layers)
    keras.utils.set_random_seed(4)
    first, second = augment(originals.copy()), augment(originals.copy())
    for result in (first, second):
        assert result.shape == originals.shape, (
            f"{used} should return the photos in their shape {originals.shape}, found"
            f" {result.shape}")
    both = np.stack([first, second]).astype(float)
    assert np.all(np.isfinite(both)), f"{used} gives values that are not finite numbers"
    feedback.figure(_grid(photos, first, second),
                    f"8 of your training photos and what {used} made of them, twice")
    low, high = float(both.min()), float(both.max())
    assert low >= -0.25 * scale and 0.5 * scale <= high <= 1.25 * scale, (
        f"{used} should keep the photos' values from 0 to {scale:g}, found {low:.3g} to"
        f" {high:.3g}: do not rescale inside the augmentation")
    change = float(np.abs(first - originals).mean()) / scale
    assert change > 0.01, (
        f"{used} hardly changes the photos (mean change {change:.4f} of the value range): call"
        " the layers with training=True, or give the generator some transformations")
    assert float(np.abs(first - second).mean()) / scale > 0.002, (
        f"{used} gives the same photos at each call: augmentation must be random")
    skies = _sky(originals.shape, scale)
    upside_down = _upside_down(np.concatenate([augment(skies.copy()), augment(skies.copy())]),
                               scale)
    kept, n = _own_photo_matches(originals, both.reshape(-1, *originals.shape[1:])), 16
    if kept < KEPT_NEEDED * n:
        credit.award(0, f"only {kept} of {n} augmented photos are still closest in colours to"
                        " their own photo among the 8: the changes are so strong (zooms, shifts,"
                        " colour changes) that what the photo shows, and so its label, may be"
                        " lost; use smaller changes")
    elif upside_down >= UPSIDE_DOWN_FLAGGED:
        credit.award(0.5, f"{upside_down} of 16 images that are bright at the top (like a sky)"
                          " came out darker at the top: your augmentation turns photos over."
                          " Cats and dogs are photographed upright and the model never meets an"
                          " upside-down one; flip left-right only (RandomFlip('horizontal')) and"
                          " keep rotations well under 90 degrees")


def _validation_gap(model, validation_folder, size, scale, photos_in, dog_probabilities,
                    hidden_accuracy, n_hidden):
    """How much better the model does on the students' validation photos than on the hidden
    ones, and that gap's standard error (the two sets are independent, from one distribution)."""
    validation = photos_in(validation_folder, size, scale)
    accuracy = float(np.mean((dog_probabilities(model, validation.images) >= 0.5)
                             == validation.labels))
    error = np.sqrt(accuracy * (1 - accuracy) / len(validation.labels)
                    + hidden_accuracy * (1 - hidden_accuracy) / n_hidden)
    return accuracy, accuracy - hidden_accuracy, float(error)


@pytest.mark.points(3)
def test_hidden_accuracy(student_model, hidden, validation_folder, photos_in, dog_probabilities,
                         evaluation_problem, credit, feedback):
    """The model recognises cats and dogs in 500 photos it has never seen"""
    model, size, scale = student_model
    problem = evaluation_problem(model)
    assert not problem, problem
    photos = photos_in(hidden / "cats_and_dogs_test", size, scale)
    dog = dog_probabilities(model, photos.images)
    assert np.all(np.isfinite(dog)), (
        "the model could not be evaluated: its outputs for unseen photos are not finite numbers"
        " (did training diverge?)")
    predicted = (dog >= 0.5).astype(int)
    accuracy = float(np.mean(predicted == photos.labels))
    n = len(photos.labels)
    feedback.figure(confusion_figure(photos.labels, predicted, CLASS_NAMES, noun="animal"),
                    f"How your model sorted the {n} photos it never saw")
    if accuracy < 1:
        confidence = np.where(predicted == 1, dog, 1 - dog)
        feedback.figure(mistakes_figure(photos.images / scale, photos.labels, predicted,
                                        confidence, CLASS_NAMES, count=12, show_confidence=True),
                        "The unseen photos your model got most wrong, with its probability for"
                        " the animal it named")
    seen, gap, error = _validation_gap(model, validation_folder, size, scale, photos_in,
                                       dog_probabilities, accuracy, n)
    if gap > max(GAP_AT_LEAST, GAP_STANDARD_ERRORS * error):
        credit.award(0, f"the model gets {seen:.3f} right on the 500 validation photos but"
                        f" {accuracy:.3f} on {n} unseen photos of the same kind: a gap of"
                        f" {gap:.3f}, more than {GAP_STANDARD_ERRORS} standard errors"
                        f" ({error:.3f}), which chance does not explain. It was trained on the"
                        " validation photos; they must only measure the model. Train on"
                        " train_data alone")
    credit.tiers(accuracy, TIERS, f"accuracy on {n} unseen photos")
