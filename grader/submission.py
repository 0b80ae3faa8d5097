"""Find the submissions in a folder and read each notebook without trusting it."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from .errors import SubmissionError

MAX_NOTEBOOK_BYTES = 20_000_000
MAX_STUDENT_ID = 100


@dataclass(frozen=True)
class Submission:
    """One student's hand-in: the notebook, or why there is none to grade."""

    student: str
    path: Path | None
    problem: str | None = None


class InvalidNotebook(Exception):
    """The file is no notebook the grader can run; the message is for the student."""


def slug(student: str) -> str:
    """A file name for a student id that cannot escape a folder or collide with another id."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", student)[:60].strip("._") or "student"
    if clean == student:
        return clean
    return f"{clean}-{hashlib.sha256(student.encode('utf-8', 'surrogateescape')).hexdigest()[:10]}"


def student_id(name: str) -> str:
    """The id kept in the gradebook: printable, bounded, the same for the same file name."""
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else "?" for ch in name)
    text = text.encode("utf-8", "replace").decode("utf-8", "replace")
    if len(text) > MAX_STUDENT_ID:
        digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:10]
        text = f"{text[: MAX_STUDENT_ID - 12]}~{digest}"
    return text or "?"


def discover(folder: Path, *, notebook_name: str) -> list[Submission]:
    """Every DIR/STUDENT.ipynb and DIR/STUDENT/*.ipynb, sorted by student."""
    if not folder.is_dir():
        raise SubmissionError(f"submissions folder {folder} does not exist: pass --submissions DIR")
    found: list[Submission] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix == ".ipynb":
            found.append(Submission(student_id(entry.stem), entry))
        elif entry.is_dir() and not entry.is_symlink():
            found.append(_from_folder(entry, notebook_name))
    if not found:
        raise SubmissionError(
            f"no notebooks in {folder}: expected DIR/STUDENT.ipynb or DIR/STUDENT/*.ipynb"
        )
    return found


def _from_folder(folder: Path, notebook_name: str) -> Submission:
    """A student folder holds one notebook; with several, the one named like the assignment."""
    student = student_id(folder.name)
    notebooks = sorted(p for p in folder.glob("*.ipynb") if p.is_file())
    if len(notebooks) == 1:
        return Submission(student, notebooks[0])
    named = [p for p in notebooks if p.name == notebook_name]
    if named:
        return Submission(student, named[0])
    if not notebooks:
        return Submission(student, None, f"no .ipynb file in the folder {folder.name}/")
    names = ", ".join(p.name for p in notebooks)
    return Submission(
        student, None, f"several notebooks ({names}) and none named {notebook_name}: hand in one"
    )


def read_notebook(path: Path) -> tuple[NotebookNode, str]:
    """The notebook (upgraded to format 4) and the sha256 of its bytes."""
    try:
        size = path.stat().st_size
        if size > MAX_NOTEBOOK_BYTES:
            raise InvalidNotebook(
                f"the notebook is {size / 1e6:.0f} MB; the limit is {MAX_NOTEBOOK_BYTES / 1e6:.0f} MB"
                " (clear large outputs before handing in)"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidNotebook(f"the notebook could not be read: {exc.strerror}") from None
    digest = hashlib.sha256(data).hexdigest()
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidNotebook(f"the file is not a valid notebook (not JSON: {exc})") from None
    if not isinstance(raw, dict) or ("cells" not in raw and "worksheets" not in raw):
        raise InvalidNotebook("the file is JSON but not a notebook (no cells)")
    try:
        nb = nbformat.reads(json.dumps(raw), as_version=4)
        nbformat.validate(nb)
    except Exception as exc:  # noqa: BLE001 - nbformat raises many types for broken notebooks
        raise InvalidNotebook(f"the notebook does not follow the notebook format: {exc}") from None
    if not any(cell.cell_type == "code" and cell.source.strip() for cell in nb.cells):
        raise InvalidNotebook("the notebook has no code to run")
    return nb, digest
