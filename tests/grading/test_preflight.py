"""The preflight: the checks are collected in the trusted process and their points must add up;
a kernel that cannot start stops the command before anyone is graded (see test_faults.py)."""

from __future__ import annotations

import asyncio

import pytest

from grader.grading.preflight import CollectedCheck, PreflightFailed, check_points, collect_checks
from grader.model.assignments import load_assignment
from grader.model.errors import GraderError


def collected(course):
    assignment = load_assignment(course, "tiny")
    return assignment, asyncio.run(collect_checks(assignment, sandboxed=True))


def test_the_checks_are_collected_with_their_points(course):
    assignment, checks = collected(course)
    assert {(c.name, c.points, c.public) for c in checks} == {
        ("test_total", 1, True), ("test_squares", 1, True), ("test_double", 2, False),
        ("test_guess", 2, False)}
    assert all(c.marked for c in checks)
    check_points(assignment, checks)  # 6 points, as assignment.toml says


def test_a_check_without_a_points_marker_is_refused(course):
    public = course / "assignments" / "tiny" / "checks" / "public" / "test_public.py"
    public.write_text(public.read_text() + "\n\ndef test_unmarked(submission):\n    assert True\n")
    assignment, checks = collected(course)
    with pytest.raises(GraderError, match=r"test_public.py: test_unmarked has no @pytest.mark.points"):
        check_points(assignment, checks)


def test_points_that_do_not_add_up_are_refused(course):
    toml = course / "assignments" / "tiny" / "assignment.toml"
    toml.write_text(toml.read_text().replace("points = 6", "points = 7"))
    assignment, checks = collected(course)
    with pytest.raises(GraderError, match=r"worth 6 points but .*assignment.toml says points = 7"):
        check_points(assignment, checks)


def test_no_checks_at_all_is_refused(course):
    assignment = load_assignment(course, "tiny")
    with pytest.raises(GraderError, match="holds no checks"):
        check_points(assignment, [])
    one = CollectedCheck("test_x", "f.py", True, 6, True)
    check_points(assignment, [one])


def test_checks_that_cannot_be_collected_stop_the_preflight(course):
    conftest = course / "assignments" / "tiny" / "checks" / "conftest.py"
    conftest.write_text("import a_module_that_does_not_exist\n")
    with pytest.raises(PreflightFailed, match="cannot collect the checks of tiny.*a_module_that_does_not_exist"):
        collected(course)


@pytest.mark.slow
def test_notebooks_the_grader_cannot_write_down_first_in_line_do_not_stop_the_batch(
        course, data_home, tmp_path, write_notebook):
    """A lone surrogate in a cell's source once made staging fail, which the kernel probe took
    for a kernel that cannot run here: four such notebooks first in line stopped every batch."""
    import json

    import nbformat

    from grader.data.prepare import prepare
    from grader.grading.batch import grade_batch
    from grader.grading.executor import Settings
    from grader.model.submission import discover
    from grader.store.gradebook import Gradebook
    from tests.conftest import TINY_SOLUTION, notebook

    folder = tmp_path / "subs"
    folder.mkdir()
    for name in ("a1", "a2", "a3", "a4"):
        nb = json.loads(nbformat.writes(notebook(*TINY_SOLUTION)))
        nb["cells"][-1]["source"] = "guess = '\ud800'"
        (folder / f"{name}.ipynb").write_text(json.dumps(nb))
    write_notebook(folder, "b", *TINY_SOLUTION)
    book = Gradebook(tmp_path / "g.sqlite")
    batch = grade_batch(load_assignment(course, "tiny"), discover(folder, notebook_name="tiny.ipynb"),
                        gradebook=book, prepared=prepare("tiny", course=course, data_home=data_home),
                        settings=Settings(workers=1, sandboxed=False), preflight=lambda: None)
    assert not batch.stopped, batch.stopped
    stored = {r.student: r for r in book.latest("tiny")}
    assert stored["b"].status == "graded" and stored["b"].score == 6, stored["b"].reason
    for name in ("a1", "a2", "a3", "a4"):
        assert stored[name].status == "invalid" and "lone surrogate" in stored[name].reason
