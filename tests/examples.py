"""Shared steps of the per-assignment tests: release, validate, and grading the examples."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader.assignments import load_assignment
from grader.gradebook import Gradebook
from grader.score import Result
from tests.conftest import require_real_datasets

REPO = Path(__file__).resolve().parents[1]


def grader(*args: object, home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the grader CLI with HOME as its dataset cache."""
    env = {**os.environ, "GRADER_DATA_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "grader", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


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
    points of its assignment.toml."""
    assignment = load_assignment(REPO, name)
    points: dict[str, float | None] = {}
    for path in assignment.check_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        points.update({f"{path.name}::{node.name}": _points(node) for node in tree.body
                       if isinstance(node, ast.FunctionDef) and node.name.startswith("test")})
    assert points and None not in points.values(), f"checks without a points marker: {points}"
    assert sum(p for p in points.values() if p is not None) == assignment.config.points, points


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


def assert_validates(name: str, home: Path, tmp_path: Path) -> None:
    run = grader("validate", name, "--course", REPO, home=home, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"{name} is valid: reference 10/10, starter 0" in run.stdout


def grade_examples(name: str, home: Path, tmp_path: Path,
                   expected: dict[str, tuple[float, str, str]],
                   checks: dict[str, dict[str, float]] | None = None) -> dict[str, Result]:
    """Grade the assignment's examples; assert each (score, status, words in the reason) and,
    for the students in CHECKS, the points of every check. Return the results by student."""
    run = grader("run", name, "--course", REPO, "--workers", "2",
                 "--submissions", REPO / "assignments" / name / "submissions", home=home, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = {r.student: r for r in Gradebook(tmp_path / "gradebook.sqlite").latest(name)}
    found = {s: (r.score, r.status) for s, r in results.items()}
    assert found == {s: (score, status) for s, (score, status, _) in expected.items()}, {
        s: r.reason[:200] for s, r in results.items()}
    for student, (_, _, words) in expected.items():
        page = (tmp_path / "reports" / name / f"{student}.html").read_text(encoding="utf-8")
        assert words in results[student].reason and words in page, (student, results[student].reason)
    for student, points in (checks or {}).items():
        assert {c.name: c.points for c in results[student].checks} == points, student
    return results


def images_on_page(name: str, student: str, tmp_path: Path) -> int:
    """How many plots the student's feedback page embeds."""
    page = (tmp_path / "reports" / name / f"{student}.html").read_text(encoding="utf-8")
    return page.count("data:image/png;base64,")
