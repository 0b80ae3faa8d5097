"""grader.checks, the check authors' API: the model helpers, the figures, and a light import."""

import subprocess
import sys

import numpy as np
import pytest

import grader
from grader.checks import (
    StudentValueError,
    SubmissionView,
    affine_error,
    confusion_figure,
    history_problem,
    layer_problem,
    linear_problem,
    mistakes_figure,
    plot_curves,
    shape_problem,
    unevaluable,
    untrained,
)


def models():
    import keras

    keras.utils.set_random_seed(0)
    linear = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Normalization(), keras.layers.Dense(1)])
    hidden = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(4, activation="relu"),
                               keras.layers.Dense(1)])
    relu = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(1, activation="relu")])
    return linear, hidden, relu


def cnn(*, dense_bias: bool = True):
    """A small convnet behind an augmentation block (a model inside the model)."""
    import keras

    augment = keras.Sequential([keras.layers.RandomFlip("horizontal")], name="augment")
    return keras.Sequential([
        keras.Input(shape=(16, 16, 3)), augment, keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.Flatten(),
        keras.layers.Dense(1, activation="sigmoid", use_bias=dense_bias)])


def shift_bias(layer, by=0.5):
    *weights, bias = layer.get_weights()
    layer.set_weights([*weights, bias + by])


def test_a_stack_of_dense_layers_is_not_the_one_asked_for():
    import keras

    stacked = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    assert "2 Dense layers" in linear_problem(stacked)


def test_linear_models_pass_and_others_say_why():
    linear, hidden, relu = models()
    assert linear_problem(linear) == ""
    assert "relu activation" in linear_problem(hidden)
    assert "relu activation" in linear_problem(relu)


def test_layer_problem_names_what_differs_from_one_dense_layer():
    import keras

    linear, hidden, _ = models()
    assert layer_problem(linear, units=1, activations=("linear",)) == ""
    assert layer_problem(linear, units=10, activations=("linear",)) == (
        "its Dense layer has 1 units; it should have 10")
    assert layer_problem(hidden, units=1, activations=("linear",)).startswith("it has 2 Dense layers")
    softmax = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dropout(0.1),
                                keras.layers.Dense(3), keras.layers.Activation("softmax")])
    assert layer_problem(softmax, units=3, activations=("softmax", "linear")) == ""
    assert layer_problem(cnn(), units=1, activations=("sigmoid",)).startswith(
        "it has a Sequential layer")


def test_shape_problem_compares_shapes_and_says_them_in_the_authors_words():
    linear, _, _ = models()
    assert shape_problem(linear, "model", 3, 1) == ""
    assert shape_problem(linear, "model", 13, 1, takes="13 inputs (the features)") == (
        "model should take 13 inputs (the features), found input shape (3,)")
    assert shape_problem(linear, "model", (3,), 10) == (
        "model should give 10 output(s), found output shape (1,)")
    model = cnn()
    assert shape_problem(model, "model", (16, 16, 3), 1) == ""
    assert shape_problem(model, "model", (None, None, 3), 1) == ""
    assert shape_problem(model, "model", (150, 150, 3), 1) == (
        "model should take arrays of shape (150, 150, 3), found input shape (16, 16, 3)")


def test_affine_error_tells_linear_from_nonlinear():
    linear, hidden, _ = models()
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(2, 32, 3))
    assert affine_error(linear, u, v, rng) < 1e-4
    hidden.layers[0].set_weights([np.eye(3, 4) * 5, np.zeros(4)])
    assert affine_error(hidden, u, v, rng) > 1e-2


def test_untrained_means_biases_still_zero():
    linear, _, _ = models()
    assert untrained(linear)
    shift_bias(linear.layers[-1])
    assert not untrained(linear)


def test_a_convnet_is_trained_when_any_bias_moved_its_dense_or_its_convolutions():
    model = cnn()
    assert untrained(model)
    shift_bias(model.layers[-1])
    assert not untrained(model)
    model = cnn()
    shift_bias(model.layers[2])  # the first Conv2D only; the Dense bias is still 0
    assert not untrained(model)
    model = cnn(dense_bias=False)  # no Dense bias: the convolutions still tell
    assert untrained(model)
    shift_bias(model.layers[4])
    assert not untrained(model)


def test_a_model_without_any_bias_is_not_called_untrained():
    import keras

    model = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(1, use_bias=False)])
    assert not untrained(model)


def test_a_convnet_without_biases_counts_as_trained_once_its_batchnorm_moved():
    import keras

    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.layers.Conv2D(4, 3, use_bias=False),
                              keras.layers.BatchNormalization(), keras.layers.ReLU()])
    convnet = keras.Sequential([keras.Input(shape=(8, 8, 3)), inner,
                                keras.layers.GlobalAveragePooling2D(),
                                keras.layers.Dense(1, activation="sigmoid", use_bias=False)])
    assert untrained(convnet)
    convnet.compile(optimizer="adam", loss="binary_crossentropy")
    x = np.random.default_rng(0).uniform(size=(16, 8, 8, 3)).astype("float32")
    convnet.fit(x, np.arange(16) % 2, epochs=1, verbose=0)
    assert not untrained(convnet)


def test_an_untrained_model_cannot_be_evaluated_and_says_why():
    linear, _, _ = models()
    assert unevaluable(linear).startswith("the model could not be evaluated: it was never trained")
    shift_bias(linear.layers[-1])
    assert unevaluable(linear) == ""


def test_history_problem_says_what_is_missing_or_wrong():
    good = {"loss": [2.0, 1.0], "val_loss": [2.1, 1.2]}
    histories = {"history": good, "flat": {"loss": [1.0, 1.5], "val_loss": [1.0, 1.0]},
                 "no_val": {"loss": [2.0, 1.0]}, "empty": {}}
    assert history_problem(histories, "history") == ""
    assert history_problem(histories, "other").startswith("other is not defined")
    assert history_problem(histories, "empty") == "empty records no loss"
    assert history_problem(histories, "no_val").startswith("no_val has no val_loss")
    assert history_problem(histories, "flat") == "the training loss in flat should go down: 1 -> 1.5"


def test_figures_draw_what_they_are_given():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plot_curves(ax, {"loss": [3.0, 2.0, 1.0], "val_loss": [3.5, 2.5, 2.0]}, "loss", "loss", log=True)
    assert [line.get_label() for line in ax.get_lines()] == ["training", "validation"]
    assert ax.get_yscale() == "log" and ax.get_title() == "loss"
    plt.close(fig)
    labels, predicted = np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0])
    fig = confusion_figure(labels, predicted, ["cat", "dog"], noun="animal")
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["1", "1", "1", "2"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog"]
    assert ax.get_xlabel() == "predicted animal"
    plt.close(fig)
    images = np.zeros((5, 8, 8, 3), dtype="float32")
    confidence = np.array([0.9, 0.8, 0.7, 0.95, 0.6])
    fig = mistakes_figure(images, labels, predicted, confidence, ["cat", "dog"], show_confidence=True)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["cat read as dog (0.80)", "dog read as cat (0.60)"]
    plt.close(fig)


def test_a_submission_without_a_kernel_fails_every_value_with_the_reason():
    view = SubmissionView(None, "nothing to check: the notebook is not JSON")
    with pytest.raises(StudentValueError, match="the notebook is not JSON"):
        view.number("accuracy")


class ModelLink:
    """A kernel link that hands over one loaded model, as KernelLink does."""

    def __init__(self, model):
        self.model = model

    def fetch(self, name, call=None):
        from grader.checker.exchange import Value

        return Value("model", type(self.model).__name__, self.model)


def two_input_model():
    """A trained-looking linear model built on 2 inputs, where the checks give 3."""
    import keras

    model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(1)])
    model.layers[-1].set_weights([np.ones((2, 1)), np.ones(1)])
    return model


def test_what_the_students_model_raises_is_the_students_with_what_was_called_on_what_shape():
    import keras

    model = SubmissionView(ModelLink(two_input_model()), "").model("model")
    with pytest.raises(StudentValueError) as raised:
        model.predict(np.zeros((100, 3)), verbose=0)
    message = str(raised.value)
    assert message.startswith("model.predict on an array of shape (100, 3) raised ValueError: ")
    assert "expected axis -1 of input shape to have value 2" in message, message
    assert "Arguments received" not in message and "\x1b" not in message and len(message) < 400
    with pytest.raises(StudentValueError, match=r"^model on an array of shape \(4, 3\) raised"):
        model(np.zeros((4, 3), dtype="float32"))
    with pytest.raises(StudentValueError, match=r"^model's layer 'dense(_\d+)?' on an array of shape"):
        model.layers[-1](np.zeros((4, 3), dtype="float32"))
    with pytest.raises(StudentValueError, match="model.predict on an array of shape"):
        affine_error(model, np.zeros((8, 3)), np.ones((8, 3)), np.random.default_rng(0))
    # The model reads as before: its class, its layers, its predictions on the right shape.
    assert isinstance(model, keras.Sequential) and type(model).__name__ == "Sequential"
    assert isinstance(model.layers[-1], keras.layers.Dense) and not linear_problem(model)
    assert model.predict(np.ones((1, 2)), verbose=0).tolist() == [[3.0]]


def test_student_call_blames_the_student_but_not_for_the_machine():
    from grader.checks import student_call

    def broken(values):
        raise KeyError("oops")

    with pytest.raises(StudentValueError, match=r"^augment on an array of shape \(2, 5\) raised KeyError: 'oops'"):
        student_call("augment", broken, np.zeros((2, 5)))
    with pytest.raises(MemoryError):  # the machine's, not the student's
        student_call("augment", lambda: (_ for _ in ()).throw(MemoryError()))


def test_forged_value_types_from_the_kernel_fail_the_check_not_the_grader():
    """The kernel writes what it hands over, and a notebook can patch json.dump to forge it."""
    from grader.checker.exchange import Value

    class Forged:
        def __init__(self, kind, value):
            self.answer = Value(kind, "float", value)

        def fetch(self, name, call=None):
            return self.answer

    for value in ([1, 2], {"a": 1}, "3"):
        with pytest.raises(StudentValueError, match="accuracy should be a number"):
            SubmissionView(Forged("scalar", value), "").number("accuracy")
    for value in (5, [["loss", 1]], {"loss": 5}, {"loss": ["x"]}):
        with pytest.raises(StudentValueError, match="history could not be read back"):
            SubmissionView(Forged("history", value), "").history("history")
    assert SubmissionView(Forged("history", {"loss": [1, 0.5]}), "").history("h") == {"loss": [1, 0.5]}


def test_a_failed_lookups_index_is_not_shown():
    from grader.checker.student import gist

    raised = ValueError("indices[3,7] = 10234 is not in [0, 5000) [Op:ResourceGather]")
    assert "10234" not in gist(raised) and "[0, 5000)" in gist(raised)
    graph = ValueError('Graph execution error:\n\nDetected at node m/embedding/GatherV2 defined at (most'
                       ' recent call last):\n  File "/srv/grader/checks.py", line 9, in <module>\n\n'
                       'indices[0,0] = 500 is not in [0, 100)\n\t [[{{node m/embedding/GatherV2}}]]')
    assert gist(graph) == "indices[0,0] = (a value of the checks' inputs) is not in [0, 100)"


HEAVY = ("nbclient", "jinja2", "grader.store.gradebook", "sqlite3", "grader.grading.batch")


def test_the_checker_imports_neither_the_gradebook_nor_the_notebook_runner():
    code = ("import sys, grader.checker.plugin, grader.checks, grader.checker.exchange\n"
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "", f"the checker's imports load {loaded.stdout.strip()}"


def test_the_public_names_still_load_on_first_use():
    for name in grader.__all__:
        assert getattr(grader, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'models'"):
        grader.models  # noqa: B018 - the access is the test
