"""What the commands share: the console, the assignment and its data as the
options name them."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.text import Text

from grader.cli import options
from grader.data.prepare import Prepared, prepare
from grader.model.assignments import Assignment, load_assignment
from grader.model.paths import course_root, data_home
from grader.model.result import Result
from grader.model.text import for_terminal
from grader.reports import similarity

console = Console(stderr=False, highlight=False)


def assignment_of(args: argparse.Namespace) -> Assignment:
    """The assignment the command names, of the course --course names."""
    return load_assignment(course_root(args.course), args.assignment)


def prepared_of(assignment: Assignment, args: argparse.Namespace) -> Prepared | None:
    """ASSIGNMENT's prepared data (made on first use), or None where it has none."""
    recipe = assignment.config.data.recipe
    if recipe is None:
        return None
    return prepare(recipe, course=course_root(args.course), data_home=data_home(args.data_home))


def reports_dir(args: argparse.Namespace, assignment: Assignment) -> Path:
    """Where the feedback pages go: --reports, else reports/ASSIGNMENT."""
    return options.reports_folder(Path(args.reports) if args.reports else Path("reports") / assignment.name)


def similar_pairs(assignment: Assignment, results: list[Result], threshold: float) -> list[similarity.Pair]:
    """The pairs of RESULTS whose written code is at least THRESHOLD alike (--similar)."""
    starter = assignment.release_notebook
    starter_json = starter.read_text(encoding="utf-8", errors="replace") if starter.is_file() else None
    return similarity.similar_pairs(results, starter_json, threshold=threshold)


def plain(text: object, *, cap: int = 500) -> Text:
    """TEXT as a rich table cell shows it as it is: never read as markup ("[/x]" would end the
    command in a MarkupError), its control characters shown as '?' (model.text.for_terminal),
    at most CAP characters. Every cell a student's notebook or file name may fill is one."""
    return Text(for_terminal(text, cap=cap))
