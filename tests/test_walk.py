"""A submission's walk from grade_batch goes through each step once, in the data's order:
grading (stage, execute, check, score) -> store -> reports, and never back.

Every call into grader's own code, on every thread of the grader process, is traced while one
tiny submission is graded; the steps are the modules that do the work."""

from __future__ import annotations

import dis
import functools
import sys
import threading

import pytest

from grader.data.prepare import prepare
from grader.grading.batch import grade_batch
from grader.grading.executor import Settings
from grader.model.assignments import load_assignment
from grader.model.submission import discover
from grader.store.gradebook import Gradebook
from tests.conftest import TINY_SOLUTION

# Each step of the data's path and the module functions that are that step.
STEPS = {
    "grader.model.submission:read_notebook": "read",
    "grader.grading.stage:stage": "stage",
    "grader.grading.execute:run": "execute",
    "grader.grading.warmcheck:finish": "check",
    "grader.grading.check:finish": "check",
    "grader.grading.score:status_of": "score",
    "grader.store.gradebook:store": "store",
    "grader.reports.pages:write_feedback": "report",
}
ORDER = ["read", "stage", "execute", "check", "score", "store", "report"]


@functools.cache
def _first_resume(code) -> int:
    """Where CODE starts to run: a coroutine's frame is 'called' again at each resumption."""
    return next((i.offset for i in dis.get_instructions(code) if i.opname == "RESUME"), 0)


def _walk(trace: list[str]) -> list[str]:
    """TRACE's steps, each repeat in a row made one."""
    steps = [STEPS[c] for c in trace if c in STEPS]
    return [s for i, s in enumerate(steps) if i == 0 or steps[i - 1] != s]


def test_the_walk_of_a_traced_call_list_is_read_as_steps():
    trace = ["grader.model.submission:read_notebook", "x:y", "grader.grading.stage:stage",
             "grader.grading.execute:run", "grader.grading.execute:run",
             "grader.store.gradebook:store", "grader.grading.score:status_of"]
    assert _walk(trace) == ["read", "stage", "execute", "store", "score"]
    assert _walk(trace) != ORDER  # a walk that goes back is told apart


@pytest.mark.slow  # one notebook in a sandboxed kernel
def test_one_submission_walks_each_step_once_in_the_datas_order(course, data_home, tmp_path,
                                                                write_notebook):
    write_notebook(tmp_path / "subs", "ann", *TINY_SOLUTION)
    assignment = load_assignment(course, "tiny")
    prepared = prepare("tiny", course=course, data_home=data_home)
    calls: list[str] = []
    lock = threading.Lock()

    def profile(frame, event, arg):
        if event == "call" and frame.f_lasti <= _first_resume(frame.f_code):
            module = frame.f_globals.get("__name__", "")
            if module.startswith("grader."):
                with lock:
                    calls.append(f"{module}:{frame.f_code.co_name}")

    threading.setprofile(profile)
    sys.setprofile(profile)
    try:
        batch = grade_batch(assignment, discover(tmp_path / "subs", notebook_name="tiny.ipynb"),
                            gradebook=Gradebook(tmp_path / "g.sqlite"), prepared=prepared,
                            settings=Settings(workers=1, reports=tmp_path / "reports",
                                              notebook_html=False))
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    assert [r.status for r in batch.graded] == ["graded"], batch.graded[0].reason
    assert _walk(calls) == ORDER, _walk(calls)
