import numpy as np

from grader.models import affine_error, linear_problem, unevaluable, untrained


def models():
    import keras

    keras.utils.set_random_seed(0)
    linear = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Normalization(), keras.layers.Dense(1)])
    hidden = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(4, activation="relu"),
                               keras.layers.Dense(1)])
    relu = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(1, activation="relu")])
    return linear, hidden, relu


def test_a_stack_of_dense_layers_is_not_the_one_asked_for():
    import keras

    stacked = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    assert "2 Dense layers" in linear_problem(stacked)


def test_linear_models_pass_and_others_say_why():
    linear, hidden, relu = models()
    assert linear_problem(linear) == ""
    assert "relu activation" in linear_problem(hidden)
    assert "relu activation" in linear_problem(relu)


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
    kernel, bias = linear.layers[-1].get_weights()
    linear.layers[-1].set_weights([kernel, bias + 0.5])
    assert not untrained(linear)


def test_an_untrained_model_cannot_be_evaluated_and_says_why():
    linear, _, _ = models()
    assert unevaluable(linear).startswith("the model could not be evaluated: it was never trained")
    kernel, bias = linear.layers[-1].get_weights()
    linear.layers[-1].set_weights([kernel, bias + 0.5])
    assert unevaluable(linear) == ""


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


def test_a_model_with_no_weight_of_known_start_counts_as_trained():
    import keras

    bare = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(1, use_bias=False)])
    assert not untrained(bare)
