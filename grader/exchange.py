"""How values cross from the student's kernel to the trusted checks.

The checks never unpickle and never run student code in their own process. They ask the kernel
to write a value into the exchange folder, as JSON, a .npy file or a .keras model, and read it
back with pickle off, safe mode on, and a size cap. A call's arguments go the other way the same
way. Each request uses fresh random file names, so no file the student made earlier is read.
"""

from __future__ import annotations

import io
import json
import os
import queue
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAX_JSON_BYTES = 10_000_000
MAX_ARRAY_BYTES = 500_000_000
MAX_MODEL_BYTES = 2_000_000_000

# Runs inside the student's kernel, in a namespace of its own.
KERNEL_SIDE = r'''
import json as _json

def _grader_main(ns, request):
    out = request["out"]

    def write(meta):
        with open(out + ".json", "w") as f:
            _json.dump(meta, f)

    try:
        value = _resolve(ns, request)
    except BaseException as exc:
        write({"error": type(exc).__name__, "message": str(exc)[:2000]})
        return
    try:
        write(_export(value, out))
    except BaseException as exc:
        write({"error": "ExportError", "message": f"{type(exc).__name__}: {exc}"[:2000]})


def _resolve(ns, request):
    name = request["name"]
    if name not in ns:
        raise NameError(f"name {name!r} is not defined")
    value = ns[name]
    if request.get("call") is None:
        return value
    if not callable(value):
        raise TypeError(f"{name} is not a function")
    args = [_load(a) for a in request["call"]["args"]]
    kwargs = {k: _load(a) for k, a in request["call"]["kwargs"].items()}
    return value(*args, **kwargs)


def _load(arg):
    if "npy" in arg:
        import numpy
        return numpy.load(arg["npy"], allow_pickle=False)
    return arg["json"]


def _export(value, out):
    import sys
    keras = sys.modules.get("keras")
    np = sys.modules.get("numpy")
    if keras is not None and isinstance(value, keras.Model):
        value.save(out + ".keras")
        return {"kind": "model", "type": type(value).__name__}
    if keras is not None and isinstance(value, keras.callbacks.History):
        history = {str(k): [float(x) for x in v] for k, v in dict(value.history).items()}
        return {"kind": "history", "type": "History", "value": history}
    if value is None or type(value) in (bool, int, float, str):
        return {"kind": "scalar", "type": type(value).__name__, "value": value}
    if np is not None and isinstance(value, np.generic):
        return {"kind": "scalar", "type": type(value).__name__, "value": value.item()}
    if type(value) in (list, tuple, dict):
        try:
            return {"kind": "json", "type": type(value).__name__,
                    "value": _json.loads(_json.dumps(value))}
        except (TypeError, ValueError):
            pass
    if np is not None:
        array = np.asarray(value)
        if array.dtype == object:
            raise TypeError(f"a {type(value).__name__} cannot be handed to the checks")
        np.save(out + ".npy", array, allow_pickle=False)
        return {"kind": "array", "type": type(value).__name__}
    raise TypeError(f"a {type(value).__name__} cannot be handed to the checks")
'''


class StudentValueError(Exception):
    """What the submission handed over is missing, of the wrong kind, or broke; for the student."""


@dataclass(frozen=True)
class Value:
    """A value read back from the kernel."""

    kind: str  # scalar | json | array | model | history
    type: str  # the Python type name on the student's side
    value: Any


def _read_bytes(path: Path, cap: int) -> bytes:
    """Read a regular file the kernel wrote, refusing links and anything over CAP bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise StudentValueError(f"the value could not be read back ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise StudentValueError("the value could not be read back (not a regular file)")
        if info.st_size > cap:
            raise StudentValueError(f"the value is {info.st_size / 1e6:.0f} MB, over the limit")
        return f.read(cap + 1)


class KernelLink:
    """Asks one running kernel for values; used by the trusted checks only."""

    def __init__(self, connection_file: Path, host_dir: Path, kernel_dir: str, timeout: float):
        from jupyter_client import BlockingKernelClient

        self.host_dir = host_dir  # the exchange folder as this process sees it
        self.kernel_dir = kernel_dir  # the same folder as the kernel sees it
        self.timeout = timeout
        self.client = BlockingKernelClient()
        self.client.load_connection_file(str(connection_file))
        self.client.start_channels()

    def close(self) -> None:
        self.client.stop_channels()

    def fetch(self, name: str, call: tuple[tuple[Any, ...], dict[str, Any]] | None = None) -> Value:
        """The student's variable NAME, or what calling it with the given arguments returns."""
        token = secrets.token_hex(12)
        request: dict[str, Any] = {"name": name, "out": f"{self.kernel_dir}/{token}"}
        if call is not None:
            args, kwargs = call
            request["call"] = {
                "args": [self._send(token, i, a) for i, a in enumerate(args)],
                "kwargs": {k: self._send(token, k, a) for k, a in kwargs.items()},
            }
        source = KERNEL_SIDE + "\n_grader_main(_grader_user_ns, _grader_request)\n"
        code = f"exec({source!r}, {{'_grader_user_ns': globals(), '_grader_request': {request!r}}})"
        what = f"{name}(...)" if call is not None else name
        self._run(code, what)
        meta = self._meta(token, what)
        return self._value(token, meta, what)

    def _send(self, token: str, key: int | str, arg: Any) -> dict[str, Any]:
        if isinstance(arg, np.ndarray):
            path = self.host_dir / f"{token}.arg-{key}.npy"
            np.save(path, arg, allow_pickle=False)
            return {"npy": f"{self.kernel_dir}/{path.name}"}
        return {"json": json.loads(json.dumps(arg))}

    def _run(self, code: str, what: str) -> None:
        msg_id = self.client.execute(code, silent=True, store_history=False, allow_stdin=False)
        deadline = time.monotonic() + self.timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                reply = self.client.get_shell_msg(timeout=left)
            except queue.Empty:
                break
            if reply["parent_header"].get("msg_id") == msg_id:
                return
        raise StudentValueError(f"the notebook's kernel did not hand over {what} within "
                                f"{self.timeout:.0f} s")

    def _meta(self, token: str, what: str) -> dict[str, Any]:
        try:
            meta = json.loads(_read_bytes(self.host_dir / f"{token}.json", MAX_JSON_BYTES))
        except (ValueError, UnicodeDecodeError):
            raise StudentValueError(f"{what} could not be read back") from None
        if not isinstance(meta, dict):
            raise StudentValueError(f"{what} could not be read back")
        if "error" in meta:
            raise StudentValueError(f"{what}: {meta['error']}: {meta.get('message', '')}")
        return meta

    def _value(self, token: str, meta: dict[str, Any], what: str) -> Value:
        kind, type_name = str(meta.get("kind")), str(meta.get("type"))
        if kind in ("scalar", "json", "history"):
            return Value(kind, type_name, meta.get("value"))
        if kind == "array":
            data = _read_bytes(self.host_dir / f"{token}.npy", MAX_ARRAY_BYTES)
            try:
                array = np.load(io.BytesIO(data), allow_pickle=False)
            except ValueError as exc:
                raise StudentValueError(f"{what} is not a plain numeric array ({exc})") from None
            return Value(kind, type_name, array)
        if kind == "model":
            return Value(kind, type_name, self._model(self.host_dir / f"{token}.keras", what))
        raise StudentValueError(f"{what} could not be read back")

    def _model(self, path: Path, what: str) -> Any:
        import tempfile

        import keras

        data = _read_bytes(path, MAX_MODEL_BYTES)  # a private copy: the kernel cannot swap it
        with tempfile.TemporaryDirectory(prefix="grader-model-") as private:
            copy = Path(private) / "model.keras"
            copy.write_bytes(data)
            try:
                return keras.saving.load_model(copy, compile=False, safe_mode=True)
            except Exception as exc:  # noqa: BLE001 - Keras raises many types for models it refuses
                raise StudentValueError(
                    f"the model {what} could not be loaded safely (models with custom code or"
                    f" Lambda layers are refused): {type(exc).__name__}: {str(exc)[:300]}"
                ) from None
