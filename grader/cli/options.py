"""Checks of command-line values that the argument parser cannot make: one clear error each."""

from __future__ import annotations

import os
from pathlib import Path

from grader.model.errors import GraderError


def reports_folder(path: Path) -> Path:
    """PATH, once it is sure the report pages can be written there (it is made when missing)."""
    if path.exists() and not path.is_dir():
        raise GraderError(f"--reports {path} is a file, not a folder: pass a folder for the "
                          "pages (it is made if missing)")
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise GraderError(f"--reports {path} cannot be made: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise GraderError(f"--reports {path} cannot be written: no permission in {existing}")
    return path


def workers(text: str | int | None) -> int | None:
    """The value of --workers: a number of kernels, or None for auto."""
    value = str(text if text is not None else "auto").strip()
    if value == "auto":
        return None
    if not value.isdigit() or int(value) < 1:
        raise GraderError(f"--workers must be auto or a whole number, 1 or more; found {text!r}")
    return int(value)
