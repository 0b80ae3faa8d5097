"""Find the submissions in a folder and read each notebook without trusting it."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import unicodedata
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

from grader.model.errors import SubmissionError

MAX_NOTEBOOK_BYTES = 20_000_000
MANIFEST = ".collected.json"  # what `grader collect` writes beside the notebooks
MAX_STUDENT_ID = 100
MAX_DEPTH = 64  # levels of JSON nesting: real notebooks (widget states included) use about 10
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Submission:
    """One student's hand-in: the notebook, or why there is none to grade."""

    student: str
    path: Path | None
    problem: str | None = None
    submitted_at: datetime | None = None  # the LMS's time from DIR/.collected.json, if collected


class InvalidNotebook(Exception):
    """The file is no notebook the grader can run; the message is for the student."""


RESERVED_SLUGS = frozenset({"index"})  # index.html is the class summary


def slug(student: str) -> str:
    """A file name for a student id that cannot escape a folder or collide with another id.

    An id made only of [A-Za-z0-9_.-] (and not a reserved name) is its own slug; any other gets
    "~" and a digest of the id, and "~" is in no id that is its own slug."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", student)[:60].strip("._") or "student"
    if clean == student and clean.lower() not in RESERVED_SLUGS:
        return clean
    return f"{clean}~{hashlib.sha256(student.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"


def student_id(name: str) -> str:
    """The id kept in the gradebook: NFC, printable, bounded, the same for the same file name."""
    name = unicodedata.normalize("NFC", name)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else "?" for ch in name)
    if len(text) > MAX_STUDENT_ID:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
        text = f"{text[: MAX_STUDENT_ID - 12]}~{digest}"
    return text or "?"


def discover(folder: Path, *, notebook_name: str) -> list[Submission]:
    """Every DIR/STUDENT.ipynb and DIR/STUDENT/*.ipynb, sorted by student.

    Symbolic links are refused, and hand-ins whose ids are one after normalising (an NFC and an
    NFD spelling, or STUDENT.ipynb beside STUDENT/) are all refused: each is `invalid` with why.
    A folder `grader collect` wrote gives each its submission time from DIR/.collected.json."""
    if folder.is_file():
        raise SubmissionError(f"--submissions {folder} is a file, not a folder of submissions; "
                              "pass the folder that holds it")
    if not folder.is_dir():
        raise SubmissionError(f"submissions folder {folder} does not exist: pass --submissions DIR")
    found: list[Submission] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink() and (entry.suffix == ".ipynb" or entry.is_dir()):
            student = student_id(entry.stem if entry.suffix == ".ipynb" else entry.name)
            found.append(Submission(student, None, f"{entry.name} is a symbolic link, not a "
                                    "hand-in: submit the notebook file itself"))
        elif entry.is_file() and entry.suffix == ".ipynb":
            found.append(Submission(student_id(entry.stem), entry))
        elif entry.is_dir():
            found.append(_from_folder(entry, notebook_name))
    if not found:
        raise SubmissionError(
            f"no notebooks in {folder}: expected DIR/STUDENT.ipynb or DIR/STUDENT/*.ipynb"
        )
    times = read_manifest(folder)
    return sorted((replace(s, submitted_at=times.get(s.student)) for s in _refuse_collisions(found)),
                  key=lambda s: s.student)


def read_manifest(folder: Path) -> dict[str, datetime]:
    """Each student's submission time from FOLDER/.collected.json (`grader collect`); {} without one."""
    path = folder / MANIFEST
    try:
        students = json.loads(path.read_bytes().decode("utf-8"))["students"]
        return {str(s): _aware(datetime.fromisoformat(v["submitted_at"]))
                for s, v in students.items() if isinstance(v, dict) and v.get("submitted_at")}
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SubmissionError(f"{path} is not a manifest `grader collect` wrote ({exc}): collect "
                              "the submissions again, or delete it to use the files' times") from None


def _aware(when: datetime) -> datetime:
    """WHEN with a zone: a time without one is taken as this machine's local time."""
    return when if when.tzinfo else when.astimezone()


def _refuse_collisions(found: list[Submission]) -> list[Submission]:
    """Every hand-in of an id handed in more than once, made invalid: which one counts is unclear."""
    by_student: dict[str, list[Submission]] = {}
    for s in found:
        by_student.setdefault(s.student, []).append(s)
    kept = []
    for student, subs in by_student.items():
        if len(subs) == 1:
            kept.append(subs[0])
            continue
        kept.append(Submission(student, None, f"{len(subs)} hand-ins have the same student id "
                               f"{student!r} (names that differ only in Unicode form or as a "
                               "file and a folder): the staff must keep one and rename the rest"))
    return kept


def _from_folder(folder: Path, notebook_name: str) -> Submission:
    """A student folder holds one notebook; with several, the one named like the assignment."""
    student = student_id(folder.name)
    notebooks = sorted(p for p in folder.glob("*.ipynb") if p.is_file() or p.is_symlink())
    chosen = None
    if len(notebooks) == 1:
        chosen = notebooks[0]
    elif named := [p for p in notebooks if p.name == notebook_name]:
        chosen = named[0]
    elif not notebooks:
        return Submission(student, None, f"no .ipynb file in the folder {folder.name}/")
    if chosen is None:
        names = ", ".join(p.name for p in notebooks)
        return Submission(
            student, None, f"several notebooks ({names}) and none named {notebook_name}: hand in one"
        )
    if chosen.is_symlink():
        return Submission(student, None, f"{folder.name}/{chosen.name} is a symbolic link, not a "
                          "hand-in: submit the notebook file itself")
    return Submission(student, chosen)


def read_notebook(path: Path) -> tuple[NotebookNode, str]:
    """The notebook (upgraded to format 4) and the sha256 of its bytes."""
    data = _read_regular_file(path)
    digest = hashlib.sha256(data).hexdigest()
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidNotebook(f"the file is not a valid notebook (not JSON: {exc})") from None
    except RecursionError:
        raise InvalidNotebook(f"the notebook's JSON is nested more than {MAX_DEPTH} levels deep,"
                              " which no notebook is") from None
    if not isinstance(raw, dict) or ("cells" not in raw and "worksheets" not in raw):
        raise InvalidNotebook("the file is JSON but not a notebook (no cells)")
    if problem := _json_problem(raw):
        raise InvalidNotebook(problem)
    try:
        nb = nbformat.reads(json.dumps(raw), as_version=4)
        nbformat.validate(nb)
    except Exception as exc:  # noqa: BLE001 - nbformat raises many types for broken notebooks
        raise InvalidNotebook(f"the notebook does not follow the notebook format: {exc}") from None
    if not any(cell.cell_type == "code" and cell.source.strip() for cell in nb.cells):
        raise InvalidNotebook("the notebook has no code to run")
    return nb, digest


def _json_problem(raw: dict[str, Any]) -> str:
    """Why RAW cannot be graded as it is ('' when it can): nested deeper than any notebook is
    (every later reader would recurse that deep), or holding a lone surrogate, a character that
    no UTF-8 file, kernel message or page can hold. Walked without recursion."""
    todo: list[tuple[Any, int, str]] = [(raw, 1, "")]
    while todo:
        value, depth, where = todo.pop()
        if depth > MAX_DEPTH:
            return f"the notebook's JSON is nested more than {MAX_DEPTH} levels deep, which no notebook is"
        if isinstance(value, dict):
            items: Any = value.items()
        elif isinstance(value, list):
            items = enumerate(value)
        else:
            if isinstance(value, str) and (found := _SURROGATE.search(value)):
                return (f"the notebook holds a character that cannot be written down (a lone"
                        f" surrogate, U+{ord(found.group()):04X}){where}: remove it and hand in again")
            continue
        for key, item in items:
            if isinstance(key, str) and _SURROGATE.search(key):
                return (f"the notebook holds a character that cannot be written down (a lone"
                        f" surrogate) in a key{where}: remove it and hand in again")
            inner = where or (f" in cell {key + 1}" if depth == 2 and isinstance(key, int) else "")
            todo.append((item, depth + 1, inner))
    return ""


def _read_regular_file(path: Path) -> bytes:
    """The bytes of PATH, which must be a regular file and no symbolic link, within the size limit."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidNotebook("the notebook is a symbolic link, not a file: hand in the "
                                  "notebook itself") from None
        raise InvalidNotebook(f"the notebook could not be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise InvalidNotebook("the hand-in is not a regular file: hand in the notebook itself")
        if info.st_size > MAX_NOTEBOOK_BYTES:
            raise InvalidNotebook(
                f"the notebook is {info.st_size / 1e6:.0f} MB; the limit is "
                f"{MAX_NOTEBOOK_BYTES / 1e6:.0f} MB (clear large outputs before handing in)"
            )
        try:
            return file.read(MAX_NOTEBOOK_BYTES + 1)
        except OSError as exc:
            raise InvalidNotebook(f"the notebook could not be read: {exc.strerror}") from None
