"""A student's saved .keras model, checked before the trusted process reads any of it.

A .keras file is a zip archive of `config.json` (the layers), `metadata.json` and
`model.weights.h5` (the weights, HDF5). Loading it in safe mode runs no student code, but a
few KB of archive can still make the loader allocate gigabytes: a config that expands to
100 MB, an HDF5 dataset that declares 1.5 GB it never stores, or layers whose weights are
huge. So before Keras reads anything, the archive's sizes, the config's classes and every
dataset's declared shape are checked against what the config's layers imply. Each refusal is
the student's (a failed check saying what is wrong with the file), never a grader fault.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

MAX_MODEL_UNPACKED = 2_000_000_000  # the sum of a .keras archive's members, unpacked
MAX_MODEL_RATIO = 100  # unpacked / packed, for archives over MODEL_RATIO_FROM bytes unpacked
MODEL_RATIO_FROM = 200_000_000
MAX_CONFIG_BYTES = 4_000_000  # config.json or metadata.json, packed or unpacked; real ones are KB
MAX_WEIGHT_ARRAYS = 100_000  # links in model.weights.h5
CONFIG, METADATA, WEIGHTS = "config.json", "metadata.json", "model.weights.h5"
HOW_TO_BUILD = ("only Keras's built-in layers and models can be graded; rebuild it with built-in"
                " layers (keras.Sequential or the functional API)")


class ModelRefused(Exception):
    """The .keras file must not be loaded; the message says why, for the student."""


def archive_problem(data: bytes) -> str:
    """Why the .keras archive DATA must not be unpacked ('' when it may)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = {m.filename: m for m in archive.infolist()}
    except (zipfile.BadZipFile, ValueError, EOFError):
        return "it is not a .keras archive"
    unpacked = sum(m.file_size for m in members.values())
    if unpacked > MAX_MODEL_UNPACKED:
        return f"it unpacks to {unpacked / 1e9:.1f} GB, over the limit of {MAX_MODEL_UNPACKED / 1e9:.0f} GB"
    if unpacked > MODEL_RATIO_FROM and unpacked > MAX_MODEL_RATIO * max(1, len(data)):
        return (f"it unpacks to {unpacked / 1e6:.0f} MB from {len(data) / 1e6:.1f} MB, which no"
                " saved model does")
    for name in (CONFIG, WEIGHTS):
        if name not in members:
            return f"it holds no {name} (save the model with model.save('name.keras'))"
    for name in (CONFIG, METADATA):
        info = members.get(name)
        if info is not None and max(info.file_size, info.compress_size) > MAX_CONFIG_BYTES:
            size = max(info.file_size, info.compress_size)
            return (f"its {name} is {_size(size)}, over the limit of {_size(MAX_CONFIG_BYTES)}"
                    " (a model's is a few KB)")
    return ""


def load_model(data: bytes, what: str, called: bool) -> Any:
    """The model in the .keras archive DATA, loaded in safe mode from a private copy the kernel
    cannot swap, after the checks above; raise ModelRefused saying why not. When CALLED (the
    model came from calling the student's function with hidden inputs), messages name nothing
    the student's file chose, so that they carry none of those inputs out."""
    problem = archive_problem(data)
    if problem:
        raise ModelRefused(f"the model {what} was not loaded: {problem}")
    with tempfile.TemporaryDirectory(prefix="grader-model-") as private:
        copy = Path(private) / "model.keras"
        copy.write_bytes(data)
        weights = Path(private) / WEIGHTS
        with zipfile.ZipFile(copy) as archive:
            config_text = archive.read(CONFIG)  # at most MAX_CONFIG_BYTES, checked above
            with archive.open(WEIGHTS) as packed, open(weights, "wb") as out:
                shutil.copyfileobj(packed, out)  # at most MAX_MODEL_UNPACKED, checked above
        config = _config(config_text, what)
        kind, name = custom_class(config)
        if kind:
            uses = "a Lambda layer" if kind == "Lambda" else \
                f"a custom {kind}" + ("" if called else f", {name}")
            raise ModelRefused(f"the model {what} uses {uses}: {HOW_TO_BUILD}")
        needed = implied_weights(config, what, called)
        problem = weights_problem(weights, needed, called)
        if problem:
            raise ModelRefused(f"the model {what} was not loaded: {problem}")
        import keras

        try:
            return keras.saving.load_model(copy, compile=False, safe_mode=True)
        except Exception as exc:  # noqa: BLE001 - Keras raises many types for models it refuses
            detail = "" if called else f": {type(exc).__name__}: {str(exc)[:300]}"
            raise ModelRefused(
                f"the model {what} could not be loaded safely (models with custom code or"
                f" Lambda layers are refused){detail}"
            ) from None


def _config(text: bytes, what: str) -> dict[str, Any]:
    try:
        config = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ModelRefused(f"the model {what} was not loaded: its {CONFIG} is not JSON") from None
    if not isinstance(config, dict):
        raise ModelRefused(f"the model {what} was not loaded: its {CONFIG} is not a model's")
    return config


def custom_class(config: dict[str, Any]) -> tuple[str, str]:
    """(kind, name) of the first class or function in CONFIG that is not one of Keras's own
    ('class' or 'function'), or ('Lambda', '') for a Lambda layer; ('', '') when there is none.
    Safe mode refuses them in the trusted process (their code is the student's), whether or
    not they are registered with @keras.saving.register_keras_serializable()."""
    stack: list[Any] = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            name, module = item.get("class_name"), item.get("module")
            if isinstance(name, str) and not name.startswith("__"):
                builtin = isinstance(module, str) and (module == "keras" or module.startswith("keras."))
                if name == "function" and not builtin:
                    inner = item.get("config")
                    return "function", _shown(inner if isinstance(inner, str) else name)
                if not builtin:
                    return "class", _shown(name)
                if name == "Lambda":
                    return "Lambda", ""
            stack.extend(item.values())
    return "", ""


def _shown(name: str) -> str:
    """A class name the student wrote, as a message may quote it."""
    return name if name.isidentifier() and len(name) <= 60 else "(unnamed)"


def implied_weights(config: dict[str, Any], what: str, called: bool) -> list[tuple[tuple[int, ...], int]]:
    """(shape, bytes) of each weight the model in CONFIG has, found by building it in a stateless
    scope, where Keras records the variables' shapes without allocating them."""
    import keras
    from keras.src.backend.common import global_state

    config = {**config, "compile_config": None}  # loaded with compile=False: no optimizer
    # Deferred variables wait in this list for a stateless scope's end; the ones made here are
    # taken out again, so nothing ever allocates them.
    pending = global_state.get_global_attribute("uninitialized_variables", [], set_to_default=True)
    before = len(pending)
    try:
        with keras.StatelessScope(initialize_variables=False):
            model = keras.saving.deserialize_keras_object(config, safe_mode=True)
            found = [(tuple(int(n) for n in v.shape), math.prod(v.shape) * _itemsize(v.dtype))
                     for v in getattr(model, "weights", [])]
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for configs it refuses
        detail = "" if called else f": {type(exc).__name__}: {str(exc)[:300]}"
        raise ModelRefused(f"the model {what} could not be built from its {CONFIG}{detail}") from None
    finally:
        del pending[before:]
    return found


def _itemsize(dtype: Any) -> int:
    import numpy as np

    try:
        return int(np.dtype(str(dtype)).itemsize)
    except TypeError:
        return 8


def weights_problem(path: Path, needed: list[tuple[tuple[int, ...], int]], called: bool) -> str:
    """Why the HDF5 weights file PATH must not be read for a model whose weights are NEEDED ('' when
    it may): a link out of the file, an array that is not stored in it, an array no weight of the
    model has, or more weights than the file holds."""
    import h5py

    size = path.stat().st_size
    needed_bytes = sum(n for _, n in needed)
    if needed_bytes > size:
        return f"its layers have {_size(needed_bytes)} of weights, but its {WEIGHTS} is {_size(size)}"
    shapes = {shape for shape, _ in needed} | {()}  # () for the optimizer's step and rate
    links: list[tuple[str, Any]] = []

    def visit(name: str, link: Any) -> Any:
        links.append((name, link))
        return True if len(links) > MAX_WEIGHT_ARRAYS else None

    try:
        with h5py.File(path, "r") as weights:
            weights.visititems_links(visit)
            if len(links) > MAX_WEIGHT_ARRAYS:
                return f"its {WEIGHTS} holds over {MAX_WEIGHT_ARRAYS} entries"
            declared = 0
            for name, link in links:
                if not isinstance(link, h5py.HardLink):
                    return f"its {WEIGHTS} links to data outside itself"
                item = weights.get(name)
                if not isinstance(item, h5py.Dataset):
                    continue
                if item.external or item.is_virtual:  # data in other files: the checker's, a FIFO
                    return f"its {WEIGHTS} links to data outside itself"
                where = "" if called else f" ({_shown_path(name)})"
                if item.dtype.kind not in "biuf":
                    return f"its {WEIGHTS} holds an array of {item.dtype.kind!r} values{where}"
                bytes_ = math.prod(item.shape) * item.dtype.itemsize
                declared += bytes_
                if item.id.get_storage_size() < bytes_ or declared > size:
                    return f"its {WEIGHTS} declares an array of {_size(bytes_)}{where} that is not stored in it"
                # an optimizer's state (Adafactor's has shapes of its own) is never read: compile=False
                if not name.startswith("optimizer/") and tuple(item.shape) not in shapes:
                    shape = "" if called else f" {tuple(item.shape)}"
                    return (f"its {WEIGHTS} holds an array of shape{shape}{where} that no layer"
                            f" in its {CONFIG} has")
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        return f"its {WEIGHTS} is not a weights file ({type(exc).__name__})"
    return ""


def _shown_path(name: str) -> str:
    return name if len(name) <= 100 and name.isprintable() else "an entry"


def _size(n: int) -> str:
    """N bytes for a message: 2.1 KB, 1.5 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
