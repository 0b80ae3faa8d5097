"""The trusted side of the exchange, staged without a kernel: what a student can do to the
shared folder (links, FIFOs, huge files, a rewritten connection, a zip bomb) reaches nothing."""

from __future__ import annotations

import io
import os
import signal
import zipfile
from pathlib import Path

import pytest

from grader.checker import exchange
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
    assert "which no saved model does" in exchange._zip_problem(bomb)
    with pytest.raises(StudentValueError, match="was not loaded: it unpacks to 300 MB"):
        exchange._model(bomb, "model", called=False)
    monkeypatch.setattr(exchange, "MAX_MODEL_UNPACKED", 1000)
    assert "over the limit" in exchange._zip_problem(_zip({"a": os.urandom(600), "b": os.urandom(600)}))
    assert exchange._zip_problem(b"not a zip") == "it is not a .keras archive"


@pytest.mark.slow
def test_a_saved_keras_model_passes_the_archive_check(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((50,)), keras.layers.Dense(400), keras.layers.Dense(1)])
    model.save(tmp_path / "m.keras")
    assert exchange._zip_problem((tmp_path / "m.keras").read_bytes()) == ""
