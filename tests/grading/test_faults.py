"""A fault of the grader or the machine is never a student's result: it is stored as `error`,
shown to staff, not exported as a score, and graded again by the next plain run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grader.data.prepare import prepare
from grader.grading.batch import grade_batch
from grader.grading.executor import Settings
from grader.model.assignments import load_assignment
from grader.model.errors import PreflightFailed
from grader.model.submission import discover
from grader.store.gradebook import Gradebook
from tests.conftest import TINY_SOLUTION

pytestmark = pytest.mark.slow

BROKEN_CHECK = '''
import pytest


@pytest.mark.points(2)  # the public checks it replaces are worth 2
def test_total(submission):
    """a check with a bug of its own"""
    found = submission.number("total")
    assert found + "1" == 2, "unreachable: the line above raises TypeError"
'''

KILLED_CHECK = '''
import os
import signal

import pytest


@pytest.mark.points(2)  # the public checks it replaces are worth 2
def test_total(submission):
    """a checker that is killed while it runs"""
    os.kill(os.getpid(), signal.SIGKILL)
'''


def grader(*args: object, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "grader", *map(str, args)], cwd=cwd,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=600)


def broken_python(folder: Path) -> Path:
    """An "interpreter" that only says it is broken, on stderr, and fails."""
    broken = folder / "python"
    broken.write_text("#!/bin/sh\necho 'Fatal Python error: broken on purpose' >&2\nexit 1\n")
    broken.chmod(0o755)
    return broken


def _public(course: Path) -> Path:
    return course / "assignments" / "tiny" / "checks" / "public" / "test_public.py"


@pytest.mark.parametrize(("check", "detail"), [(BROKEN_CHECK, "test_total"), (KILLED_CHECK, "did not report")],
                         ids=["TypeError", "killed"])
def test_a_check_fault_is_an_error_regraded_by_a_plain_rerun(course, tmp_path, write_notebook, check,
                                                             detail):
    public = _public(course)
    fixed = public.read_text()
    public.write_text(check)
    submissions = tmp_path / "subs"
    write_notebook(submissions, "alice", *TINY_SOLUTION)
    book, reports = tmp_path / "g.sqlite", tmp_path / "reports"
    common = ("--course", course, "--gradebook", book, "--reports", reports, "--workers", 1)
    run = grader("run", "tiny", "--submissions", submissions, *common, cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "grader problem" in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    stored = Gradebook(book).latest("tiny")[0]
    assert stored.status == "error" and "not your fault" in stored.reason, stored.reason
    assert detail in stored.staff_detail, stored.staff_detail
    # The student's page has neither the traceback nor any path of the grading machine.
    page = (reports / "alice.html").read_text()
    assert "Traceback" not in page and "TypeError" not in page and str(tmp_path) not in page
    assert sys.prefix not in page and "site-packages" not in page
    # Exports leave the score empty: a grader fault is not a zero.
    exported = grader("export", "tiny", "--format", "json", "--gradebook", book, "--course", course,
                      cwd=tmp_path)
    row = json.loads(exported.stdout)[0]
    assert row["status"] == "error" and row["score"] in (None, ""), row
    # Staff see it on the summary page, with the detail.
    summary = (reports / "index.html").read_text()
    assert "grader problem" in summary and detail in summary
    # Fixed checks, plain rerun: graded again without --force.
    public.write_text(fixed)
    again = grader("run", "tiny", "--submissions", submissions, *common, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 graded, 0 already graded" in again.stdout
    assert Gradebook(book).latest("tiny")[0].status == "graded"
    assert Gradebook(book).latest("tiny")[0].score == 6


def test_a_kernel_that_cannot_start_is_an_error_and_the_batch_stops(course, data_home, tmp_path,
                                                                   write_notebook):
    broken = broken_python(tmp_path)
    folder = tmp_path / "subs"
    for name in "abcdef":
        write_notebook(folder, name, *TINY_SOLUTION)
    assignment = load_assignment(course, "tiny")
    prepared = prepare("tiny", course=course, data_home=data_home)
    book = Gradebook(tmp_path / "g.sqlite")
    settings = Settings(python=str(broken), stop_after=2, sandboxed=False)
    batch = grade_batch(assignment, discover(folder, notebook_name="tiny.ipynb"), gradebook=book,
                        prepared=prepared, settings=settings)
    assert batch.stopped and "grader's side" in batch.stopped
    assert 2 <= len(batch.graded) < 6, len(batch.graded)
    stored = book.latest("tiny")
    assert stored and all(r.status == "error" for r in stored)
    assert "broken on purpose" in stored[0].staff_detail, stored[0].staff_detail
    assert "broken on purpose" not in stored[0].reason
    assert not any(book.already_graded(r.student, "tiny", r.sha256, r.checks_sha256) for r in stored)


def test_a_first_kernel_that_cannot_start_fails_the_preflight_with_nothing_graded(
        course, data_home, tmp_path, write_notebook):
    broken = broken_python(tmp_path)
    folder = tmp_path / "subs"
    for name in "abc":
        write_notebook(folder, name, *TINY_SOLUTION)
    book = Gradebook(tmp_path / "g.sqlite")
    collected: list[bool] = []
    with pytest.raises(PreflightFailed, match="kernel cannot run here.*broken on purpose.*nothing was graded"):
        grade_batch(load_assignment(course, "tiny"), discover(folder, notebook_name="tiny.ipynb"),
                    gradebook=book, prepared=prepare("tiny", course=course, data_home=data_home),
                    settings=Settings(python=str(broken), sandboxed=False),
                    preflight=lambda: collected.append(True))
    assert collected == [True]  # the checks' half ran beside the kernel probe
    assert book.latest("tiny") == []


@pytest.mark.parametrize("sandbox", [[], ["--no-sandbox"]], ids=["sandboxed", "no-sandbox"])
def test_a_broken_interpreter_stops_the_run_before_anyone_is_graded(course, tmp_path, write_notebook,
                                                                    sandbox, short_root):
    broken = broken_python(short_root)  # a short path: the one-line reason quotes it, then the cause
    submissions = tmp_path / "subs"
    write_notebook(submissions, "alice", *TINY_SOLUTION)
    book = tmp_path / "g.sqlite"
    run = grader("run", "tiny", "--submissions", submissions, "--course", course, "--gradebook", book,
                 "--reports", tmp_path / "reports", *sandbox, cwd=tmp_path,
                 env={"GRADER_KERNEL_PYTHON": str(broken)})
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "kernel" in lines[0] and "broken on purpose" in lines[0], run.stderr
    assert "nothing was graded" in lines[0] and "Traceback" not in run.stderr
    assert not book.exists() or Gradebook(book).latest("tiny") == []


def test_each_thing_that_decides_a_grade_regrades_when_it_changes(course, data_home, tmp_path,
                                                                  write_notebook):
    folder = tmp_path / "subs"
    write_notebook(folder, "alice", *TINY_SOLUTION)
    book = Gradebook(tmp_path / "g.sqlite")
    tiny = course / "assignments" / "tiny"

    def run() -> int:
        assignment = load_assignment(course, "tiny")
        prepared = prepare("tiny", course=course, data_home=data_home)
        subs = discover(folder, notebook_name="tiny.ipynb")
        return len(grade_batch(assignment, subs, gradebook=book, prepared=prepared).graded)

    assert run() == 1
    assert run() == 0, "a rerun without changes grades nothing"
    edits = {
        "checks/conftest.py": tiny / "checks" / "conftest.py",
        "a helper under checks/": tiny / "checks" / "hidden" / "helpers.py",
        "assignment.toml": tiny / "assignment.toml",
        "the data recipe": course / "datasets" / "recipes" / "tiny.py",
    }
    for what, path in edits.items():
        old = path.read_text() if path.exists() else ""
        if path.name == "assignment.toml":  # a setting: a comment there decides nothing
            path.write_text(old + "\n# a comment\n")
            assert run() == 0, "a comment in assignment.toml regrades nothing"
            path.write_text(old.replace("cell_seconds = 10", "cell_seconds = 11"))
        else:
            path.write_text(old + "\n# edited\n")
        assert run() == 1, f"editing {what} must regrade"
        assert run() == 0, f"after editing {what}, a rerun grades nothing"
