"""The grader as a user installs it: `pip install` (not editable) of the locked versions into a fresh
venv under a folder whose name has a space, then grading the tests' tiny course through the sandbox."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from grader.reports.pages import notebook_name
from tests.conftest import FILES, TINY_SOLUTION, copy_source, notebook

pytestmark = pytest.mark.slow

# Copies of the checkout leave out what a fresh clone does not have.


def _run(*args: object, cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ARGS; fail the test with the tail of its output if it exits non-zero."""
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{args[:3]} exited {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}"
    return done


@pytest.mark.timeout(2400)  # a cold pip cache downloads TensorFlow
def test_a_non_editable_install_grades_the_tiny_course_through_the_sandbox(tmp_path: Path):
    root = tmp_path / "x y"
    source = root / "source"
    copy_source(source)
    venv = root / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=root)
    python, grader = venv / "bin" / "python", venv / "bin" / "grader"

    started = time.monotonic()
    _run(python, "-m", "pip", "install", "--quiet", "-r", source / "requirements.lock", source,
         cwd=root, timeout=2000)
    print(f"pip install -r requirements.lock (not editable): {time.monotonic() - started:.0f} s")
    installed = _run(python, "-c", "import grader; print(grader.__file__)", cwd=root).stdout.strip()
    assert installed.startswith(str(venv)), installed  # a copy in site-packages, not the checkout

    course = root / "course"
    shutil.copytree(FILES / "course", course)
    config = course / "assignments" / "tiny" / "assignment.toml"  # time to import TensorFlow
    config.write_text(config.read_text().replace("total_seconds = 30", "total_seconds = 300")
                      .replace("cell_seconds = 10", "cell_seconds = 120"))
    (root / "subs" / "bob").mkdir(parents=True)
    # The locked TensorFlow is its GPU-capable build: on a CPU it must still run, quietly.
    devices = ("import tensorflow as tf\n"
               "print('devices:', [d.device_type for d in tf.config.list_physical_devices()])")
    nbformat.write(notebook(*TINY_SOLUTION, devices), root / "subs" / "alice.ipynb")
    nbformat.write(notebook("raise ValueError('bob')"), root / "subs" / "bob" / "work.ipynb")
    env = {**os.environ, "GRADER_DATA_HOME": str(root / "data home")}
    env.pop("GRADER_COURSE", None)
    # Run inside the course: the installed grader finds it from the working directory.
    _run(grader, "run", "tiny", "--submissions", root / "subs", "--workers", "2", cwd=course, env=env)
    exported = _run(grader, "export", "tiny", "--format", "csv", cwd=course, env=env).stdout
    rows = [(r["student"], r["score"], r["max_score"], r["status"]) for r in csv.DictReader(io.StringIO(exported))]
    assert rows == [("alice", "6.0", "6.0", "graded"), ("bob", "0.0", "6.0", "cell_error")]
    page = (course / "reports" / "tiny" / "alice.html").read_text(encoding="utf-8")
    assert "6 / 6" in page  # rendered from the templates inside the installed package
    assert "not isolated" not in page  # graded in the sandbox, not with --no-sandbox
    executed = (course / "reports" / "tiny" / notebook_name("alice")).read_text(encoding="utf-8")
    assert "devices: [" in executed and "CPU" in executed
    assert "cuInit" not in executed and "cuda drivers" not in executed  # no CUDA noise for students
    # Outside the course, --course names it; without it the grader says what to do.
    assert "tiny" in _run(grader, "list", "--course", course, cwd=root, env=env).stdout
    lost = subprocess.run([grader, "list"], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert lost.returncode == 2 and lost.stderr.startswith("error: no course folder found"), lost.stderr

    # The doctor looks from inside the sandbox with this venv's interpreter.
    doctor = _run(grader, "doctor", cwd=course, env={**env, "COLUMNS": "200"}).stdout
    assert "kernel inside the sandbox" in doctor and "venv/bin/python" in doctor, doctor
    assert "tensorflow 2." in doctor and "/device:CPU:0" in doctor, doctor
