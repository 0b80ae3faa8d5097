"""The student bundle (`grader bundle`), the students' own check (`grader check`) and the
feedback zip (`grader feedback`).

The bundle tests open each assignment's zip and look for everything a student must not get; the
data comes from the dataset cache (~/.cache/grader, or $GRADER_DATA_HOME), where the course's
datasets are prepared. The check tests run kernels (slow)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import pytest

from grader.cli.main import main
from grader.course.bundle import public_conftest, write_bundle
from grader.course.release import BEGIN, END, find_leaks, solution_lines
from grader.data.prepare import Prepared, prepare
from grader.model.assignments import load_assignment
from grader.model.result import Result
from grader.reports.pages import notebook_name
from grader.store.gradebook import Gradebook
from tests.conftest import FILES, REPO, copy_source, require_real_datasets
from tests.examples import grader
from tests.test_assignments import ASSIGNMENTS

CACHE = Path()  # the module's own dataset cache, made by the `cache` fixture
_IMPORTED: set[str] = set()  # the datasets imported into it
SMALL = ["assignment01", "assignment02", "assignment03", "assignment06"]
BIG = ["assignment04", "assignment05"]  # 60 and 45 MB of student data to hash and zip


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset cache of the module's own, which each bundle fills with its real datasets
    (from ../shared/datasets) as it needs them: no test depends on another's cache."""
    global CACHE
    CACHE = tmp_path_factory.mktemp("data-home")
    _IMPORTED.clear()
    return CACHE


def _prepared(course: Path, name: str) -> Prepared | None:
    assignment = load_assignment(course, name)
    recipe = assignment.config.data.recipe
    if not recipe:
        return None
    needed = [d for d in (ASSIGNMENTS[name].datasets if name in ASSIGNMENTS else ()) if d not in _IMPORTED]
    if needed:
        run = grader("data", "import", require_real_datasets(), *needed, home=CACHE, cwd=CACHE)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        _IMPORTED.update(needed)
    return prepare(recipe, course=course, data_home=CACHE)


def _members(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _assert_nothing_hidden(course: Path, name: str, tmp_path: Path) -> dict[str, bytes]:
    """Bundle NAME and assert the zip holds exactly what a student needs, nothing hidden."""
    assignment = load_assignment(course, name)
    prepared = _prepared(course, name)
    archive = tmp_path / f"{name}.zip"
    write_bundle(assignment, prepared, archive)
    members = _members(archive)
    texts = {m: data.decode("utf-8", "replace") for m, data in members.items()}
    everything = "\n".join(texts.values())

    # exactly: the starter, the student data, the public checks, conftest.py, bundle.toml, README
    config = assignment.config
    expected = {f"{name}/{config.notebook}", f"{name}/bundle.toml", f"{name}/README.md"}
    expected |= {f"{name}/checks/public/{p.name}" for p in assignment.public_checks.glob("test_*.py")}
    if prepared is not None:
        for data_name in config.data.student_files:
            path = prepared.student_dir / data_name
            expected |= ({f"{name}/{data_name}/{p.relative_to(path)}" for p in path.rglob("*")
                          if p.is_file()} if path.is_dir() else {f"{name}/{data_name}"})
    assert set(members) - {f"{name}/checks/conftest.py"} == expected
    assert members[f"{name}/{config.notebook}"] == assignment.release_notebook.read_bytes()

    # no solution text: not in any file beside the starter, whose own check is `grader release`'s
    # (its instructions may quote a solution line within a sentence, as assignment06's do)
    source = nbformat.read(assignment.source_notebook, as_version=4)
    starter = nbformat.reads(texts[f"{name}/{config.notebook}"], as_version=4)
    hidden_sources = [p.read_text(encoding="utf-8") for p in assignment.hidden_checks.rglob("*.py")]
    assert find_leaks(starter, source, hidden_sources) == []
    others = "\n".join(t for m, t in texts.items() if m != f"{name}/{config.notebook}")
    leaked = [line for line in solution_lines(source) if line in others]
    assert not leaked, f"solution lines in the bundle: {leaked[:3]}"
    assert BEGIN not in everything and END not in everything
    # no hidden check: not its file, its names, its lines, its path
    for hidden in assignment.hidden_checks.glob("*.py"):
        source = hidden.read_text(encoding="utf-8")
        assert all(data.decode("utf-8", "replace") != source for data in members.values())
        for test in re.findall(r"def (test_\w+)", source):
            assert test not in everything, f"hidden check {test} named in the bundle"
    assert "checks/hidden" not in everything and not any("/hidden/" in m for m in members)
    # no hidden data: no file of the prepared hidden folder, by name or by content
    if prepared is not None:
        digests = {hashlib.sha256(data).hexdigest() for data in members.values()}
        basenames = {m.rsplit("/", 1)[-1] for m in members}
        for path in (p for p in prepared.hidden_dir.rglob("*") if p.is_file()):
            assert path.name not in basenames, f"hidden data {path.name} in the bundle"
            assert hashlib.sha256(path.read_bytes()).hexdigest() not in digests
    # no data recipe: not the file, not its name in the description
    info = tomllib.loads(texts[f"{name}/bundle.toml"])
    written = "\n".join(t for m, t in texts.items() if m.endswith((".toml", ".md", ".py")))
    assert "recipe" not in info and "recipe" not in written  # (IMDB's reviews speak of recipes)
    assert not any(m.endswith(f"/{config.data.recipe}.py") for m in members)
    if config.data.recipe:
        recipe = (course / "datasets" / "recipes" / f"{config.data.recipe}.py").read_text()
        assert recipe not in everything
    # the written answers' points are the staff's (the rubric), never a hidden check's
    assert info["hidden_points"] == config.check_points - info["public_points"]
    assert info["written_points"] == config.rubric_points
    assert info["public_points"] + info["hidden_points"] + info["written_points"] == config.points
    if config.rubric:
        assert (f"The staff grade your written answers: {config.rubric_points:g} of the points"
                in texts[f"{name}/README.md"])
    assert info["public_points"] > 0 and info["hidden_points"] > 0
    assert f"{info['hidden_points']:g} points come from checks that run only" in texts[f"{name}/README.md"]
    return members


@pytest.mark.parametrize("name", SMALL)
def test_the_bundle_holds_nothing_hidden(name: str, tmp_path: Path):
    _assert_nothing_hidden(REPO, name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", BIG)
def test_the_bundle_of_a_big_dataset_holds_nothing_hidden(name: str, tmp_path: Path):
    _assert_nothing_hidden(REPO, name, tmp_path)


def test_the_tiny_bundle_holds_its_public_checks_and_data(tmp_path: Path):
    members = _assert_nothing_hidden(FILES / "course", "tiny", tmp_path)
    info = tomllib.loads(members["tiny/bundle.toml"].decode())
    assert (info["public_points"], info["hidden_points"], info["seed"]) == (2.0, 4.0, 7)
    assert info["data"] == ["tiny.npz"] and info["limits"]["cell_seconds"] == 10


def test_only_what_the_public_checks_use_of_conftest_is_shipped():
    conftest = '''"""Trusted helpers."""
import numpy as np
import pytest

SECRET_THRESHOLD = 0.93


def _scale(x):
    return 2 * x


def _hidden_only(x):
    return x > SECRET_THRESHOLD


@pytest.fixture
def scaled():
    return _scale


@pytest.fixture
def by_name():
    return np.zeros(3)


@pytest.fixture(autouse=True)
def quiet():
    yield


@pytest.fixture
def threshold():
    return _hidden_only
'''
    public = ('def test_a(submission, scaled):\n    assert scaled(1) == 2\n\n'
              'def test_b(request):\n    request.getfixturevalue("by_name")\n')
    kept = public_conftest(conftest, [public])
    assert kept is not None
    compile(kept, "conftest.py", "exec")
    for name in ("def scaled", "def _scale", "def by_name", "def quiet", "import numpy as np"):
        assert name in kept
    for name in ("SECRET_THRESHOLD", "_hidden_only", "def threshold", "Trusted helpers"):
        assert name not in kept
    assert public_conftest(conftest.replace("autouse=True", ""), ["def test_c(submission):\n    pass\n"]) is None


def test_public_checks_whose_helpers_hold_a_solution_are_withheld(tmp_path: Path):
    # assignment01's public checks use two fixtures of its conftest: only those go out
    shipped = _members(_bundle(REPO, "assignment01", tmp_path))["assignment01/checks/conftest.py"]
    assert b"def keras_model" in shipped and b"def made_up_points" not in shipped
    members = _members(_bundle(REPO, "assignment05", tmp_path))
    conftest = members["assignment05/checks/conftest.py"].decode()
    checks = members["assignment05/checks/public/test_public.py"].decode()
    info = tomllib.loads(members["assignment05/bundle.toml"].decode())
    # test_lstm_step compares with lstm_numpy, the solution in NumPy: withheld, and its points
    # count with the hidden ones; the model check and its helpers go out
    assert info["withheld"] == ["test_lstm_step"]
    assert "def test_lstm_step" not in checks and "def test_model_is_a_trained_lstm" in checks
    assert "def lstm_numpy" not in conftest and "def layers_of" in conftest
    assert "def read_reviews" not in conftest  # used by the hidden checks only
    assert "`test_lstm_step`, left out" in members["assignment05/README.md"].decode()


def _bundle(course: Path, name: str, tmp_path: Path) -> Path:
    archive = tmp_path / f"{name}.zip"
    write_bundle(load_assignment(course, name), _prepared(course, name), archive)
    return archive


def test_bundle_cli_writes_the_zip_and_refuses_an_unknown_assignment(tmp_path: Path, capsys):
    out = tmp_path / "out" / "tiny.zip"
    env_home = os.environ.get("GRADER_DATA_HOME")
    os.environ["GRADER_DATA_HOME"] = str(CACHE)
    try:
        assert main(["bundle", "tiny", "--course", str(FILES / "course"), "-o", str(out)]) == 0
        assert main(["bundle", "nope", "--course", str(FILES / "course"), "-o", str(out)]) == 2
    finally:
        if env_home is None:
            os.environ.pop("GRADER_DATA_HOME")
        else:
            os.environ["GRADER_DATA_HOME"] = env_home
    assert "tiny/tiny.npz" in _members(out)
    assert "no assignment 'nope'" in capsys.readouterr().err


# --- grader check ---------------------------------------------------------------------------

def _unzipped(course: Path, name: str, tmp_path: Path) -> Path:
    """NAME's bundle unzipped in a temporary folder with no course above it; its folder."""
    archive = _bundle(course, name, tmp_path)
    target = tmp_path / "student"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(target)
    assert not any((p / "assignments").exists() for p in (target, *target.parents))
    return target / name


def _check(command: list[str], folder: Path, notebook: Path, env: dict[str, str],
           options: tuple[str, ...] | list[str] = ()) -> tuple[float, float, str]:
    """Run `grader check NOTEBOOK` in FOLDER; the public points and their maximum, the output."""
    done = subprocess.run([*command, "check", str(notebook), *options], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    found = re.search(r"public checks: ([\d.]+)/([\d.]+) points", output)
    assert found, output[-3000:]
    assert re.search(r"hidden checks: [\d.]+ more points", output), output[-3000:]
    return float(found[1]), float(found[2]), output


def _student_env(tmp_path: Path) -> dict[str, str]:
    """A student's environment: a home of their own, no course, no dataset cache of ours."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADER_")}
    return {**env, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}


@pytest.mark.slow
def test_check_from_the_unzipped_tiny_bundle_gives_the_reference_every_public_point(tmp_path: Path):
    folder = _unzipped(FILES / "course", "tiny", tmp_path)
    shutil.copy(FILES / "course" / "assignments" / "tiny" / "source" / "tiny.ipynb", folder / "ref.ipynb")
    command, env = [sys.executable, "-m", "grader"], _student_env(tmp_path)
    points, most, output = _check(command, folder, folder / "ref.ipynb", env)
    assert (points, most) == (2, 2), output
    assert "test_total" in output and "test_squares" in output and "hidden" in output
    assert "test_hidden" not in output
    points, _, output = _check(command, folder, folder / "tiny.ipynb", env)
    assert points == 0, output
    assert not list(folder.glob("*.sqlite")) and not (folder / "reports").exists()
    # staff, in the course: --assignment NAME bundles it into a temporary folder first
    course_env = {**env, "GRADER_DATA_HOME": str(CACHE)}
    points, most, output = _check(command, tmp_path, folder / "ref.ipynb", course_env,
                                  ["--assignment", "tiny", "--course", str(FILES / "course")])
    assert (points, most) == (2, 2), output


def test_check_outside_a_bundle_says_where_to_run_it(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(FILES / "course" / "assignments" / "tiny" / "source" / "tiny.ipynb", tmp_path)
    assert main(["check", "tiny.ipynb"]) == 2
    assert "no bundle.toml beside tiny.ipynb or here: run `grader check` inside the unzipped" in (
        capsys.readouterr().err)
    assert main(["check", "missing.ipynb"]) == 2
    assert "no notebook at missing.ipynb" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_fresh_venv_with_only_the_grader_checks_assignment01_from_its_bundle(tmp_path: Path):
    """The Done-when line: a fresh venv with only the grader installed and the unzipped bundle;
    `grader check` gives the reference every public point and the starter zero, with no course.

    "Only the grader": a new venv (not --system-site-packages, which would bring whatever the
    base Python has) gets a wheel built from this worktree, installed with --no-index --no-deps,
    so it is the grader's own files and nothing of the checkout. Its dependencies (TensorFlow,
    Keras, NumPy, Jupyter: 2 GB) are not installed a second time: a .pth file appends this test
    venv's site-packages to its path, as benchmarks/vs_nbgrader.py shares TensorFlow with its
    nbgrader venv. A plain path line (not site.addsitedir) so that the .pth files there, among
    them this worktree's editable install, are not processed: `import grader` must find the
    wheel. It runs from a temporary folder with HOME there, no $GRADER_* variables and no
    assignments/ folder above it (`grader list` must find no course)."""
    source = tmp_path / "source"
    copy_source(source)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(source)], check=True, timeout=300)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    ours = sysconfig_purelib()
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--no-index", "--no-deps", *map(str, wheels.glob("grader-*.whl"))],
                   check=True, timeout=300)
    (Path(site) / "zz_shared_dependencies.pth").write_text(ours + "\n")
    shutil.rmtree(source)

    folder = _unzipped(REPO, "assignment01", tmp_path)
    shutil.copy(REPO / "assignments" / "assignment01" / "source" / "assignment01.ipynb",
                folder / "reference.ipynb")
    env = _student_env(tmp_path)
    where = subprocess.run([str(python), "-c", "import grader; print(grader.__file__)"], cwd=folder,
                           env=env, check=True, capture_output=True, text=True).stdout.strip()
    assert where.startswith(site), where
    assert subprocess.run([str(python), "-m", "grader", "list"], cwd=folder, env=env,
                          capture_output=True).returncode == 2  # no course reachable

    command = [str(venv / "bin" / "grader")]
    points, most, output = _check(command, folder, folder / "reference.ipynb", env)
    assert "written answers: 1 more point, graded by the staff" in output, output[-3000:]  # the rubric's
    assert points == most == 4, output  # the public checks: means 1, minimums and maximums 0.5 each,
    # the linear model 1, the training history 1
    points, _, output = _check(command, folder, folder / "assignment01.ipynb", env)
    assert points == 0, output


def sysconfig_purelib() -> str:
    """This test venv's site-packages."""
    import sysconfig

    return sysconfig.get_path("purelib")


# --- grader feedback ------------------------------------------------------------------------

ROSTER = "student,name,email,lms_id\nzoe,Zoé Ångström,z@x,101\nbob,Bob_Smith,b@x,102\n"


def _graded(tmp_path: Path) -> tuple[Path, Path]:
    """A gradebook of the tiny assignment with zoe, bob and sam graded, eve a grader fault;
    a reports folder that also holds the staff summary and a pair page."""
    book = tmp_path / "gradebook.sqlite"
    gradebook = Gradebook(str(book))
    executed = nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]))
    for student, status in [("zoe", "graded"), ("bob", "graded"), ("sam", "graded"), ("eve", "error")]:
        gradebook.store(Result(student=student, assignment="tiny", notebook=f"{student}.ipynb",
                               sha256=hashlib.sha256(student.encode()).hexdigest(), checks_sha256="k",
                               status=status, reason="", score=4.0, max_score=6,
                               executed_notebook=executed, graded_at=datetime.now(UTC)))
    reports = tmp_path / "reports"
    (reports / "similar").mkdir(parents=True)
    (reports / "index.html").write_text("<p>staff summary</p>")
    (reports / "similar" / "pair-0001.html").write_text("<p>zoe and bob</p>")
    return book, reports


def test_feedback_zip_has_each_students_own_pages_in_moodle_folders(tmp_path: Path, capsys):
    book, reports = _graded(tmp_path)
    (tmp_path / "roster.csv").write_text(ROSTER, encoding="utf-8")
    out = tmp_path / "feedback.zip"
    assert main(["feedback", "tiny", "--course", str(FILES / "course"), "--zip", str(out),
                 "--gradebook", str(book), "--reports", str(reports),
                 "--roster", str(tmp_path / "roster.csv")]) == 0
    members = _members(out)
    zoe, bob = "Zoé Ångström_101_assignsubmission_file_", "Bob Smith_102_assignsubmission_file_"
    assert set(members) == {f"{zoe}/zoe.html", f"{zoe}/{notebook_name('zoe')}",
                            f"{bob}/bob.html", f"{bob}/{notebook_name('bob')}"}
    assert b"staff summary" not in b"".join(members.values())
    assert b"zoe" not in members[f"{bob}/bob.html"] and b"bob" not in members[f"{zoe}/zoe.html"]
    err = capsys.readouterr().err
    assert "sam left out: not on the roster" in err and "eve left out: not graded yet" in err


def test_feedback_zip_without_a_roster_has_a_folder_per_student(tmp_path: Path):
    book, reports = _graded(tmp_path)
    out = tmp_path / "feedback.zip"
    assert main(["feedback", "tiny", "--course", str(FILES / "course"), "--zip", str(out),
                 "--gradebook", str(book), "--reports", str(reports), ]) == 0
    members = _members(out)
    assert {m.split("/")[0] for m in members} == {"bob", "sam", "zoe"}
    assert not any("index.html" in m or "similar" in m or "pair-" in m for m in members)
    for student in ("bob", "sam", "zoe"):  # the pages were missing: written first
        assert (reports / f"{student}.html").is_file()
        assert {m for m in members if m.startswith(f"{student}/")} == {
            f"{student}/{student}.html", f"{student}/{notebook_name(student)}"}
