"""Make the starter notebook from the instructor notebook, and prove nothing leaks into it."""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
from nbformat import NotebookNode

from grader.model.errors import AssignmentError

if TYPE_CHECKING:
    from grader.model.assignments import Assignment

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
CODE_STUB = "raise NotImplementedError()"
MARKDOWN_STUB = "YOUR ANSWER HERE"
_MIN_LEAK = 12  # shorter lines (`x = 1`, `import numpy as np`) are too common to call a leak


def _strip_solutions(source: str, stub: str) -> tuple[str, list[str]]:
    """Replace each marked region by the stub; return the new text and the removed lines."""
    kept: list[str] = []
    removed: list[str] = []
    inside = False
    for line in source.splitlines():
        marker = line.strip()
        if marker.startswith(BEGIN):
            if inside:
                raise AssignmentError(f"nested {BEGIN!r}: close each solution before opening one")
            inside = True
            kept.append(line[: len(line) - len(line.lstrip())] + stub)
        elif marker.startswith(END):
            if not inside:
                raise AssignmentError(f"{END!r} without a {BEGIN!r} before it")
            inside = False
        elif inside:
            removed.append(line)
        else:
            kept.append(line)
    if inside:
        raise AssignmentError(f"{BEGIN!r} is never closed by {END!r}")
    return "\n".join(kept), removed


def make_starter(source_nb: NotebookNode) -> NotebookNode:
    """The starter notebook: solutions replaced by stubs, outputs cleared."""
    nb = nbformat.from_dict(copy.deepcopy(source_nb))
    for cell in nb.cells:
        if cell.cell_type in ("code", "markdown"):
            stub = CODE_STUB if cell.cell_type == "code" else MARKDOWN_STUB
            cell.source, _ = _strip_solutions(cell.source, stub)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("nbgrader", None)
    nb.metadata.pop("widgets", None)
    return nb


def _distinctive(lines: list[str], common: set[str]) -> set[str]:
    """Lines long and rare enough that finding one elsewhere means it was copied."""
    out = set()
    for line in lines:
        text = line.strip()
        if len(text) >= _MIN_LEAK and text not in common and not text.startswith(("#", "import ", "from ")):
            out.add(text)
    return out


def _strings(node: object) -> list[str]:
    """Every line of every string in a notebook: sources, outputs, metadata, attachments."""
    if isinstance(node, str):
        return [line.strip() for line in node.splitlines()]
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in _strings(key) + _strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return []


def _pairs(lines: list[str]) -> set[tuple[str, str]]:
    """Consecutive pairs of non-empty stripped lines."""
    kept = [line.strip() for line in lines if line.strip()]
    return set(itertools.pairwise(kept))


def solution_lines(source_nb: NotebookNode) -> set[str]:
    """The distinctive lines of the solutions of SOURCE_NB: finding one elsewhere is a leak."""
    given: list[str] = []
    solutions: list[str] = []
    for cell in source_nb.cells:
        kept, removed = _strip_solutions(cell.source, "")
        given.extend(line.strip() for line in kept.splitlines())
        solutions.extend(removed)
    return _distinctive(solutions, set(given))


def find_leaks(starter: NotebookNode, source_nb: NotebookNode, hidden_sources: list[str]) -> list[str]:
    """Solution lines or hidden checks found anywhere in the starter notebook.

    A solution line is a leak unless the instructor also gives it outside a solution. A hidden
    check leaks when its name, or two of its lines in a row, show up: one line alone (loading
    the data, say) is too often shared with the notebook on purpose.
    """
    strings = _strings(starter)
    found = set(strings)
    solution = solution_lines(source_nb)
    leaks = [f"solution line {line!r}" for line in sorted(solution & found)]
    hidden_lines = [ln for src in hidden_sources for ln in src.splitlines()]
    names = {m.group(1) for m in re.finditer(r"def (test_\w+)", "\n".join(hidden_lines))}
    text = "\n".join(strings)
    leaks += [f"hidden check name {name!r}" for name in sorted(names) if name in text]
    copied = _pairs(hidden_lines) & _pairs(strings)
    leaks += [f"hidden check lines {a!r} / {b!r}" for a, b in sorted(copied)
              if len(a) + len(b) >= 2 * _MIN_LEAK]
    leaks += [f"solution marker {m!r}" for m in (BEGIN, END) if m in text]
    leaks += [f"path into the hidden checks {p!r}" for p in re.findall(r"checks/hidden\S*", text)]
    return leaks


def write_notebook(nb: NotebookNode, path: Path) -> None:
    """Write a notebook the same way every time, so releases reproduce byte for byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")


def read_source(assignment: Assignment) -> NotebookNode:
    """The instructor notebook of ASSIGNMENT."""
    path = assignment.source_notebook
    try:
        return nbformat.read(path, as_version=4)
    except FileNotFoundError:
        raise AssignmentError(f"the instructor notebook {path} is missing") from None
    except Exception as exc:  # noqa: BLE001 - nbformat raises many types for broken files
        raise AssignmentError(f"the instructor notebook {path} cannot be read: {exc}") from None
