"""Shared steps of the assignments' tests (tests/test_assignments.py): release, validate, and
grading the examples.

The pattern: ONE BATCH PER ASSIGNMENT, SHARED BY ITS TESTS. Running notebooks is what costs time,
so all of an assignment's examples (assignments/NAME/submissions) are graded once, in one `grader
run` (`grade_examples`), by the first test that asks for them, and many small tests assert on that
one batch; tests/test_assignments.py keeps the batches in a session fixture keyed by assignment and
holds one table of expectations per assignment:

    assert_validates(examples)               # what `grader validate` demands, on the same batch
    assert_scores(examples, EXPECTED)        # EXPECTED: student -> (score, status, reason words)

and so on: `assert_reasons`, `assert_check_points`, `examples.images(student)`,
`examples.message(student, check)`. `grade_examples(..., limits={"cell_seconds": N})` grades them with a
lower cell limit than the assignment's, so that the hangs example waits less; N must stay well
above the reference's longest cell. Where the reference trains for minutes (assignments 04 to
06), its tests run the real `grader validate` once (`validate`, `assert_valid`) and grade the other
examples in batches with smaller limits (`students=`, `assert_only_limits_change`).

Elsewhere no test runs `grader validate` or another `grader run` on the real assignment: the
reference example is the instructor notebook without its solution markers (`assert_reference_is_the_source`)
and the starter example is the released notebook (`assert_release_reproduces`), so `grader
validate`'s conditions are checked on the batch's reference and starter through
`grader.cli.run.validation_problems`, the function the command uses. Tests that need no graded notebook
(points add up, releases reproduce, no hidden data reaches the kernel) take no batch and stay
fast; tests that take one are `@pytest.mark.slow`. Where a full training run is not what an example
is about, keep the example small (few epochs, a subset).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from grader.cli.run import validation_problems
from grader.course.release import BEGIN, END
from grader.model.assignments import load_assignment
from grader.model.result import Result
from grader.store.gradebook import Gradebook
from tests.conftest import require_real_datasets

REPO = Path(__file__).resolve().parents[1]


def grader(*args: object, home: Path, cwd: Path,
           timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the grader CLI with HOME as its dataset cache; TIMEOUT only guards against a grader
    that hangs (the grader's own limits stop a notebook)."""
    env = {**os.environ, "GRADER_DATA_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "grader", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


# `grader validate` trains a reference for minutes: assignment04's took over 15 minutes on a slow
# day of a 2-core CI machine (its cell limit is 30). The test that first asks for it gets as long.
VALIDATE_TIMEOUT = 2400


def import_real_data(tmp_path_factory: pytest.TempPathFactory, *names: str) -> Path:
    """A fresh dataset cache with NAMES imported from ../shared/datasets."""
    shared = require_real_datasets()
    home = tmp_path_factory.mktemp("data-home")
    run = grader("data", "import", shared, *names, home=home, cwd=home)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return home


def assert_release_reproduces(name: str, tmp_path: Path) -> None:
    """`grader release` rebuilds the committed starter, which is also the starter example."""
    assignment = REPO / "assignments" / name
    course = tmp_path / "course"
    shutil.copytree(assignment, course / "assignments" / name)
    (course / "assignments" / name / "release" / f"{name}.ipynb").unlink()
    run = grader("release", name, "--course", course, home=tmp_path, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    made = (course / "assignments" / name / "release" / f"{name}.ipynb").read_bytes()
    assert made == (assignment / "release" / f"{name}.ipynb").read_bytes()
    assert made == (assignment / "submissions" / "starter.ipynb").read_bytes()


def _points(check: ast.FunctionDef) -> float | None:
    """The N of the check's `@pytest.mark.points(N)`, or None when it has no such marker."""
    for decorator in check.decorator_list:
        if (isinstance(decorator, ast.Call) and ast.unparse(decorator.func) == "pytest.mark.points"
                and len(decorator.args) == 1 and isinstance(decorator.args[0], ast.Constant)):
            return float(decorator.args[0].value)
    return None


def assert_points_add_up(name: str) -> None:
    """Every check of the assignment carries an explicit points marker, and they add up to the
    points of its assignment.toml less its rubric's (the written answers staff grade)."""
    assignment = load_assignment(REPO, name)
    points: dict[str, float | None] = {}
    for path in assignment.check_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        points.update({f"{path.name}::{node.name}": _points(node) for node in tree.body
                       if isinstance(node, ast.FunctionDef) and node.name.startswith("test")})
    assert points and None not in points.values(), f"checks without a points marker: {points}"
    total = sum(p for p in points.values() if p is not None)
    assert total == assignment.config.check_points, points


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _tainted(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """The names in FUNCTION whose values are computed from the `hidden` fixture."""
    tainted = {"hidden"}
    while True:
        before = len(tainted)
        for node in ast.walk(function):
            pairs: list[tuple[ast.AST, ast.AST | None]] = []
            if isinstance(node, ast.Assign):
                pairs = [(target, node.value) for target in node.targets]
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.NamedExpr)):
                pairs = [(node.target, node.value)]
            elif isinstance(node, (ast.For, ast.comprehension)):
                pairs = [(node.target, node.iter)]
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                pairs = [(node.optional_vars, node.context_expr)]
            for target, value in pairs:
                if value is not None and _names(value) & tainted:
                    tainted |= _names(target)
        if len(tainted) == before:
            return tainted


def hidden_data_to_kernel(source: str) -> list[str]:
    """Calls in check code that may hand hidden data to the student's kernel: a
    `submission.call`/`call_array`, or any call that is also given `submission`, with an
    argument computed from the `hidden` fixture. A conservative reading of the code: it follows
    assignments within each function, not values returned by helpers it calls."""
    found = []
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        tainted = _tainted(function)
        for call in ast.walk(function):
            if not isinstance(call, ast.Call):
                continue
            args = [*call.args, *(k.value for k in call.keywords)]
            to_kernel = (isinstance(call.func, ast.Attribute)
                         and call.func.attr in ("call", "call_array")) or any(
                isinstance(a, ast.Name) and a.id == "submission" for a in args)
            if to_kernel and any(_names(a) & tainted for a in args):
                found.append(f"{function.name}, line {call.lineno}: {ast.unparse(call)}")
    return found


def assert_no_hidden_data_reaches_the_kernel(name: str) -> None:
    """No check of the assignment passes anything computed from hidden data to the student's
    functions."""
    assignment = load_assignment(REPO, name)
    paths = [*assignment.check_files(), assignment.root / "checks" / "conftest.py"]
    found = [f"{path.name}: {call}" for path in paths if path.is_file()
             for call in hidden_data_to_kernel(path.read_text(encoding="utf-8"))]
    assert not found, found


@dataclass(frozen=True)
class Examples:
    """One `grader run` over an assignment's examples: the stored results and the pages it wrote."""

    name: str
    folder: Path  # the run's working folder: gradebook.sqlite and reports/NAME/
    results: dict[str, Result]

    def page(self, student: str) -> str:
        """The student's feedback page."""
        return (self.folder / "reports" / self.name / f"{student}.html").read_text(encoding="utf-8")

    def images(self, student: str) -> int:
        """How many plots the student's feedback page embeds."""
        return self.page(student).count("data:image/png;base64,")

    def message(self, student: str, check: str) -> str:
        """The message of one check of the student's result."""
        return {c.name: c.message for c in self.results[student].checks}[check]

    def points(self, student: str) -> dict[str, float]:
        """The points of every check of the student's result."""
        return {c.name: c.points for c in self.results[student].checks}


def with_limits(name: str, course: Path, limits: dict[str, float]) -> Path:
    """A copy of the course in COURSE with only assignment NAME, whose [limits] LIMITS replace the
    assignment's (nothing else of it changes)."""
    shutil.copytree(REPO / "datasets", course / "datasets")
    shutil.copytree(REPO / "assignments" / name, course / "assignments" / name,
                    ignore=shutil.ignore_patterns("submissions"))
    toml = course / "assignments" / name / "assignment.toml"
    text = toml.read_text(encoding="utf-8")
    for key, value in limits.items():
        text, found = re.subn(rf"^{key} = [^\n#]*", f"{key} = {value:g} ", text, count=1,
                              flags=re.MULTILINE)
        assert found == 1, f"{toml} has no {key} line to change"
    toml.write_text(text, encoding="utf-8")
    return course


def assert_only_limits_change(name: str, course: Path, limits: dict[str, float]) -> None:
    """`with_limits` changes the LIMITS lines of the assignment's toml and nothing else."""
    toml = (REPO / "assignments" / name / "assignment.toml").read_text(encoding="utf-8")
    changed = (with_limits(name, course, limits) / "assignments" / name / "assignment.toml")
    differ = [a for a, b in zip(toml.splitlines(), changed.read_text(encoding="utf-8").splitlines(),
                                strict=True) if a != b]
    assert [line.split(" = ")[0] for line in differ] == list(limits)


@dataclass
class Validated:
    """What `grader validate NAME` did: its process, its wall time, the reference's page."""

    name: str
    run: subprocess.CompletedProcess[str]
    seconds: float
    page: str


def validate(name: str, home: Path, folder: Path) -> Validated:
    """Run `grader validate NAME` on the real assignment (its own limits) in FOLDER, for the
    assignments whose reference trains for minutes and so is graded once, here."""
    start = time.monotonic()
    run = grader("validate", name, "--course", REPO, "--reports", folder / "reports",
                 home=home, cwd=folder, timeout=VALIDATE_TIMEOUT - 300)
    seconds = time.monotonic() - start
    page = folder / "reports" / "reference.html"
    return Validated(name, run, seconds, page.read_text(encoding="utf-8") if page.is_file() else "")


def assert_valid(validated: Validated) -> None:
    """`grader validate` exited 0 with full marks from the checks for the reference (the
    rubric's points wait for staff) and none for the starter."""
    run = validated.run
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    config = load_assignment(REPO, validated.name).config
    assert (f"{validated.name} is valid: reference {config.check_points:g}/{config.points:g},"
            " starter 0") in run.stdout
    print(f"grader validate {validated.name}: {validated.seconds:.0f} s")


def grade_examples(name: str, home: Path, folder: Path, *, limits: dict[str, float] | None = None,
                   students: Iterable[str] | None = None, executor: str = "local") -> Examples:
    """Grade the assignment's examples (or only STUDENTS) in one `grader run` (two workers, on
    EXECUTOR: local or ray) in FOLDER.

    With LIMITS (e.g. {"cell_seconds": 30}), grade them under those limits instead of the
    assignment's (in a copy of the course), so that the hangs example spins for less time; a cell
    limit must stay well above the reference's longest cell, and it makes the validate conditions
    stricter, never looser."""
    course = REPO if limits is None else with_limits(name, folder / "course", limits)
    submissions = REPO / "assignments" / name / "submissions"
    if students is not None:
        chosen = folder / "submissions"
        chosen.mkdir()
        for student in students:
            shutil.copy(submissions / f"{student}.ipynb", chosen)
        submissions = chosen
    run = grader("run", name, "--course", course, "--workers", "2", "--submissions", submissions,
                 "--executor", executor, home=home, cwd=folder)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = {r.student: r for r in Gradebook(folder / "gradebook.sqlite").latest(name)}
    return Examples(name, folder, results)


def assert_scores(examples: Examples, expected: dict[str, tuple[float, str, str]]) -> None:
    """Every example, and only those, got its (score, status)."""
    found = {s: (r.score, r.status) for s, r in examples.results.items()}
    assert found == {s: (score, status) for s, (score, status, _) in expected.items()}, {
        s: r.reason[:200] for s, r in examples.results.items()}


def assert_reasons(examples: Examples, expected: dict[str, tuple[float, str, str]]) -> None:
    """Each example's reason, and its feedback page, hold the expected words."""
    for student, (_, _, words) in expected.items():
        reason = examples.results[student].reason
        assert words in reason and words in examples.page(student), (student, reason)


def assert_check_points(examples: Examples, checks: dict[str, dict[str, float]]) -> None:
    """For the students in CHECKS, the points of every check."""
    for student, points in checks.items():
        assert examples.points(student) == points, student


def _solution_cells(path: Path) -> list[tuple[str, str]]:
    """The notebook's cells as (type, source), without the solution marker lines."""
    cells = nbformat.read(path, as_version=4).cells
    return [(c.cell_type, "\n".join(line for line in c.source.splitlines()
                                     if not line.strip().startswith((BEGIN, END)))) for c in cells]


def assert_reference_is_the_source(name: str) -> None:
    """The reference example is the instructor notebook without its solution markers, so grading it
    stands for what `grader validate` grades."""
    assignment = load_assignment(REPO, name)
    reference = assignment.root / "submissions" / "reference.ipynb"
    assert _solution_cells(reference) == _solution_cells(assignment.source_notebook)


def assert_validates(examples: Examples) -> None:
    """What `grader validate` demands, on the batch's reference and starter: the reference gets
    full marks from the checks (the rubric's points wait for staff), the starter none, and the
    checks add up to the assignment's points less the rubric's."""
    assignment = load_assignment(REPO, examples.name)
    reference, starter = examples.results["reference"], examples.results["starter"]
    assert validation_problems(assignment, reference, starter) == []
    assert reference.score == assignment.config.check_points, reference.checks
    assert reference.max_score == assignment.config.points
