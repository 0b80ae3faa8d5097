"""Where the course lives: assignments/, datasets/ and templates/ beside each other."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import GraderError

_SOURCE_ROOT = Path(__file__).resolve().parent.parent


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
    if (_SOURCE_ROOT / "assignments").is_dir():
        return _SOURCE_ROOT
    raise GraderError("no course folder found: run inside a folder with assignments/ or pass --course")


def templates_dir() -> Path:
    """The Jinja2 templates shipped with the grader."""
    return _SOURCE_ROOT / "templates"


def data_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The dataset cache: --data-home, else $GRADER_DATA_HOME, else ~/.cache/grader."""
    if explicit is None:
        explicit = os.environ.get("GRADER_DATA_HOME") or None
    if explicit is not None:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return (Path(base).expanduser() / "grader").resolve()
