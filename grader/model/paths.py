"""Where things live: the course (assignments/, datasets/recipes/), the files shipped inside the
package (templates, the dataset registry) and the dataset cache."""

from __future__ import annotations

import os
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from grader.model.errors import GraderError

# The grader package's own folder: the trusted checker's sandbox mounts it read-only.
PACKAGE = Path(__file__).resolve().parent.parent
# The checkout an editable install runs from; in site-packages this folder has no pyproject.toml.
_SOURCE_ROOT = PACKAGE.parent


def course_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The course folder: --course, else $GRADER_COURSE, else the nearest folder up from the
    working directory that holds assignments/, else the checkout the grader was installed from."""
    if explicit is None:
        explicit = os.environ.get("GRADER_COURSE") or None
    if explicit is not None:
        root = Path(explicit).expanduser().resolve()
        if not (root / "assignments").is_dir():
            raise GraderError(f"{root} has no assignments/ folder: point --course at a course folder")
        return root
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "assignments").is_dir():
            return folder
    if (_SOURCE_ROOT / "pyproject.toml").is_file() and (_SOURCE_ROOT / "assignments").is_dir():
        return _SOURCE_ROOT
    raise GraderError(
        "no course folder found: run inside a folder with assignments/, pass --course DIR "
        "or set GRADER_COURSE"
    )


def package_file(*parts: str) -> Traversable:
    """A file shipped inside the grader package, e.g. package_file("data", "registry.toml")."""
    return resources.files("grader").joinpath(*parts)


def data_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The dataset cache: --data-home, else $GRADER_DATA_HOME, else ~/.cache/grader."""
    if explicit is None:
        explicit = os.environ.get("GRADER_DATA_HOME") or None
    if explicit is not None:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return (Path(base).expanduser() / "grader").resolve()
