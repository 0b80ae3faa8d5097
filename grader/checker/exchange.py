"""How values cross from the student's kernel to the trusted checks.

The checks never unpickle and never run student code in their own process. They ask the kernel
to write a value into the run's shared folder, as JSON, a .npy file or a .keras model, and read
it back with pickle off, safe mode on, and a size cap. A call's arguments go the other way.

The shared folder (see `Layout`) belongs to the grader; the student owns no folder on a path
trusted code opens. Trusted code opens everything relative to a folder descriptor opened without
following links, and reads regular files only, never blocking on a FIFO. Each request uses fresh
random file names, so no file the student made earlier is read.
"""

from __future__ import annotations

import builtins
import io
import json
import keyword
import os
import queue
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grader.checker import modelfile

MAX_JSON_BYTES = 10_000_000
MAX_ARRAY_BYTES = 500_000_000
MAX_MODEL_BYTES = 2_000_000_000  # the archive; modelfile bounds what it unpacks to

# Folders of the shared folder: the kernel's sockets and connection file, the values the kernel
# writes, the call arguments the checker writes.
SOCK, OUT, IN = "sock", "out", "in"

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
    except _Missing as exc:
        write({"error": exc.args[0], "stage": "resolve", "message": exc.args[1]})
        return
    except BaseException as exc:
        write({"error": type(exc).__name__, "stage": "call", "message": str(exc)[:2000]})
        return
    try:
        write(_export(value, out))
    except BaseException as exc:
        write({"error": "ExportError", "message": f"{type(exc).__name__}: {exc}"[:2000]})


class _Missing(Exception):
    pass


def _resolve(ns, request):
    name = request["name"]
    if name not in ns:
        raise _Missing("NameError", f"name {name!r} is not defined")
    value = ns[name]
    if request.get("call") is None:
        return value
    if not callable(value):
        raise _Missing("TypeError", f"{name} is not a function")
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


class ConnectionRefused(Exception):
    """The kernel's connection info is not one the checker may use (not ipc in the run's folder)."""


@dataclass(frozen=True)
class Value:
    """A value read back from the kernel."""

    kind: str  # scalar | json | array | model | history
    type: str  # the Python type name on the student's side
    value: Any


@dataclass(frozen=True)
class Layout:
    """The run's shared folder, at one path for the grader, the kernel and the checker.

    `root` belongs to the grader (0755): the kernel can replace nothing in it. `sock/` holds the
    kernel's sockets and connection file and `out/` the values it writes (both the kernel's, 0750;
    the checker is in the kernel's group); `in/` holds call arguments, written by the checker
    only (its own, group the kernel's, 2750) and read by the kernel.
    """

    root: Path

    @property
    def sock(self) -> Path:
        return self.root / SOCK

    @property
    def out(self) -> Path:
        return self.root / OUT

    @property
    def into(self) -> Path:
        return self.root / IN

    def make(self, *, kernel: int = -1, checker: int = -1) -> None:
        """Create the folders; a root grader gives each to its user (KERNEL, CHECKER)."""
        self.root.mkdir(mode=0o755, exist_ok=True)  # maybe a size-capped tmpfs (grader.isolation.workdirs)
        os.chmod(self.root, 0o755)
        for folder, owner, group in ((self.sock, kernel, kernel), (self.out, kernel, kernel),
                                     (self.into, checker, kernel)):
            folder.mkdir()
            if owner >= 0:
                os.chown(folder, owner, group)
            # in/ is set-group-id: the arguments the checker writes belong to the kernel's group
            mode = 0o755 if owner < 0 else 0o2750 if folder == self.into and group >= 0 else 0o750
            os.chmod(folder, mode)


def _open_folder(parent: int | None, name: str | Path) -> int:
    """A descriptor of folder NAME (under descriptor PARENT), refusing a link in its place."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, dir_fd=parent)
    except OSError as exc:
        raise StudentValueError(
            f"the exchange folder {Path(name).name}/ was tampered with ({exc.strerror})") from None


def _read_bytes(folder: int, name: str, cap: int) -> bytes:
    """Read regular file NAME in FOLDER, refusing links, FIFOs, devices and anything over CAP."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=folder)
    except OSError as exc:
        raise StudentValueError(f"the value could not be read back ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise StudentValueError("the value could not be read back (not a regular file)")
        if info.st_size > cap:
            raise StudentValueError(f"the value is {info.st_size / 1e6:.0f} MB, over the limit")
        data = f.read(cap + 1)
    if len(data) > cap:
        raise StudentValueError(f"the value is over the limit of {cap / 1e6:.0f} MB")
    return data


class Exchange:
    """Trusted reads from `out/` and writes into `in/`, each opened afresh from the run's folder."""

    def __init__(self, layout: Layout):
        self.layout = layout

    def _folder(self, name: str) -> int:
        """A descriptor of the run folder's NAME, each step refusing a link in its place."""
        root = _open_folder(None, self.layout.root)
        try:
            return _open_folder(root, name)
        finally:
            os.close(root)

    def read(self, name: str, cap: int) -> bytes:
        """The kernel's file NAME in out/, at most CAP bytes."""
        out = self._folder(OUT)
        try:
            return _read_bytes(out, name, cap)
        finally:
            os.close(out)

    def write(self, name: str, data: bytes) -> str:
        """Write DATA as a new file NAME in in/; return its path, which the kernel reads."""
        into = self._folder(IN)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, 0o640, dir_fd=into)
        finally:
            os.close(into)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return str(self.layout.into / name)


def checked_connection(info: dict[str, Any], layout: Layout) -> dict[str, Any]:
    """INFO if it is ipc to sockets in LAYOUT's sock/ folder; raise ConnectionRefused if not."""
    if info.get("transport") != "ipc":
        raise ConnectionRefused(f"transport {info.get('transport')!r}: only ipc is accepted")
    ip = info.get("ip")
    if not isinstance(ip, str) or os.path.dirname(os.path.normpath(ip)) != str(layout.sock) \
            or os.path.normpath(ip) != ip:
        raise ConnectionRefused(f"sockets at {ip!r}, outside {layout.sock}")
    ports = [info.get(k) for k in ("shell_port", "iopub_port", "stdin_port", "control_port",
                                   "hb_port")]
    if not all(type(p) is int and p > 0 for p in ports):
        raise ConnectionRefused("the connection info lacks its socket numbers")
    return info


# Exception names a call's failure may show: the student picks the name of an exception class,
# so any other name could carry the checker's hidden inputs out.
_KNOWN_ERRORS = frozenset(
    name for name, obj in vars(builtins).items() if isinstance(obj, type) and issubclass(obj, BaseException)
) | {"InvalidArgumentError", "ResourceExhaustedError", "FailedPreconditionError",
     "UnimplementedError", "NotFoundError", "OutOfRangeError", "LinAlgError", "AxisError"}
_KNOWN_TYPES = frozenset({
    "NoneType", "bool", "int", "float", "complex", "str", "bytes", "list", "tuple", "dict", "set",
    "ndarray", "generator", "function", "History", "Sequential", "Functional", "Model", "Tensor",
    "EagerTensor", "Variable", "DataFrame", "Series", "matrix",
    *(f"{k}{n}" for k in ("int", "uint", "float", "complex") for n in (8, 16, 32, 64, 128)),
    "bool_", "str_", "bytes_",
})


def _safe_type(name: object) -> str:
    """A type name that cannot carry data out of a call: a well-known one, else 'object'."""
    return name if isinstance(name, str) and name in _KNOWN_TYPES else "object"


class KernelLink:
    """Asks one running kernel for values; used by the trusted checks only."""

    def __init__(self, connection: dict[str, Any], shared: Path, timeout: float):
        from jupyter_client import BlockingKernelClient

        self.layout = Layout(shared)
        self.exchange = Exchange(self.layout)
        self.timeout = timeout
        self.unresponsive = ""  # why the kernel is not asked again, once a request timed out
        self.client = BlockingKernelClient()
        self.client.load_connection_info(checked_connection(connection, self.layout))  # type: ignore[arg-type]
        # shell only: the checks read replies, and an iopub channel would keep every message a
        # flooding kernel sends while they run, in the checker's memory
        self.client.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)

    def close(self) -> None:
        self.client.stop_channels()

    def fetch(self, name: str, call: tuple[tuple[Any, ...], dict[str, Any]] | None = None) -> Value:
        """The student's variable NAME, or what calling it with the given arguments returns."""
        if not name.isidentifier() or keyword.iskeyword(name):
            raise ValueError(f"{name!r} is not a Python name")  # the check's own mistake
        token = secrets.token_hex(12)
        request: dict[str, Any] = {"name": name, "out": str(self.layout.out / token)}
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
        meta = self._meta(token, name, call is not None)
        value = self._value(token, meta, what, call is not None)
        return Value(value.kind, _safe_type(value.type), value.value) if call else value

    def _send(self, token: str, key: int | str, arg: Any) -> dict[str, Any]:
        if isinstance(arg, np.ndarray):
            buffer = io.BytesIO()
            np.save(buffer, arg, allow_pickle=False)
            return {"npy": self.exchange.write(f"{token}.arg-{key}.npy", buffer.getvalue())}
        return {"json": json.loads(json.dumps(arg))}

    def _run(self, code: str, what: str) -> None:
        # A kernel that let one request time out is not asked again: each later check fails at
        # once with the same reason, so an unresponsive notebook (a fork bomb, a busy loop in a
        # thread) costs one timeout, not one per check, and never runs the checks out of time.
        if self.unresponsive:
            raise StudentValueError(self.unresponsive)
        msg_id = self.client.execute(code, silent=True, store_history=False, allow_stdin=False)
        deadline = time.monotonic() + self.timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                reply = self.client.get_shell_msg(timeout=left)
            except queue.Empty:
                break
            if reply["parent_header"].get("msg_id") == msg_id:
                return
        self.unresponsive = (f"the notebook's kernel stopped answering: it did not hand over {what}"
                             f" within {self.timeout:.0f} s")
        raise StudentValueError(self.unresponsive)

    def _meta(self, token: str, name: str, called: bool) -> dict[str, Any]:
        what = f"{name}(...)" if called else name
        try:
            meta = json.loads(self.exchange.read(f"{token}.json", MAX_JSON_BYTES))
        except (ValueError, UnicodeDecodeError):
            raise StudentValueError(f"{what} could not be read back") from None
        if not isinstance(meta, dict):
            raise StudentValueError(f"{what} could not be read back")
        if "error" not in meta:
            return meta
        if not called:
            raise StudentValueError(f"{what}: {meta['error']}: {meta.get('message', '')}")
        raise StudentValueError(_call_failure(name, meta))

    def _value(self, token: str, meta: dict[str, Any], what: str, called: bool) -> Value:
        kind, type_name = str(meta.get("kind")), str(meta.get("type"))
        if kind in ("scalar", "json", "history"):
            return Value(kind, type_name, meta.get("value"))
        if kind == "array":
            data = self.exchange.read(f"{token}.npy", MAX_ARRAY_BYTES)
            try:
                array = np.load(io.BytesIO(data), allow_pickle=False)
            except ValueError as exc:
                detail = "" if called else f" ({str(exc)[:300]})"
                raise StudentValueError(f"{what} is not a plain numeric array{detail}") from None
            return Value(kind, type_name, array)
        if kind == "model":
            data = self.exchange.read(f"{token}.keras", MAX_MODEL_BYTES)
            return Value(kind, type_name, _model(data, what, called))
        raise StudentValueError(f"{what} could not be read back")


def _call_failure(name: str, meta: dict[str, Any]) -> str:
    """What the student reads when calling NAME failed: never the exception's own text, which
    may show the checker's hidden inputs."""
    error = meta.get("error")
    if meta.get("stage") == "resolve" and error == "NameError":
        return f"{name}(...): NameError: name {name!r} is not defined"
    if meta.get("stage") == "resolve" and error == "TypeError":
        return f"{name}(...): {name} is not a function"
    if error == "ExportError":
        return f"{name}(...) returned a value that cannot be handed to the checks"
    shown = error if isinstance(error, str) and error in _KNOWN_ERRORS else "an exception"
    return (f"{name}(...) raised {shown} when the checks called it with their own inputs;"
            " call it yourself with inputs like the ones the instructions describe")


def _model(data: bytes, what: str, called: bool) -> Any:
    """The model in the .keras archive DATA, loaded in safe mode once modelfile's checks pass."""
    try:
        return modelfile.load_model(data, what, called)
    except modelfile.ModelRefused as exc:
        raise StudentValueError(str(exc)) from None
