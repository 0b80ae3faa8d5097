"""The trusted side of the exchange, staged without a kernel: what a student can do to the
shared folder (links, FIFOs, huge files, a rewritten connection, a zip bomb) reaches nothing."""

from __future__ import annotations

import io
import os
import signal
import zipfile
from pathlib import Path

import numpy as np
import pytest

from grader.checker import exchange, modelfile
from grader.checker.exchange import ConnectionRefused, Exchange, Layout, StudentValueError, checked_connection

KERNEL, CHECKER = 61990, 61991


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    made = Layout(tmp_path / "shared")
    made.make()
    return made


@pytest.fixture
def no_hang():
    """Fail instead of hanging when an open blocks (a FIFO)."""
    def hung(*_):
        raise TimeoutError("blocked")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving folders to users needs root")
def test_the_student_owns_no_folder_on_a_trusted_path(tmp_path):
    layout = Layout(tmp_path / "shared")
    layout.make(kernel=KERNEL, checker=CHECKER)
    owner = {p.name: (p.stat().st_uid, p.stat().st_gid, p.stat().st_mode & 0o7777)
             for p in (layout.root, layout.sock, layout.out, layout.into)}
    assert owner == {"shared": (0, 0, 0o755), "sock": (KERNEL, KERNEL, 0o750),
                     "out": (KERNEL, KERNEL, 0o750), "in": (CHECKER, KERNEL, 0o2750)}


def test_a_link_in_place_of_the_in_folder_gets_no_hidden_rows(layout, tmp_path):
    target = tmp_path / "chosen-by-the-student"
    target.mkdir()
    os.rmdir(layout.into)
    os.symlink(target, layout.into)
    with pytest.raises(StudentValueError, match="tampered"):
        Exchange(layout).write("abc.arg-0.npy", b"hidden rows")
    assert list(target.iterdir()) == []


def test_a_link_in_place_of_the_shared_or_out_folder_is_not_followed(layout, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "tok.json").write_text('{"kind": "scalar"}')
    os.rmdir(layout.out)
    os.symlink(elsewhere, layout.out)
    with pytest.raises(StudentValueError, match="tampered"):
        Exchange(layout).read("tok.json", 100)
    linked = Layout(tmp_path / "linked")
    os.symlink(layout.root, linked.root)
    with pytest.raises(StudentValueError, match="tampered"):
        Exchange(linked).write("x.npy", b"rows")


def test_only_regular_files_are_read_and_a_fifo_does_not_block(layout, tmp_path, no_hang):
    os.mkfifo(layout.out / "fifo.npy")
    with pytest.raises(StudentValueError, match="not a regular file"):
        Exchange(layout).read("fifo.npy", 100)
    (tmp_path / "secret").write_text("secret")
    os.symlink(tmp_path / "secret", layout.out / "link.json")
    with pytest.raises(StudentValueError, match="could not be read back"):
        Exchange(layout).read("link.json", 100)
    (layout.out / "big.npy").write_bytes(b"x" * 101)
    with pytest.raises(StudentValueError, match="over the limit"):
        Exchange(layout).read("big.npy", 100)
    (layout.out / "ok.json").write_bytes(b"{}")
    assert Exchange(layout).read("ok.json", 100) == b"{}"


def test_arguments_are_new_files_only_the_checker_writes(layout):
    path = Exchange(layout).write("tok.arg-0.npy", b"rows")
    assert path == str(layout.into / "tok.arg-0.npy") and Path(path).read_bytes() == b"rows"
    assert Path(path).stat().st_mode & 0o777 == 0o640
    with pytest.raises(FileExistsError):
        Exchange(layout).write("tok.arg-0.npy", b"again")


def _info(layout: Layout, **changes) -> dict:
    info = {"transport": "ipc", "ip": str(layout.sock / "kernel"), "shell_port": 1,
            "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5, "key": "k",
            "signature_scheme": "hmac-sha256"}
    return {**info, **changes}


def test_only_ipc_sockets_in_the_runs_folder_are_accepted(layout):
    assert checked_connection(_info(layout), layout)["ip"] == str(layout.sock / "kernel")
    bad = [_info(layout, transport="tcp", ip="127.0.0.1"),
           _info(layout, ip="/run/docker"),
           _info(layout, ip=str(layout.sock / ".." / ".." / "kernel")),
           _info(layout, ip=str(layout.out / "kernel")),
           _info(layout, shell_port="1")]
    for info in bad:
        with pytest.raises(ConnectionRefused):
            checked_connection(info, layout)


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_keras_zip_bomb_is_refused_before_loading(monkeypatch):
    bomb = _zip({"model.weights.h5": bytes(300_000_000)})  # 300 MB of zeros, packed to 300 KB
    assert len(bomb) < 1_000_000
    assert "which no saved model does" in modelfile.archive_problem(bomb)
    with pytest.raises(StudentValueError, match="was not loaded: it unpacks to 300 MB"):
        exchange._model(bomb, "model", called=False)
    monkeypatch.setattr(modelfile, "MAX_MODEL_UNPACKED", 1000)
    assert "over the limit" in modelfile.archive_problem(_zip({"a": os.urandom(600), "b": os.urandom(600)}))
    assert modelfile.archive_problem(b"not a zip") == "it is not a .keras archive"


def test_a_config_that_unpacks_to_100_mb_is_refused_before_it_is_read():
    bomb = _zip({"config.json": b" " * 100_000_000, "metadata.json": b"{}", "model.weights.h5": b""})
    assert len(bomb) < 200_000
    with pytest.raises(StudentValueError, match=r"not loaded: its config.json is 100.0 MB, over the limit"):
        exchange._model(bomb, "model", called=False)
    assert "holds no model.weights.h5" in modelfile.archive_problem(_zip({"config.json": b"{}"}))


def _h5(path: Path, datasets: dict[str, tuple[tuple[int, ...], bool]]) -> Path:
    """An HDF5 file at PATH with float32 DATASETS: name -> (shape, whether its data is written)."""
    import h5py
    import numpy as np

    with h5py.File(path, "w") as f:
        for name, (shape, written) in datasets.items():
            if written:
                f.create_dataset(name, data=np.ones(shape, "float32"))
            else:
                f.create_dataset(name, shape=shape, dtype="float32")
    return path


DENSE = [((3, 1), 12), ((1,), 4)]  # the weights of Dense(1) on 3 inputs: kernel and bias


def test_weights_are_checked_against_the_config_before_they_are_read(tmp_path):
    honest = {"layers/dense/vars/0": ((3, 1), True), "layers/dense/vars/1": ((1,), True),
              "optimizer/vars/0": ((), True), "optimizer/vars/1": ((3, 1), True),
              "optimizer/vars/2": ((7,), True)}  # never read (compile=False): shaped as it likes
    assert modelfile.weights_problem(_h5(tmp_path / "ok.h5", honest), DENSE, called=False) == ""
    # 1.6 GB declared, nothing written: the file stays 2 KB
    unstored = _h5(tmp_path / "unstored.h5", {**honest, "layers/dense/vars/0": ((20_000, 20_000), False)})
    assert unstored.stat().st_size < 10_000
    assert modelfile.weights_problem(unstored, DENSE, called=False) == (
        "its model.weights.h5 declares an array of 1.6 GB (layers/dense/vars/0) that is not stored in it")
    assert "(layers" not in modelfile.weights_problem(unstored, DENSE, called=True)
    hollow = _h5(tmp_path / "hollow.h5", {**honest, "layers/dense/vars/0": ((3, 1), False)})
    assert "that is not stored in it" in modelfile.weights_problem(hollow, DENSE, called=False)
    other = _h5(tmp_path / "other.h5", {**honest, "layers/dense/vars/0": ((30, 30), True)})
    assert modelfile.weights_problem(other, DENSE, called=False) == (
        "its model.weights.h5 holds an array of shape (30, 30) (layers/dense/vars/0) that no layer"
        " in its config.json has")
    # layers whose weights the file cannot hold: refused before Keras allocates them
    huge = [((100_000, 100_000), 40_000_000_000)]
    assert modelfile.weights_problem(_h5(tmp_path / "few.h5", honest), huge, called=False).startswith(
        "its layers have 40.0 GB of weights, but its model.weights.h5 is")


def test_weights_that_link_outside_their_file_are_refused(tmp_path):
    import h5py

    path = _h5(tmp_path / "w.h5", {"layers/dense/vars/1": ((1,), True)})
    with h5py.File(path, "a") as f:
        f["layers/dense/vars/0"] = h5py.ExternalLink(str(tmp_path / "secret.h5"), "/data")
    assert modelfile.weights_problem(path, DENSE, called=False) == (
        "its model.weights.h5 links to data outside itself")
    (tmp_path / "data.bin").write_bytes(bytes(12))
    with h5py.File(tmp_path / "external.h5", "w") as f:
        f.create_dataset("layers/dense/vars/0", shape=(3, 1), dtype="float32",
                         external=[(str(tmp_path / "data.bin"), 0, 12)])
    assert modelfile.weights_problem(tmp_path / "external.h5", DENSE, called=False) == (
        "its model.weights.h5 links to data outside itself")


def test_a_custom_class_is_named_and_keras_own_are_not():
    dense = {"module": "keras.layers", "class_name": "Dense", "config": {"units": 1},
             "registered_name": None}
    functional = {"module": "keras.src.models.functional", "class_name": "Functional",
                  "registered_name": "Functional", "config": {"layers": [dense, {
                      "class_name": "__keras_tensor__", "config": {}}]}}
    assert modelfile.custom_class(functional) == ("", "")
    registered = {"module": None, "class_name": "MyModel", "registered_name": "Custom>MyModel",
                  "config": {"layers": [dense]}}
    assert modelfile.custom_class(registered) == ("class", "MyModel")
    activation = {**dense, "config": {"activation": {"module": "builtins", "class_name": "function",
                                                     "config": "my_relu"}}}
    assert modelfile.custom_class(activation) == ("function", "my_relu")
    assert modelfile.custom_class({**dense, "class_name": "Lambda"}) == ("Lambda", "")


@pytest.mark.slow
def test_a_saved_keras_model_loads_and_a_subclassed_one_is_refused_by_name(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((50,)), keras.layers.Dense(400), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    model.save(tmp_path / "m.keras")
    data = (tmp_path / "m.keras").read_bytes()
    assert modelfile.archive_problem(data) == ""
    assert [w.shape for w in exchange._model(data, "model", called=False).weights] == \
        [w.shape for w in model.weights]

    @keras.saving.register_keras_serializable(package="issue28")
    class Registered(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(10, activation="softmax")

        def call(self, x):
            return self.dense(x)

    subclassed = Registered()
    subclassed(np.zeros((1, 4)))
    subclassed.save(tmp_path / "s.keras")
    data = (tmp_path / "s.keras").read_bytes()
    with pytest.raises(StudentValueError) as refused:
        exchange._model(data, "model", called=False)
    assert str(refused.value) == (
        "the model model uses a custom class, Registered: only Keras's built-in layers and models can"
        " be graded; rebuild it with built-in layers (keras.Sequential or the functional API)")
    with pytest.raises(StudentValueError, match="uses a custom class: only"):
        exchange._model(data, "make_model(...)", called=True)


@pytest.mark.slow
def test_a_model_file_whose_weights_do_not_fit_its_layers_is_refused_before_reading(tmp_path):
    import keras

    keras.Sequential([keras.Input((7,)), keras.layers.Dense(9)]).save(tmp_path / "small.keras")
    with zipfile.ZipFile(tmp_path / "small.keras") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = members["config.json"].decode()
    wide = config.replace("[null, 7]", "[null, 3000]").replace('"units": 9', '"units": 3000')
    with pytest.raises(StudentValueError, match=r"its layers have 36.0 MB of weights, but its"
                                                r" model.weights.h5 is [\d.]+ KB"):
        exchange._model(_zip({**members, "config.json": wide.encode()}), "model", called=False)
    # the kernel's shape, declared and never written: Keras would read it as zeros
    unstored = _h5(tmp_path / "w.h5", {"layers/dense/vars/0": ((7, 9), False),
                                       "layers/dense/vars/1": ((9,), True)}).read_bytes()
    with pytest.raises(StudentValueError, match=r"declares an array of 252 bytes \(layers/dense/vars/0\)"
                                                " that is not stored in it"):
        exchange._model(_zip({**members, "model.weights.h5": unstored}), "model", called=False)
