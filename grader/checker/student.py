"""The student's objects, run in the trusted process: what they raise is the student's.

A check calls the student's loaded model (`model.predict(x)`, `model(x)`, a layer of it) like any
Keras object. When that call raises, the cause is the submission (a model built for 2 inputs
where the assignment gives 3, say), never the check's code nor the grader: the check fails with
a StudentValueError that says what was called, on what, and what went wrong, and the grade
stands. `SubmissionView.model` marks every model it hands out (see `own_errors`), so that check
code stays plain; `student_call` does the same for any other call of the student's code.

Only exceptions the machine raises (out of memory) stay the grader's, as do those of the checks'
own code around the call.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable, Iterator
from typing import Any

from grader.checker.exchange import StudentValueError
from grader.model.text import without_ansi

# The methods that run a model or a layer; each is wrapped once per class.
RUNS = ("__call__", "predict", "predict_on_batch", "evaluate", "test_on_batch")
_MACHINE = (MemoryError, SystemError)  # the machine's, whatever code ran
_MACHINE_NAMES = ("ResourceExhaustedError",)  # TensorFlow's out of memory
# TensorFlow names the input value a lookup failed on: a value of the checks' hidden inputs
_INDEX = re.compile(r"(indices\[[^\]]*\] = )-?\d+")
# Lines of Keras' and TensorFlow's messages that frame the error (where, in the grader's files),
# not say it: left out of what the student reads
_FRAME = ("Exception encountered when calling", "Graph execution error", "Detected at node",
          'File "', "[[")
_inside = contextvars.ContextVar("grader_inside_student_code", default=False)
_classes: dict[type, type] = {}


def student_call(what: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """FUNCTION(*ARGS, **KWARGS), the student's code; what it raises becomes a StudentValueError
    that names WHAT was called ("model.predict"), on what arguments, and what went wrong."""
    return _blamed(what, args, lambda: function(*args, **kwargs))


def _blamed(what: str, args: tuple[Any, ...], run: Callable[[], Any]) -> Any:
    """RUN(), the student's code called as WHAT on ARGS, its exceptions the student's."""
    if _inside.get():  # a call inside the student's call (predict calls the model): one message
        return run()
    token = _inside.set(True)
    try:
        return run()
    except StudentValueError:
        raise
    except Exception as exc:
        if isinstance(exc, _MACHINE) or type(exc).__name__ in _MACHINE_NAMES:
            raise
        raise StudentValueError(
            f"{what} on {described(args)} raised {type(exc).__name__}: {gist(exc)}") from exc
    finally:
        _inside.reset(token)


def own_errors(model: Any, name: str) -> Any:
    """MODEL (the student's variable NAME), its layers and nested models, each changed to a
    subclass of its own class whose calls (`RUNS`) go through `student_call`. The class keeps
    its name, so `isinstance` and `type(layer).__name__` read as before."""
    for obj, what in _parts(model, name):
        cls = type(obj)
        if cls not in _classes.values():
            obj.__class__ = _student_class(cls)
        object.__setattr__(obj, "_grader_what", what)  # past Keras' attribute tracking
    return model


def _parts(model: Any, name: str) -> Iterator[tuple[Any, str]]:
    yield model, name
    for layer in getattr(model, "layers", None) or []:
        label = f"{name}'s layer {getattr(layer, 'name', '?')!r}"
        yield from _parts(layer, label) if isinstance(getattr(layer, "layers", None), list) \
            else [(layer, label)]


def _student_class(cls: type) -> type:
    """A subclass of CLS whose RUNS go through student_call; one per class."""
    made = _classes.get(cls)
    if made is None:
        namespace: dict[str, Any] = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        for method in RUNS:
            if callable(getattr(cls, method, None)):
                namespace[method] = _guarded(getattr(cls, method), method)
        made = _classes[cls] = type(cls.__name__, (cls,), namespace)
    return made


def _guarded(original: Callable[..., Any], method: str) -> Callable[..., Any]:
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        what = getattr(self, "_grader_what", "the model")
        label = what if method == "__call__" else f"{what}.{method}"
        return _blamed(label, args, lambda: original(self, *args, **kwargs))
    run.__name__ = method
    return run


def described(args: tuple[Any, ...]) -> str:
    """What a call was given, as the student may read it: shapes, never values."""
    if not args:
        return "no arguments"
    return ", ".join(_one(arg) for arg in args[:3]) + (" and more" if len(args) > 3 else "")


def _one(arg: Any) -> str:
    shape = getattr(arg, "shape", None)
    if shape is not None:
        try:
            dims = tuple(None if d is None else int(d) for d in shape)
        except (TypeError, ValueError):
            dims = None
        if dims is not None:
            return f"an array of shape {dims}"
    if isinstance(arg, (list, tuple)):
        return f"a {type(arg).__name__} of {len(arg)} items"
    if isinstance(arg, dict):
        return f"a dict of {len(arg)} items"
    return f"a {type(arg).__name__}"


def gist(exc: BaseException) -> str:
    """The lines of EXC's message that say what went wrong, without Keras' and TensorFlow's
    frame of it (headers, the grader's files, the arguments received), at most 300
    characters. Safe-mode models are built-in layers only, whose messages say shapes and
    names; the one input value TensorFlow quotes (a failed lookup's index) is left out."""
    text = without_ansi(str(exc))
    text = _INDEX.sub(r"\1(a value of the checks' inputs)", text)  # an Embedding's lookup
    text = text.split("Arguments received by", 1)[0]
    lines = [line.strip() for line in text.splitlines()]
    found = " ".join(line for line in lines if line and not line.startswith(_FRAME)) or "no message"
    return found if len(found) <= 300 else found[:297] + "..."
