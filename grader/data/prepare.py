"""Build an assignment's student-visible and hidden files from a recipe in datasets/recipes/.

A recipe is a Python file with INPUTS (registry names of the raw datasets it reads), VERSION, and
build(raw, student, hidden), which writes into two empty folders. Results are cached under the
data home, keyed by the recipe's source and its inputs, and built in a temporary folder that is
renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..errors import DataError


@dataclass(frozen=True)
class Prepared:
    """The two folders of one prepared recipe."""

    student_dir: Path  # copied next to the notebook into the kernel's working directory
    hidden_dir: Path  # read by trusted checks only; never enters a kernel


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


def prepare(recipe: str, *, course: Path, data_home: Path) -> Prepared:
    """Return the prepared folders of RECIPE, building them once per distinct input."""
    module = load_recipe(course, recipe)
    source = (course / "datasets" / "recipes" / f"{recipe}.py").read_bytes()
    raw: dict[str, Path] = {}
    if module.INPUTS:
        from .registry import raw_inputs  # the dataset cache; only recipes with inputs need it

        raw = raw_inputs(module.INPUTS, data_home=data_home)
    key = hashlib.sha256(source)
    for name in sorted(raw):
        key.update(name.encode() + b"\0" + str(raw[name]).encode() + b"\0")
    target = data_home / "prepared" / f"{recipe}-{key.hexdigest()[:16]}"
    if not (target / "student").is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{recipe}-", dir=target.parent))
        try:
            (work / "student").mkdir()
            (work / "hidden").mkdir()
            module.build(raw, work / "student", work / "hidden")
            try:
                work.rename(target)
            except OSError:  # another worker finished first: use theirs
                pass
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return Prepared(student_dir=target / "student", hidden_dir=target / "hidden")
