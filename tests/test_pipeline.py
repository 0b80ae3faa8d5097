"""A batch through the whole pipeline on the tests' tiny assignment."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grader.assignments import load_assignment
from grader.data.prepare import prepare
from grader.gradebook import Gradebook
from grader.pipeline import Settings, grade_batch
from grader.submission import discover
from tests.conftest import TINY_SOLUTION

pytestmark = pytest.mark.slow  # every test grades real notebooks in kernels


def tiny(course: Path, data_home: Path):
    assignment = load_assignment(course, "tiny")
    return assignment, prepare("tiny", course=course, data_home=data_home)


def test_one_bad_submission_never_sinks_the_batch(course, data_home, tmp_path, write_notebook):
    folder = tmp_path / "subs"
    write_notebook(folder, "good", *TINY_SOLUTION)
    write_notebook(folder, "raises", "raise RuntimeError('nope')")
    write_notebook(folder, "dies", "import os\nos._exit(3)")
    (folder / "broken.ipynb").write_text("{")
    (folder / "empty_folder").mkdir()
    assignment, prepared = tiny(course, data_home)
    book = Gradebook(tmp_path / "g.sqlite")
    batch = grade_batch(assignment, discover(folder, notebook_name="tiny.ipynb"), gradebook=book,
                        prepared=prepared, settings=Settings(workers=2, reports=tmp_path / "r"))
    stored = {r.student: r for r in book.latest("tiny")}
    assert len(batch.graded) == 5 and set(stored) == {"good", "raises", "dies", "broken", "empty_folder"}
    assert stored["good"].score == 6 and stored["good"].status == "graded"
    assert stored["raises"].status == "cell_error" and stored["raises"].score == 0
    assert stored["dies"].status == "kernel_died"
    assert stored["broken"].status == "invalid" and "not JSON" in stored["broken"].reason
    assert stored["empty_folder"].status == "invalid" and "no .ipynb" in stored["empty_folder"].reason
    assert all((tmp_path / "r" / f"{name}.html").exists() for name in stored)
    assert stored["good"].execution_s > 0 and stored["good"].checks_s > 0


def test_rerun_skips_what_is_graded_unless_forced_or_changed(course, data_home, tmp_path,
                                                              write_notebook):
    folder = tmp_path / "subs"
    write_notebook(folder, "good", *TINY_SOLUTION)
    assignment, prepared = tiny(course, data_home)
    book = Gradebook(tmp_path / "g.sqlite")
    subs = discover(folder, notebook_name="tiny.ipynb")
    assert len(grade_batch(assignment, subs, gradebook=book, prepared=prepared).graded) == 1
    again = grade_batch(assignment, subs, gradebook=book, prepared=prepared)
    assert again.graded == [] and again.skipped == ["good"]
    forced = grade_batch(assignment, subs, gradebook=book, prepared=prepared,
                         settings=Settings(force=True))
    assert len(forced.graded) == 1
    write_notebook(folder, "good", *TINY_SOLUTION, "# edited")
    assert len(grade_batch(assignment, subs, gradebook=book, prepared=prepared).graded) == 1
    check = course / "assignments" / "tiny" / "checks" / "public" / "test_public.py"
    check.write_text(check.read_text() + "\n# a changed check regrades\n")
    assignment = load_assignment(course, "tiny")
    assert len(grade_batch(assignment, subs, gradebook=book, prepared=prepared).graded) == 1
    assert book.count_runs("tiny") == {"good": 4}


def _kernels_of(pid: int) -> list[int]:
    """Processes started for the grader with this pid (they carry GRADER_PARENT_PID)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"GRADER_PARENT_PID={pid}".encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_a_killed_grader_loses_only_what_was_in_flight(course, tmp_path, write_notebook):
    folder = tmp_path / "subs"
    for name in ("a", "b", "c", "d"):
        write_notebook(folder, name, *TINY_SOLUTION)
    write_notebook(folder, "slow", *TINY_SOLUTION, "import time\ntime.sleep(6)")
    book = tmp_path / "g.sqlite"
    command = [sys.executable, "-m", "grader", "run", "tiny", "--course", str(course),
               "--submissions", str(folder), "--gradebook", str(book), "--reports", str(tmp_path / "r")]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    stored = 0
    while time.monotonic() < deadline and stored < 1:
        time.sleep(0.3)
        if book.exists():
            try:
                with sqlite3.connect(book) as db:
                    stored = db.execute("select count(*) from grading_runs").fetchone()[0]
            except sqlite3.OperationalError:
                pass
    assert stored >= 1, "the grader stored nothing within 2 minutes"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    for _ in range(50):  # kernels and checks die with the grader
        if not _kernels_of(process.pid):
            break
        time.sleep(0.2)
    assert _kernels_of(process.pid) == []
    subprocess.run(command, cwd=tmp_path, check=True, capture_output=True)
    assert Gradebook(book).count_runs("tiny") == {n: 1 for n in ("a", "b", "c", "d", "slow")}
