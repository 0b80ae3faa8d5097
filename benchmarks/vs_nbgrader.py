"""Throughput against nbgrader: the same submissions, the same computations, side by side.

    python benchmarks/vs_nbgrader.py                       # tiny, assignment01, assignment03; 6 copies, 2 rounds
    python benchmarks/vs_nbgrader.py --workloads tiny,assignment01 --copies 3 --rounds 1 --json out.json

Run it with the project's venv (the one `grader` is installed in). For each workload it grades N
copies of the reference submission with nbgrader (`autograde` then `generate_feedback`) and with
`grader run` (default workers, then `--workers 1`), interleaved over the rounds (the order turns
round each round, so both see the same machine; one submission with each tool first, not counted,
warms the page cache), checks that both gave the reference full points
(a benchmark that times a failure is worthless: it stops with an error otherwise), and prints
seconds per submission, the ratio (nbgrader's seconds per submission over the grader's: our
throughput relative to nbgrader's) and the grader's mean time per phase from its gradebook.

The workloads: `tiny`, the tests' numpy assignment (tests/files/course: fixed costs dominate),
`assignment01` (Keras, small) and `assignment03` (MNIST). The data comes from the grader's data
home (~/.cache/grader or $GRADER_DATA_HOME), as for `grader run`.

The nbgrader course is built from ours: the instructor notebook's `### BEGIN SOLUTION` / `### END
SOLUTION` regions are nbgrader's own markers, so each cell holding one becomes an nbgrader
solution cell (a written answer in markdown, which no check of ours reads, becomes nbgrader's
manually graded answer, worth 0 points); a locked first cell seeds Python, NumPy and Keras as the
grader does before a student's first cell; one locked autograded cell at the end (worth the
assignment's points) holds, between `### BEGIN HIDDEN TESTS` and `### END HIDDEN TESTS`, the
computations of every public and hidden check of the assignment (the same predictions on the same
hidden data, the same figures, with the helpers of `grader.checks`), and shows the points earned
(nbgrader's partial credit). Its hidden data is read by absolute path; the student files sit in
`source/` and reach every graded copy as nbgrader copies them. Each submission is the release
notebook with our reference submission's cells filled in. Kernels run with the environment the
grader gives its own (TF_CPP_MIN_LOG_LEVEL=2, PYTHONHASHSEED=0): TensorFlow's messages on stderr
would cost the cell its points in nbgrader.

nbgrader (pinned: 0.9.6, the PIN below) lives in a venv of its own under ~/.cache/grader-bench (or
--peer), made from this interpreter's base Python and reused while the pin and the lock are
unchanged. It is installed with requirements.lock as constraints, so the Jupyter packages it
shares with the grader (nbconvert, nbclient, jupyter_client, ipykernel, ...) are the very same
versions. TensorFlow, Keras and NumPy are not installed a second time (2 GB, minutes): a `.pth`
file, written after nbgrader's install and processed last, appends this venv's site-packages to
the peer's path, so both kernels import the same TensorFlow, Keras and NumPy while nbgrader's own
dependencies, found first, win.

Not a test: timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import compileall
import copy
import hashlib
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
import venv
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from grader.grading.execute import seed_code
from grader.grading.kernelenv import may_use_keras, warm_modules

REPO = Path(__file__).resolve().parents[1]
PIN = "0.9.6"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
PHASES = ("queue_s", "kernel_start_s", "warmup_s", "execution_s", "checks_s", "store_s", "report_s")
WORKLOADS = {  # name -> (course folder, assignment)
    "tiny": (REPO / "tests" / "files" / "course", "tiny"),
    "assignment01": (REPO, "assignment01"),
    "assignment03": (REPO, "assignment03"),
}
HIDDEN_MARK = "HIDDEN_DIR"  # replaced by the hidden data folder's path in the hidden-tests cell

# Runs each check (points, function of credit) as pytest would; the cell shows the points earned.
RUNNER_HEAD = """\
import warnings
warnings.simplefilter("ignore")
from pathlib import Path
import numpy as np
from grader.checks import Credit, Feedback
_hidden = Path(HIDDEN_DIR)
_figures = []
_feedback = Feedback(_figures)
_checks = []

def _check(points):
    def mark(test):
        _checks.append((points, test))
        return test
    return mark
"""
RUNNER_TAIL = """
_earned = 0.0
for _points, _test in _checks:
    _credit = Credit()
    try:
        _test(_credit)
    except Exception:
        continue
    _earned += _points * (1.0 if _credit.fraction is None else _credit.fraction)
_earned
"""

HIDDEN_TINY = """
@_check(1)
def _total(credit):
    with np.load("tiny.npz") as data:
        expected = float(data["x"].sum())
    assert float(total) == expected

@_check(1)
def _squares(credit):
    assert np.array_equal(np.asarray(squares), np.arange(6) ** 2)

@_check(2)
def _double(credit):
    x = np.random.default_rng(1).normal(size=5)
    assert np.allclose(np.asarray(double(x), dtype=float), 2 * x)

@_check(2)
def _guess(credit):
    with np.load(_hidden / "tiny_hidden.npz") as data:
        target = float(data["target"])
    credit.tiers(target - abs(target - float(guess)), [(target - 1, 1.0), (target - 10, 0.5)], "closeness")
"""

HIDDEN_ASSIGNMENT01 = """
import matplotlib.pyplot as plt
from grader.checks import affine_error, linear_problem, plot_curves, shape_problem, unevaluable
_MAXIMUM = np.array([30.0, 30.0, 40.0])

def _statistic(name, compute):
    with np.load("grading.npz") as data:
        expected = compute(data["x"])
    found = np.asarray(globals()[name], dtype=float).ravel()
    assert found.shape == (3,)
    assert np.allclose(found, expected, atol=1e-3)

def _grades(m, x):
    return np.clip(np.round(m.predict(x, verbose=0)), 0, 5).ravel()

@_check(1)
def _means(credit):
    _statistic("means", lambda x: x.mean(axis=0))

@_check(1)
def _minimums(credit):
    _statistic("minimums", lambda x: x.min(axis=0))

@_check(1)
def _maximums(credit):
    _statistic("maximums", lambda x: x.max(axis=0))

@_check(1)
def _model_is_linear(credit):
    assert not linear_problem(model)
    assert not shape_problem(model, "model", inputs=3, outputs=1)

@_check(1)
def _training_history(credit):
    loss = history.history.get("loss", [])
    assert len(loss) >= 2
    fig, ax = plt.subplots(figsize=(5, 3))
    plot_curves(ax, history.history, "loss", ylabel="loss", log=True)
    _feedback.figure(fig, "Your training curve")
    assert loss[-1] < loss[0]

@_check(1)
def _accuracy_reported(credit):
    with np.load("grading.npz") as data:
        x, y = data["x"], data["y"].ravel()
    assert abs(float(accuracy) - float(np.mean(_grades(model, x) == y))) <= 0.02

@_check(1)
def _predict_grades(credit):
    points = np.random.default_rng(7).uniform(0, _MAXIMUM, size=(50, 3))
    found = np.asarray(predict_grades(points), dtype=float).ravel()
    assert found.shape == (50,) and np.all(found == np.round(found))
    assert found.min() >= 0 and found.max() <= 5
    assert float(np.mean(found == _grades(model, points))) >= 0.95

@_check(3)
def _hidden_accuracy(credit):
    assert not unevaluable(model)
    assert not linear_problem(model)
    rng = np.random.default_rng(0)
    u, v = rng.uniform(0, 40, size=(2, 64, 3))
    assert affine_error(model, u, v, rng) <= 1e-2
    with np.load(_hidden / "grading_hidden.npz") as data:
        x, y = data["x"], data["y"].ravel()
    raw = model.predict(x, verbose=0).ravel()
    assert np.all(np.isfinite(raw))
    hidden_accuracy = float(np.mean(np.clip(np.round(raw), 0, 5) == y))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    jitter = np.random.default_rng(1).uniform(-0.15, 0.15, size=y.shape)
    ax.scatter(y + jitter, raw, s=4, alpha=0.4)
    ax.plot([0, 5], [0, 5], color="black", linewidth=1)
    ax.set_xlabel("true grade")
    ax.set_ylabel("predicted grade")
    _feedback.figure(fig, f"Predicted against true grades of {len(y)} unseen students")
    credit.tiers(hidden_accuracy, [(0.75, 1.0), (0.65, 0.6), (0.50, 0.3)], "accuracy on unseen students")
"""

HIDDEN_ASSIGNMENT03 = """
import matplotlib.pyplot as plt
from grader.checks import (confusion_figure, history_problem, layer_problem, mistakes_figure, plot_curves,
                           shape_problem, unevaluable, untrained)
_DIGITS = [str(d) for d in range(10)]

def _vectors(images):
    return images.reshape(len(images), 28 * 28).astype("float32") / 255.0

with np.load("mnist_train.npz") as _data:
    _validation = _data["x"][50_000:], _data["y"][50_000:]

def _regression_guesses():
    assert not shape_problem(regression, "regression", 784, 1)
    images, labels = _validation
    return labels, regression.predict(_vectors(images), batch_size=1000, verbose=0).ravel()

@_check(2)
def _preprocess(credit):
    images = np.random.default_rng(3).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    for batch in (images, images[:1]):
        found = np.asarray(preprocess(batch))
        n = len(batch)
        assert found.shape == (n, 784) and found.dtype.kind == "f" and found.max() <= 1.0 + 1e-6
        assert np.allclose(found, batch.reshape(n, 784) / 255.0, atol=1e-6)

@_check(1)
def _regression(credit):
    labels, guesses = _regression_guesses()
    assert not layer_problem(regression, units=1, activations=("linear",))
    assert not untrained(regression)
    assert np.all(np.isfinite(guesses))
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.boxplot([guesses[labels == d] for d in range(10)], positions=range(10), widths=0.6, showfliers=False)
    ax.plot([-0.5, 9.5], [-0.5, 9.5], color="tab:red", linewidth=1, label="prediction = label")
    ax.set_xlabel("true label")
    ax.set_ylabel("regression's prediction")
    ax.legend(loc="upper left")
    _feedback.figure(fig, "What your regression predicts for each digit of the 10,000 validation digits")

@_check(1)
def _regression_accuracy(credit):
    labels, guesses = _regression_guesses()
    assert abs(float(regression_accuracy) - float(np.mean(np.round(guesses) == labels))) <= 0.01

@_check(1)
def _classifier_is_linear(credit):
    assert not layer_problem(model, units=10, activations=("softmax", "linear"))
    assert not shape_problem(model, "model", 784, 10)
    assert not untrained(model)

@_check(1)
def _training_curves(credit):
    histories = {name: globals()[name].history for name in ("regression_history", "history")
                 if name in globals()}
    panels = []
    if "regression_history" in histories:
        panels.append((histories["regression_history"], "loss", "regression on the labels: loss (MSE)"))
    if "history" in histories:
        metric = next((k for k in ("accuracy", "acc", "sparse_categorical_accuracy")
                       if k in histories["history"]), "accuracy")
        panels.append((histories["history"], "loss", "classifier: loss (cross-entropy)"))
        panels.append((histories["history"], metric, "classifier: accuracy"))
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(3.7 * len(panels), 3.0), squeeze=False)
        for ax, (curves, metric, title) in zip(axes[0], panels):
            plot_curves(ax, curves, metric, title)
        if "history" in histories:
            axes[0][-1].axhline(float(regression_accuracy), color="gray", linestyle="--",
                                label="regression_accuracy")
            axes[0][-1].legend(fontsize=8)
        fig.tight_layout()
        _feedback.figure(fig, "Your training and validation curves")
    names = ("regression_history", "history")
    problems = [p for p in (history_problem(histories, name) for name in names) if p]
    if problems:
        credit.award(1 - len(problems) / len(names), "; ".join(problems))

@_check(4)
def _hidden_accuracy(credit):
    assert not unevaluable(model)
    assert not layer_problem(model, units=10, activations=("softmax", "linear"))
    assert not shape_problem(model, "model", 784, 10)
    with np.load(_hidden / "mnist_test.npz") as data:
        images, labels = data["x"], data["y"]
    scores = model.predict(_vectors(images), batch_size=1000, verbose=0)
    assert np.all(np.isfinite(scores))
    predicted = np.argmax(scores, axis=1)
    test_accuracy = float(np.mean(predicted == labels))
    _feedback.figure(confusion_figure(labels, predicted, _DIGITS, noun="digit"), "How your classifier read")
    if test_accuracy < 1:
        _feedback.figure(mistakes_figure(images, labels, predicted, scores.max(axis=1), _DIGITS),
                         "The unseen digits it got wrong with the highest score")
    credit.tiers(test_accuracy, [(0.92, 1.0), (0.90, 0.75), (0.85, 0.5), (0.70, 0.25)], "accuracy")
"""

HIDDEN_CHECKS = {"tiny": HIDDEN_TINY, "assignment01": HIDDEN_ASSIGNMENT01,
                 "assignment03": HIDDEN_ASSIGNMENT03}


def hidden_cell_source(workload: str, hidden: Path) -> str:
    """The hidden-tests cell of WORKLOAD: every check's computation, HIDDEN holding the hidden data."""
    body = (RUNNER_HEAD + HIDDEN_CHECKS[workload] + RUNNER_TAIL).replace(HIDDEN_MARK, repr(str(hidden)))
    return f"### BEGIN HIDDEN TESTS\n{body.strip()}\n### END HIDDEN TESTS"


def _nbgrader_meta(grade_id: str, *, solution: bool = False, grade: bool = False, locked: bool = False,
                   points: float = 0) -> dict[str, object]:
    """nbgrader's cell metadata (schema 3)."""
    meta: dict[str, object] = {"grade": grade, "solution": solution, "locked": locked, "grade_id": grade_id,
                               "schema_version": 3}
    if grade:
        meta["points"] = points
    return meta


def to_nbgrader(source_nb: NotebookNode, hidden_tests: str, *, points: float, seed: int) -> NotebookNode:
    """Our instructor notebook as an nbgrader source notebook: solution cells marked (grade_id cellK
    for our cell K; written answers as nbgrader's manually graded answers of 0 points), a locked
    seeding cell first and one locked autograded hidden-tests cell last."""
    nb = nbformat.from_dict(copy.deepcopy(source_nb))
    for k, cell in enumerate(nb.cells):
        cell.metadata.pop("nbgrader", None)
        if BEGIN in cell.source:  # a written answer is graded by hand in nbgrader: worth 0 here, as ours
            written = cell.cell_type == "markdown"
            cell.metadata["nbgrader"] = _nbgrader_meta(f"cell{k}", solution=True, grade=written, points=0)
    # the grader's own seeding before the first cell, in a locked cell
    seed_cell = nbformat.v4.new_code_cell(seed_code(seed, keras=may_use_keras(source_nb)))
    seed_cell.metadata["nbgrader"] = _nbgrader_meta("seed", locked=True)
    tests = nbformat.v4.new_code_cell(hidden_tests)
    tests.metadata["nbgrader"] = _nbgrader_meta("hidden_tests", grade=True, locked=True, points=points)
    nb.cells = [seed_cell, *nb.cells, tests]
    return nb


def strip_markers(source_nb: NotebookNode) -> NotebookNode:
    """The instructor notebook as a student who solved it would hand it in: markers gone."""
    nb = nbformat.from_dict(copy.deepcopy(source_nb))
    for cell in nb.cells:
        lines = cell.source.split("\n")
        cell.source = "\n".join(line for line in lines if line.strip() not in (BEGIN, END))
        cell.metadata.pop("nbgrader", None)
    return nb


def fill_release(release_nb: NotebookNode, reference: NotebookNode) -> NotebookNode:
    """nbgrader's release notebook with each solution cell cellK holding our reference's cell K."""
    nb = nbformat.from_dict(copy.deepcopy(release_nb))
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        if grade_id.startswith("cell") and cell.metadata["nbgrader"].get("solution"):
            cell.source = reference.cells[int(grade_id[4:])].source
    return nb


# The peer: nbgrader in a venv of its own.

def _lock_digest() -> str:
    return hashlib.sha256((REPO / "requirements.lock").read_bytes()).hexdigest()[:16]


def _peer_bin(peer: Path) -> Path:
    return peer / "bin"


def ensure_peer(peer: Path) -> Path:
    """The peer venv's python, with nbgrader==PIN installed (once per pin and lock)."""
    stamp = peer / "grader-bench.json"
    wanted = {"nbgrader": PIN, "lock": _lock_digest(), "python": sys.version.split()[0]}
    python = _peer_bin(peer) / "python"
    if not (stamp.is_file() and json.loads(stamp.read_text()) == wanted and python.exists()):
        if peer.is_dir() and any(peer.iterdir()) and not stamp.is_file():
            raise SystemExit(f"{peer} holds files but no venv this benchmark made: pass another --peer")
        shutil.rmtree(peer, ignore_errors=True)
        print(f"installing nbgrader=={PIN} into {peer} (once)…", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(peer)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                               f"nbgrader=={PIN}", "-c", str(REPO / "requirements.lock")],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"could not install nbgrader=={PIN} into {peer}:\n{done.stderr[-3000:]}")
        stamp.write_text(json.dumps(wanted))
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    ours = sysconfig.get_path("purelib")  # appended last: nbgrader's own dependencies win
    (Path(site) / "zz_grader_bench.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return python


# What the grader's kernels have in their environment, and so nbgrader's (see the docstring).
KERNEL_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONHASHSEED": "0",
              "MPLBACKEND": "module://matplotlib_inline.backend_inline"}


def _peer_env(peer_python: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH=f"{peer_python.parent}{os.pathsep}{env.get('PATH', '')}", **KERNEL_ENV)
    return env


def _nbgrader(peer_python: Path, course: Path, *args: str) -> None:
    """Run `nbgrader ARGS` in COURSE; raise with its output when it fails."""
    done = subprocess.run([str(peer_python), "-m", "nbgrader", *args], cwd=course, env=_peer_env(peer_python),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"nbgrader {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-4000:]}")


# One workload: the course, the prepared data, the reference.

def _workload(name: str) -> dict[str, object]:
    """What a workload needs: assignment, course, its config, prepared data and reference notebook."""
    from grader.data.prepare import prepare
    from grader.model.paths import data_home

    course, assignment = WORKLOADS[name]
    folder = course / "assignments" / assignment
    config = tomllib.loads((folder / "assignment.toml").read_text(encoding="utf-8"))
    prepared = prepare(config["data"]["recipe"], course=course, data_home=data_home())
    source = nbformat.read(folder / "source" / config["notebook"], as_version=4)
    example = folder / "submissions" / "reference.ipynb"
    reference = nbformat.read(example, as_version=4) if example.is_file() else strip_markers(source)
    return {"name": name, "course": course, "assignment": assignment, "config": config,
            "student_dir": prepared.student_dir, "hidden_dir": prepared.hidden_dir,
            "source": source, "reference": reference}


def _nbgrader_course(work: dict, root: Path, copies: int, peer_python: Path) -> Path:
    """An nbgrader course for WORK with COPIES submissions of the reference, assignment generated."""
    config, assignment = work["config"], work["assignment"]
    course = root / "nbgrader-course"
    source_dir = course / "source" / assignment
    source_dir.mkdir(parents=True)
    (course / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.CourseDirectory.root = {str(course)!r}\nc.CourseDirectory.course_id = 'bench'\n"
        f"c.ExecutePreprocessor.timeout = {config['limits']['cell_seconds']}\n")
    for name in config["data"]["student_files"]:
        shutil.copy(work["student_dir"] / name, source_dir / name)
    tests = hidden_cell_source(work["name"], work["hidden_dir"])
    nbformat.write(to_nbgrader(work["source"], tests, points=config["points"], seed=config["seed"]),
                   source_dir / config["notebook"])
    _nbgrader(peer_python, course, "generate_assignment", assignment, "--force")
    release = nbformat.read(course / "release" / assignment / config["notebook"], as_version=4)
    filled = fill_release(release, work["reference"])
    for k in range(copies):
        folder = course / "submitted" / f"student{k:03d}" / assignment
        folder.mkdir(parents=True)
        nbformat.write(filled, folder / config["notebook"])
    return course


def _nbgrader_scores(peer_python: Path, course: Path, assignment: str) -> list[tuple[str, float, float]]:
    """(student, score, max score) of every autograded submission, from nbgrader's gradebook."""
    script = ("import json, sys\nfrom nbgrader.api import Gradebook\n"
              "with Gradebook('sqlite:///' + sys.argv[1]) as gb:\n"
              "    print(json.dumps([(s.student_id, s.score, s.max_score)"
              " for s in gb.assignment_submissions(sys.argv[2])]))\n")
    done = subprocess.run([str(peer_python), "-c", script, str(course / "gradebook.db"), assignment],
                          check=True, capture_output=True, text=True, env=_peer_env(peer_python))
    return [tuple(row) for row in json.loads(done.stdout)]


def _hidden_tests_results(course: Path, assignment: str, notebook: str) -> list[float | None]:
    """The points each autograded notebook's hidden-tests cell showed (None where it showed none)."""
    shown: list[float | None] = []
    for path in sorted((course / "autograded").glob(f"*/{assignment}/{notebook}")):
        cell = nbformat.read(path, as_version=4).cells[-1]
        results = [o for o in cell.get("outputs", []) if o.output_type == "execute_result"]
        shown.append(float(results[0].data["text/plain"]) if results else None)
    return shown


def run_nbgrader(work: dict, copies: int, peer_python: Path) -> float:
    """Seconds per submission of `nbgrader autograde` + `generate_feedback`; checks full points."""
    assignment, points = work["assignment"], float(work["config"]["points"])
    with tempfile.TemporaryDirectory(prefix="bench-nbgrader-") as tmp:
        course = _nbgrader_course(work, Path(tmp), copies, peer_python)
        began = time.monotonic()
        _nbgrader(peer_python, course, "autograde", assignment)
        _nbgrader(peer_python, course, "generate_feedback", assignment)
        seconds = time.monotonic() - began
        scores = _nbgrader_scores(peer_python, course, assignment)
        wrong = [s for s in scores if s[1] != points or s[2] != points]
        if len(scores) != copies or wrong:
            raise SystemExit(f"nbgrader did not give {copies} copies of {assignment}'s reference full points"
                             f" ({points:g}): {scores}")
        pages = list((course / "feedback").glob(f"*/{assignment}/*.html"))
        if len(pages) != copies:
            raise SystemExit(f"nbgrader wrote {len(pages)} feedback pages for {copies} submissions")
        shown = _hidden_tests_results(course, assignment, work["config"]["notebook"])
        if shown != [points] * copies:  # a cell that shows nothing would get full points unchecked
            raise SystemExit(f"nbgrader's hidden-tests cells showed {shown}, not {points:g} each")
    return seconds / copies


def _grader_runs(gradebook: Path) -> list[dict[str, float]]:
    """Every grading run in GRADEBOOK: status, score, max score and whichever phase columns exist."""
    with sqlite3.connect(gradebook) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(grading_runs)")]
        wanted = ["status", "score", "max_score", *(c for c in PHASES if c in columns)]
        rows = db.execute(f"SELECT {', '.join(wanted)} FROM grading_runs").fetchall()
    return [dict(zip(wanted, row)) for row in rows]


def run_grader(work: dict, copies: int,
               workers: int | None) -> tuple[float, dict[str, float], int, float]:
    """Seconds per submission of `grader run` (WORKERS, None for the default), its mean phases,
    the kernels it ran at once and the batch's start (the seconds before its first notebook ran,
    from its closing line); checks that every copy got full points."""
    assignment, config = work["assignment"], work["config"]
    points = float(config["points"])
    with tempfile.TemporaryDirectory(prefix="bench-grader-") as tmp:
        subs = Path(tmp) / "submissions"
        subs.mkdir()
        for k in range(copies):
            nbformat.write(work["reference"], subs / f"student{k:03d}.ipynb")
        gradebook = Path(tmp) / "gradebook.sqlite"
        command = [sys.executable, "-m", "grader", "run", assignment, "--course", str(work["course"]),
                   "--submissions", str(subs), "--gradebook", str(gradebook),
                   "--reports", str(Path(tmp) / "reports")]
        if workers is not None:
            command += ["--workers", str(workers)]
        began = time.monotonic()
        done = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
        seconds = time.monotonic() - began
        if done.returncode != 0:
            raise SystemExit(f"grader run {assignment} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                             f"{done.stderr[-3000:]}")
        runs = _grader_runs(gradebook)
        wrong = [r for r in runs if r["status"] != "graded" or r["score"] != points]
        if len(runs) != copies or wrong:
            raise SystemExit(f"the grader did not give {copies} copies of {assignment}'s reference full points"
                             f" ({points:g}): {wrong or len(runs)}")
    phases = {p: statistics.mean(r[p] for r in runs) for p in PHASES if p in runs[0]}
    slots = re.search(r"(\d+) kernel\(s\) at once", done.stdout)
    start = re.search(r"first\s+notebook\s+ran:\s+([\d.]+)\s+s", done.stdout)
    return (seconds / copies, phases, min(copies, int(slots.group(1))) if slots else 1,
            float(start.group(1)) if start else 0.0)


# The benchmark.

TOOLS = ("nbgrader", "grader", "grader_1")
LABELS = {"nbgrader": "nbgrader", "grader": "grader (default workers)", "grader_1": "grader (1 worker)"}


def bench_workload(name: str, copies: int, rounds: int, peer_python: Path,
                   warmup: bool = True) -> dict[str, object]:
    """Interleaved rounds of the three tools on workload NAME; prints a line per round and a summary.

    WARMUP: first one submission with each tool, not counted, so that the rounds find the
    libraries' files in the page cache whichever tool comes first (this machine gives an idle
    process's pages back to its host, and the first run after a pause paid for reading them)."""
    work = _workload(name)
    if warmup:
        began = time.monotonic()
        run_nbgrader(work, 1, peer_python)
        run_grader(work, 1, 1)
        print(f"  {name} warm-up, one submission with each tool (not counted):"
              f" {time.monotonic() - began:.1f} s", flush=True)
    seconds: dict[str, list[float]] = {t: [] for t in TOOLS}
    phases: dict[str, list[dict[str, float]]] = {"grader": [], "grader_1": []}
    starts: dict[str, list[float]] = {"grader": [], "grader_1": []}
    # the notebook's libraries' import in a fresh interpreter, timed right before and right
    # after each grader run (this machine's speed drifts over minutes: an import timed apart would
    # not fit the run; one timing alone varies by a tenth of a second per submission)
    imports: dict[str, list[float]] = {"grader": [], "grader_1": []}
    before: dict[str, list[float]] = {"grader": [], "grader_1": []}
    modules: list[str] = []
    workers = 1
    for r in range(rounds):
        order = TOOLS if r % 2 == 0 else TOOLS[::-1]
        for tool in order:
            if tool == "nbgrader":
                seconds[tool].append(run_nbgrader(work, copies, peer_python))
            else:
                modules, imported_s = library_import_s(work, tries=1)
                per_sub, means, slots, start_s = run_grader(work, copies, None if tool == "grader" else 1)
                before[tool].append(imported_s)
                imports[tool].append((imported_s + library_import_s(work, tries=1)[1]) / 2)
                starts[tool].append(start_s)
                workers = slots if tool == "grader" else workers
                seconds[tool].append(per_sub)
                phases[tool].append(means)
        print(f"  {name} round {r + 1}: " + ", ".join(f"{LABELS[t]} {seconds[t][-1]:.2f} s/sub" for t in TOOLS),
              flush=True)
    mean = {t: statistics.mean(v) for t, v in seconds.items()}
    ratio = {t: mean["nbgrader"] / mean[t] for t in ("grader", "grader_1")}
    phase_means = {t: {p: statistics.mean(m[p] for m in ms) for p in ms[0]} for t, ms in phases.items()}
    print(f"{name}: nbgrader {mean['nbgrader']:.2f} s/sub, grader (default workers) {mean['grader']:.2f} s/sub,"
          f" grader (1 worker) {mean['grader_1']:.2f} s/sub; throughput vs nbgrader: default"
          f" {ratio['grader']:.2f}x, 1 worker {ratio['grader_1']:.2f}x")
    for tool in ("grader", "grader_1"):
        text = ", ".join(f"{p.removesuffix('_s')} {v:.2f}" for p, v in phase_means[tool].items())
        print(f"  {LABELS[tool]}, mean s per submission and phase: {text}")
    # The grader's own overhead: what a submission costs beyond its notebook's execution and its
    # checks (which include the checker's own start and its talk with the kernel). With one worker,
    # wall time per submission; with the default workers, the slots' time (wall x workers).
    overhead = {t: mean[t] * (workers if t == "grader" else 1)
                - phase_means[t]["execution_s"] - phase_means[t]["checks_s"] for t in ("grader", "grader_1")}
    print(f"  the grader's own overhead per submission (beyond execution and checks): 1 worker"
          f" {overhead['grader_1']:.2f} s (wall); default workers {overhead['grader']:.2f} s"
          f" ({workers} slots' time)")

    def less_once(paid: dict[str, list[float]]) -> tuple[dict[str, float], dict[str, float]]:
        """The mean seconds each tool's batches PAID once, and its overhead less that, per submission."""
        once = {t: statistics.mean(v) for t, v in paid.items()}
        return once, {t: overhead[t] - once[t] * (workers if t == "grader" else 1) / copies for t in once}

    # Part of it is the notebook's own `import keras`: the zygote imports the notebook's
    # libraries once per batch, before the first kernel (its slots wait for it), where each of
    # nbgrader's kernels imports them as the notebook's first cell.
    imported, less = less_once(imports)
    imported_before, less_before = less_once(before)
    print(f"  the notebook's libraries ({', '.join(modules)}) take {imported['grader_1']:.2f} s"
          f" (around the 1-worker runs) and {imported['grader']:.2f} s (around the others) to import"
          f" in a fresh interpreter (each nbgrader kernel pays it; the grader's zygote once per"
          f" batch); the overhead less that one import: 1 worker {less['grader_1']:.2f} s, default"
          f" workers {less['grader']:.2f} s (with the import timed only before each run:"
          f" {less_before['grader_1']:.2f} s, {less_before['grader']:.2f} s)")
    # Most of the overhead is the batch's start, paid once per batch (the zygote's imports,
    # the preflight, the first kernel's start): what is left is paid by every submission.
    start, beyond = less_once(starts)
    print(f"  the batch's start (until its first notebook ran, once per batch): 1 worker"
          f" {start['grader_1']:.2f} s, default workers {start['grader']:.2f} s; the overhead beyond it,"
          f" per submission: 1 worker {beyond['grader_1']:.2f} s, default workers {beyond['grader']:.2f} s")
    return {"seconds_per_submission": seconds, "mean": mean, "ratio": ratio, "phases": phase_means,
            "overhead_s": overhead, "default_workers": workers, "library_import_s": imported,
            "overhead_less_library_import_s": less, "library_import_before_s": imported_before,
            "overhead_less_library_import_before_s": less_before, "batch_start_s": start,
            "overhead_beyond_batch_start_s": beyond}


def library_import_s(work: dict, tries: int = 2) -> tuple[list[str], float]:
    """The heavy libraries WORK's notebooks import (those the zygote imports for them: the
    course's notebook's and the submission's) and the mean seconds a fresh interpreter takes to
    import them, with the kernels' environment variables."""
    modules = warm_modules(work["source"], work["reference"])
    code = ("import gc, time\ngc.disable()\nbegan = time.perf_counter()\n"
            + "".join(f"import {m}\n" for m in modules) + "print(time.perf_counter() - began)\n")
    env = {**os.environ, **KERNEL_ENV}
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  check=True, env=env).stdout.split()[-1]) for _ in range(tries)]
    return modules, statistics.mean(times)


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default="tiny,assignment01,assignment03",
                        help=f"comma-separated, of {', '.join(WORKLOADS)}")
    parser.add_argument("--copies", type=int, default=6, help="submissions per batch (default 6)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="no uncounted first submission with each tool before the rounds")
    parser.add_argument("--json", help="also write the figures to this file")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "grader-bench"
    parser.add_argument("--peer", default=str(cache / f"nbgrader-{PIN}"), help="the nbgrader venv")
    args = parser.parse_args(argv)
    unknown = [w for w in args.workloads.split(",") if w not in WORKLOADS]
    if unknown or args.copies < 1 or args.rounds < 1:
        parser.error(f"unknown workload {unknown[0]!r}" if unknown else "--copies and --rounds must be 1 or more")
    return args


def compile_grader(package: Path | None = None) -> Path:
    """Write the bytecode of the grader's modules (PACKAGE: the one this interpreter imports), as
    `pip install` does for what it installs. An editable install has none until a module is first
    imported, and none at all where PYTHONDONTWRITEBYTECODE is set (as on the development machine):
    then every process of both tools (the grader's own, and nbgrader's kernels, which import
    grader.checks) compiles them from source, a cost a real installation does not have."""
    if package is None:
        import grader

        package = Path(grader.__file__).parent
    compileall.compile_dir(package, quiet=1)
    return package


def main(argv: list[str] | None = None) -> int:
    """Install the peer, run every workload, print (and optionally write) the figures."""
    args = _args(argv)
    peer_python = ensure_peer(Path(args.peer))
    print(f"compiled the bytecode of {compile_grader()}, as an installation would", flush=True)
    figures = {"nbgrader": PIN, "copies": args.copies, "rounds": args.rounds, "cpus": os.cpu_count(),
               "workloads": {}}
    for name in args.workloads.split(","):
        figures["workloads"][name] = bench_workload(name, args.copies, args.rounds, peer_python,
                                                    warmup=args.warmup)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
