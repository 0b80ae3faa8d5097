"""The public API for check authors: what an assignment's checks import.

A check is a plain pytest function in `checks/public/` or `checks/hidden/`, marked with
`@pytest.mark.points(n)`. Its fixtures come from the grader's pytest plugin:

- `submission`: a `SubmissionView` of the student's notebook (values read back from its kernel);
- `hidden`, `student_data`: the folders of the hidden data and of the data the students get;
- `credit`: a `Credit` for partial points; `feedback`: a `Feedback` for figures and notes.

The rest of this module is helpers for what checks of a Keras course ask again and again: is the
model the one asked for, was it trained, what do its curves and mistakes look like. A helper that
finds a problem returns it in words for the student ('' when there is none), so that a check
reads `problem = shape_problem(...); assert not problem, problem`. See docs/checks.md.

Everything here runs in the trusted process, never in the student's kernel; it imports Keras and
matplotlib only when a helper needs them. What the student's model raises when a check runs it,
and what `student_call` runs raises, is the student's: a failed check, never the grader's fault
(grader.checker.student).
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from grader.checker.exchange import KernelLink, StudentValueError
from grader.checker.student import own_errors, student_call
from grader.model.outcomes import Attachment

__all__ = [
    "Credit", "Feedback", "StudentValueError", "SubmissionView", "affine_error", "all_layers",
    "confusion_figure",
    "history_problem", "image_grid", "layer_problem", "linear_problem", "mistakes_figure",
    "plot_curves", "shape_problem", "student_call", "unevaluable", "untrained",
]


def weights_digest(model: Any) -> str:
    """A sha256 of a loaded model's weights (dtype, shape and bytes of each), in the trusted
    process: the staff's pages compare them between students. '' where it has none to give."""
    digest = hashlib.sha256(b"weights-1")
    try:
        for weight in model.get_weights():
            array = np.ascontiguousarray(weight)
            digest.update(f"\0{array.dtype.str}{array.shape}\0".encode() + array.tobytes())
    except Exception:  # noqa: BLE001 - a model that cannot give its weights just has no digest
        return ""
    return digest.hexdigest()


class SubmissionView:
    """The student's notebook as the checks see it: values read back from its kernel.

    Every method raises StudentValueError (the student's fault, a failed check) when the value
    is missing, of the wrong kind, or when the student's function raises."""

    def __init__(self, link: KernelLink | None, why_not: str):
        self._link = link
        self._why_not = why_not
        self._cache: dict[str, Any] = {}
        self.weights: dict[str, str] = {}  # sha256 of each model's weights loaded, by name

    def _fetch(self, name: str, call: Any = None) -> Any:
        if self._link is None:
            raise StudentValueError(self._why_not)
        return self._link.fetch(name, call)

    def has(self, name: str) -> bool:
        """Whether the notebook defines NAME."""
        try:
            self._fetch(name)
        except StudentValueError as exc:
            if "is not defined" in str(exc):
                return False
            raise
        return True

    def get(self, name: str) -> Any:
        """The student's variable NAME as a plain value: number, string, list, dict or array."""
        return self._fetch(name).value

    def array(self, name: str) -> np.ndarray:
        """The student's variable NAME as a numeric NumPy array."""
        return _as_array(name, self._fetch(name))

    def number(self, name: str) -> float:
        """The student's variable NAME as a float."""
        value = self._fetch(name)
        if value.kind != "scalar" or not isinstance(value.value, (bool, int, float)):
            raise StudentValueError(f"{name} should be a number, found a {value.type}")
        return float(value.value)

    def model(self, name: str) -> Any:
        """The student's Keras model NAME, loaded in safe mode. What running it raises (its
        predict, evaluate, a call of it or of one of its layers) is the student's: the check
        fails with what was called, on what shape, and what went wrong (grader.checker.student)."""
        if name not in self._cache:
            value = self._fetch(name)
            if value.kind != "model":
                raise StudentValueError(f"{name} should be a Keras model, found a {value.type}")
            self._cache[name] = own_errors(value.value, name)
            if digest := weights_digest(value.value):
                self.weights[name] = digest
        return self._cache[name]

    def history(self, name: str) -> dict[str, list[float]]:
        """The metrics of the student's keras History NAME (what model.fit returned)."""
        value = self._fetch(name)
        if value.kind != "history":
            raise StudentValueError(
                f"{name} should be the History that model.fit returns, found a {value.type}"
            )
        metrics = value.value  # as the kernel wrote it: a notebook can forge any JSON there
        if not isinstance(metrics, dict) or not all(
                isinstance(k, str) and isinstance(v, list)
                and all(type(x) in (int, float) for x in v) for k, v in metrics.items()):
            raise StudentValueError(f"{name} could not be read back as a History's metrics")
        return dict(metrics)

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the student's function NAME with these arguments; return what it returns."""
        value = self._fetch(name, (args, kwargs))
        return value.value

    def call_array(self, name: str, *args: Any, **kwargs: Any) -> np.ndarray:
        """Call the student's function NAME and return its result as a numeric array."""
        return _as_array(f"{name}(...)", self._fetch(name, (args, kwargs)))


def _as_array(what: str, value: Any) -> np.ndarray:
    if value.kind not in ("array", "scalar", "json"):
        raise StudentValueError(f"{what} should be a NumPy array, found a {value.type}")
    try:
        array = np.asarray(value.value, dtype=float) if value.kind != "array" else value.value
    except (TypeError, ValueError):
        raise StudentValueError(f"{what} should be numeric, found a {value.type}") from None
    if array.dtype.kind not in "biuf":
        raise StudentValueError(f"{what} should be numeric, found dtype {array.dtype}")
    return array


class Feedback:
    """What a check adds to the student's feedback page (the `feedback` fixture)."""

    def __init__(self, attachments: list[Attachment]):
        self._attachments = attachments

    def figure(self, fig: Any, title: str) -> None:
        """Embed a matplotlib figure under TITLE (the figure is closed)."""
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
        plt.close(fig)
        self._attachments.append(
            Attachment("image", title, base64.b64encode(buffer.getvalue()).decode())
        )

    def text(self, title: str, body: str) -> None:
        """Add a short note (at most 5,000 characters)."""
        self._attachments.append(Attachment("text", title, body[:5000]))


class Credit:
    """Partial credit for one check: a fraction of its points, with the reason (the `credit`
    fixture). A check that never calls it earns all its points when it passes."""

    def __init__(self) -> None:
        self.fraction: float | None = None
        self.message = ""

    def award(self, fraction: float, message: str) -> None:
        """Give FRACTION (0..1) of the points; with 0 the check fails with MESSAGE."""
        self.fraction = min(1.0, max(0.0, float(fraction)))
        self.message = message
        if self.fraction == 0.0:
            raise AssertionError(message)

    def tiers(self, value: float, tiers: list[tuple[float, float]], what: str, *,
              lower_is_better: bool = False) -> None:
        """Award the fraction of the best threshold VALUE reaches; TIERS is (threshold, fraction).

        Thresholds are minimums, or maxima with LOWER_IS_BETTER (an error, say). WHAT names the
        value in the message: "accuracy on unseen digits is 0.91: 75% of the points; ..."."""
        ordered = sorted(tiers, reverse=not lower_is_better)
        best = ordered[0][0]
        word, miss = ("or less", "above") if lower_is_better else ("or more", "below")
        for threshold, fraction in ordered:
            if value <= threshold if lower_is_better else value >= threshold:
                note = "" if fraction >= 1 else f"; {best:g} {word} earns full points"
                self.award(fraction, f"{what} is {value:.4g}: {fraction:.0%} of the points{note}")
                return
        self.award(0.0, f"{what} is {value:.4g}, {miss} {ordered[-1][0]:g} needed for any points")


# The model: what was asked for, and was it trained.

_AFFINE_LAYERS = ("InputLayer", "Normalization", "Rescaling")
_PASSIVE_LAYERS = (*_AFFINE_LAYERS, "Dropout", "Softmax", "Flatten", "Reshape")


def _activation(layer: Any) -> str:
    return getattr(layer.activation, "__name__", str(layer.activation))


def linear_problem(model: Any) -> str:
    """Why MODEL is not linear, or '' when it is: one Dense layer without activation, after at
    most some affine scaling (Normalization, Rescaling)."""
    import keras

    affine = tuple(getattr(keras.layers, name) for name in _AFFINE_LAYERS)
    dense = [layer for layer in model.layers if not isinstance(layer, affine)]
    for layer in dense:
        if not isinstance(layer, keras.layers.Dense):
            return f"it has a {type(layer).__name__} layer; a linear model has only one Dense layer"
        activation = _activation(layer)
        if activation != "linear":
            return f"its Dense layer uses the {activation} activation; a linear model uses none"
    if len(dense) != 1:
        return f"it has {len(dense)} Dense layers; a linear model has exactly one, no hidden layer"
    return ""


def layer_problem(model: Any, units: int, activations: Sequence[str]) -> str:
    """Why MODEL is not one Dense layer of UNITS units with one of ACTIVATIONS (no hidden layer),
    or '' when it is.

    Layers that compute nothing at prediction time (Dropout), reshape (Flatten, Reshape), scale
    by fixed numbers (Rescaling, Normalization) or apply a final softmax are allowed around the
    Dense layer: the model stays linear in its inputs."""
    import keras

    passive = tuple(getattr(keras.layers, name) for name in _PASSIVE_LAYERS)
    layers = [layer for layer in model.layers if not isinstance(layer, passive)]
    dense = [layer for layer in layers if isinstance(layer, keras.layers.Dense)]
    for layer in layers:
        if isinstance(layer, keras.layers.Activation):
            name = _activation(layer)
            if name not in (*activations, "linear"):
                return f"it has a {name} activation layer; use {' or '.join(activations)}"
        elif not isinstance(layer, keras.layers.Dense):
            return f"it has a {type(layer).__name__} layer; a linear model has only one Dense layer"
    if len(dense) != 1:
        return (f"it has {len(dense)} Dense layers; a linear model has exactly one, with no hidden"
                " layer")
    activation = _activation(dense[0])
    if activation not in activations:
        return f"its Dense layer uses the {activation} activation; use {' or '.join(activations)}"
    if dense[0].units != units:
        return f"its Dense layer has {dense[0].units} units; it should have {units}"
    return ""


Shape = int | Sequence[int | None]


def shape_problem(model: Any, name: str, inputs: Shape, outputs: Shape, *, takes: str = "",
                  gives: str = "") -> str:
    """What is wrong with MODEL's input and output shapes ('' when nothing).

    INPUTS and OUTPUTS are the shapes of one example without the batch axis (an int N means
    (N,)); None in them, or in the model's own shape, matches any size. NAME is the model's
    variable; TAKES and GIVES describe the expected input and output in the student's words
    ("3 inputs (the three parts)"), by default the shapes themselves."""
    expected_in, expected_out = _shape(inputs), _shape(outputs)
    found = tuple(model.inputs[0].shape)[1:] if getattr(model, "inputs", None) else None
    if not _fits(found, expected_in):
        takes = takes or _words(expected_in, "vectors of {} values")
        return f"{name} should take {takes}, found input shape {found}"
    found = tuple(model.outputs[0].shape)[1:] if getattr(model, "outputs", None) else None
    if not _fits(found, expected_out):
        gives = gives or _words(expected_out, "{} output(s)")
        return f"{name} should give {gives}, found output shape {found}"
    return ""


def _shape(shape: Shape) -> tuple[int | None, ...]:
    return (shape,) if isinstance(shape, int) else tuple(shape)


def _fits(found: tuple[Any, ...] | None, expected: tuple[int | None, ...]) -> bool:
    return found is not None and len(found) == len(expected) and all(
        f is None or e is None or f == e for f, e in zip(found, expected))


def _words(shape: tuple[int | None, ...], vector: str) -> str:
    return vector.format(shape[0]) if len(shape) == 1 else f"arrays of shape {shape}"


def all_layers(model: Any) -> list[Any]:
    """MODEL's layers in order, with those of nested models (a Sequential inside) in their place."""
    found = []
    for layer in getattr(model, "layers", []):
        found += all_layers(layer) if isinstance(getattr(layer, "layers", None), list) else [layer]
    return found


def _biased_layers(model: Any) -> list[Any]:
    """MODEL's layers that have a bias (Dense, Conv2D, ...), nested models included."""
    return [layer for layer in all_layers(model)
            if getattr(layer, "use_bias", False) and getattr(layer, "bias", None) is not None]


def _batch_norms(model: Any) -> list[Any]:
    """MODEL's BatchNormalization layers, nested models included."""
    return [layer for layer in all_layers(model) if type(layer).__name__ == "BatchNormalization"]


# BatchNormalization's weights and the constants Keras starts them at; training moves them.
_NORM_STARTS = (("gamma", 1.0), ("beta", 0.0), ("moving_mean", 0.0), ("moving_variance", 1.0))


def _moved(norm: Any) -> bool:
    """Whether a BatchNormalization layer's weights left the constants Keras starts them at."""
    weights = [(getattr(norm, name, None), start) for name, start in _NORM_STARTS]
    return any(np.any(w.numpy() != start) for w, start in weights if w is not None)


def untrained(model: Any) -> bool:
    """Whether MODEL was never trained: every layer with a bias (Dense, Conv2D, ...) still has
    the all-zero bias Keras starts it with, and every BatchNormalization layer its start values
    (a convnet without biases is told by those). A model with neither cannot tell: False."""
    biased, norms = _biased_layers(model), _batch_norms(model)
    if not biased and not norms:
        return False
    return not (any(np.any(layer.bias.numpy()) for layer in biased)
                or any(_moved(norm) for norm in norms))


def unevaluable(model: Any) -> str:
    """Why MODEL's predictions would say nothing about the student's work, or '' when they
    would: a model that was never trained (its notebook stopped before fit) is not graded on
    data, nor plotted."""
    if untrained(model):
        return ("the model could not be evaluated: it was never trained (its biases are still 0,"
                " where Keras starts them); check that the cell that calls fit runs without an"
                " error")
    return ""


def affine_error(model: Any, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> float:
    """How far MODEL is from affine on inputs U and V: the largest
    |f(a u + (1-a) v) - (a f(u) + (1-a) f(v))| over random a in [-1, 2]."""
    a = rng.uniform(-1, 2, size=(len(u), 1)).astype("float32")
    u, v = u.astype("float32"), v.astype("float32")
    mix = model.predict(a * u + (1 - a) * v, verbose=0)
    ends = a * model.predict(u, verbose=0) + (1 - a) * model.predict(v, verbose=0)
    return float(np.max(np.abs(mix - ends)))


# Training: the History that fit returned, and its curves.

def history_problem(histories: Mapping[str, Mapping[str, Sequence[float]]], name: str) -> str:
    """What is wrong with the History NAME among HISTORIES (name -> `submission.history(name)`)
    ('' when nothing): missing, no loss, no val_loss, or a training loss that did not go down."""
    if name not in histories:
        return f"{name} is not defined: keep what fit returns in {name}"
    loss, val_loss = histories[name].get("loss", []), histories[name].get("val_loss", [])
    if not loss:
        return f"{name} records no loss"
    if not val_loss:
        return (f"{name} has no val_loss: pass validation_data=(x_val, y_val) to fit so that the"
                " validation loss is recorded")
    if len(loss) > 1 and loss[-1] >= loss[0]:
        return f"the training loss in {name} should go down: {loss[0]:.4g} -> {loss[-1]:.4g}"
    return ""


def plot_curves(ax: Any, history: Mapping[str, Sequence[float]], key: str, title: str = "", *,
                ylabel: str = "", log: bool = False) -> None:
    """Draw the training and validation curves of metric KEY ("loss", "accuracy") of HISTORY on
    the matplotlib axes AX, one point per epoch; LOG for a logarithmic y axis."""
    from matplotlib.ticker import MaxNLocator

    for prefix, label in (("", "training"), ("val_", "validation")):
        values = history.get(prefix + key, [])
        if values:
            marker = "o" if len(values) <= 30 else None
            ax.plot(range(1, len(values) + 1), values, marker=marker, markersize=3, label=label)
    if title:
        ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch")
    if ylabel:
        ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)


# Classification: how the model read the hidden examples.

def confusion_figure(labels: np.ndarray, predicted: np.ndarray, class_names: Sequence[str], *,
                     noun: str = "class") -> Any:
    """A confusion matrix of integer LABELS against PREDICTED classes as a matplotlib figure:
    the mistakes in colour, every count written, the right answers in green. NOUN names a class
    on the axes ("digit": "true digit", "predicted digit")."""
    import matplotlib.pyplot as plt

    n = len(class_names)
    counts = np.zeros((n, n), dtype=int)
    np.add.at(counts, (np.asarray(labels, dtype=int), np.asarray(predicted, dtype=int)), 1)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    shown = counts.astype(float)
    np.fill_diagonal(shown, np.nan)  # the mistakes carry the colour; the diagonal is written
    image = ax.imshow(shown, cmap="Reds")
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(j, i, counts[i, j], ha="center", va="center", fontsize=7,
                        color="black" if i != j else "tab:green",
                        fontweight="bold" if i == j else "normal")
    ax.set_xticks(range(n), list(class_names))
    ax.set_yticks(range(n), list(class_names))
    ax.set_xlabel(f"predicted {noun}")
    ax.set_ylabel(f"true {noun}")
    fig.colorbar(image, ax=ax, shrink=0.8, label="mistakes")
    return fig


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str] = (), *,
               columns: int = 6) -> Any:
    """IMAGES (grey H x W, or H x W x 3 in [0, 1] or 0-255) in a grid of COLUMNS, each with its
    title, as a matplotlib figure."""
    import matplotlib.pyplot as plt

    rows = max(1, math.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 4 / 3, rows * 1.6), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for k, (ax, image) in enumerate(zip(axes.ravel(), images)):
        image = np.asarray(image)
        if image.dtype.kind == "f" and image.max(initial=0) > 1:
            image = image.astype("uint8")
        ax.imshow(image.squeeze(), cmap="binary" if image.squeeze().ndim == 2 else None)
        if k < len(titles):
            ax.set_title(titles[k], fontsize=9)
    fig.tight_layout()
    return fig


def mistakes_figure(images: np.ndarray, labels: np.ndarray, predicted: np.ndarray,
                    confidence: np.ndarray, class_names: Sequence[str], *, count: int = 12,
                    show_confidence: bool = False) -> Any:
    """The COUNT examples the model got wrong with the highest CONFIDENCE (its score for what it
    predicted), each titled "cat read as dog" (with the score when SHOW_CONFIDENCE)."""
    wrong = np.flatnonzero(predicted != labels)
    picked = wrong[np.argsort(-confidence[wrong], kind="stable")[:count]]
    titles = [f"{class_names[labels[i]]} read as {class_names[predicted[i]]}"
              + (f" ({confidence[i]:.2f})" if show_confidence else "") for i in picked]
    return image_grid([images[i] for i in picked], titles)
