"""Build an assignment's student-visible and hidden files from a recipe in datasets/recipes/.

A recipe is a Python file with INPUTS (registry names of the raw datasets it reads), VERSION, and
build(raw, student, hidden), which writes into two empty folders; `raw` maps each input name to its
verified cached file or folder (see grader.data.registry.raw_inputs). Results are cached under the
data home in prepared/<recipe>-<key>/, where the key hashes the recipe's source, its VERSION and the
registry hashes of its inputs (the content, never a path). A result is built in a temporary folder
that is renamed into place only when complete, and re-hashed against its SHA256SUMS on every use.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from grader.data.cache import SUMS
from grader.data.digest import hash_tree, parse_sums, sums_text
from grader.data.registry import Entry, Registry, load_registry, raw_inputs
from grader.model.errors import DataError

# Bump when the way prepared folders are built or checked changes, so old ones are rebuilt.
FORMAT = "2"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """The two folders of one prepared recipe."""

    student_dir: Path  # copied next to the notebook into the kernel's working directory
    hidden_dir: Path  # read by trusted checks only; never enters a kernel
    key: str = ""  # hash of the recipe, its version and its inputs: part of the grading key


def load_recipe(course: Path, name: str) -> ModuleType:
    """Import datasets/recipes/NAME.py from the course folder."""
    path = course / "datasets" / "recipes" / f"{name}.py"
    if not path.is_file():
        raise DataError(f"no data recipe {name!r}: expected {path}")
    spec = importlib.util.spec_from_file_location(f"grader_recipe_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def course_registry(course: Path) -> Registry:
    """The course's datasets/registry.toml, else the registry shipped with the grader."""
    path = course / "datasets" / "registry.toml"
    return load_registry(path if path.is_file() else None)


def cache_key(source: bytes, version: str, inputs: list[Entry]) -> str:
    """Hash of what a prepared result depends on: recipe source and version, input content."""
    # numpy and zlib write the bytes: a new version may write them differently.
    tools = f"numpy {np.__version__}\0zlib {zlib.ZLIB_RUNTIME_VERSION}"
    key = hashlib.sha256(f"format {FORMAT}\0version {version}\0{tools}\0".encode())
    key.update(hashlib.sha256(source).digest())
    for entry in sorted(inputs, key=lambda e: e.name):
        key.update(f"{entry.name}\0{entry.content_hash}\0".encode())
    return key.hexdigest()


def prepare(recipe: str, *, course: Path, data_home: Path) -> Prepared:
    """Return the prepared folders of RECIPE, building them once per distinct input."""
    module = load_recipe(course, recipe)
    source = (course / "datasets" / "recipes" / f"{recipe}.py").read_bytes()
    registry = course_registry(course)
    inputs = [registry.entry(name) for name in module.INPUTS]
    key = cache_key(source, str(module.VERSION), inputs)
    target = data_home / "prepared" / f"{recipe}-{key[:16]}"
    problem = damage(target)
    if problem:
        log.warning("prepared data %s is corrupt (%s): rebuilding it", target, problem)
        discard(target)
    if problem != "":  # never built, or just discarded
        raw = raw_inputs(list(module.INPUTS), data_home=data_home, registry=registry)
        build(module, raw, target)
    return Prepared(student_dir=target / "student", hidden_dir=target / "hidden", key=key)


def damage(target: Path) -> str | None:
    """None if TARGET was never built, "" if it is intact, else what is wrong with it."""
    if not target.exists():
        return None
    recorded = target / SUMS
    if not recorded.is_file():
        return f"{SUMS} is missing"
    good = parse_sums(recorded.read_text(encoding="utf-8"))
    found = {
        f"{part}/{rel}": digest
        for part in ("student", "hidden")
        for rel, digest in hash_tree(target / part).items()
    }
    changed = sorted(rel for rel in set(good) | set(found) if good.get(rel) != found.get(rel))
    return f"{len(changed)} files differ, e.g. {changed[0]}" if changed else ""


def build(module: ModuleType, raw: dict[str, Path], target: Path) -> None:
    """Run the recipe in a scratch folder and rename the finished result to TARGET."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    os.chmod(work, 0o755)  # mkdtemp made it private; kernels may run as another user
    try:
        (work / "student").mkdir()
        (work / "hidden").mkdir()
        module.build(raw, work / "student", work / "hidden")
        sums = {
            f"{part}/{rel}": digest
            for part in ("student", "hidden")
            for rel, digest in hash_tree(work / part).items()
        }
        (work / SUMS).write_text(sums_text(sums), encoding="utf-8")
        try:
            work.rename(target)
        except OSError:  # another worker finished first: use theirs
            pass
    finally:
        shutil.rmtree(work, ignore_errors=True)


def discard(target: Path) -> None:
    """Remove a prepared folder, renaming it first so no reader sees it half deleted."""
    trash = target.with_name(f".{target.name}-trash-{os.getpid()}")
    try:
        target.rename(trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)
