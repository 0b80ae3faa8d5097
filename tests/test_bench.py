"""The nbgrader course that benchmarks/vs_nbgrader.py builds from ours (no install, no kernel)."""

import importlib.util
from pathlib import Path

import nbformat
import pytest

from grader.data.prepare import load_recipe
from tests.conftest import FILES, REPO, TINY_SOLUTION

SPEC = importlib.util.spec_from_file_location("vs_nbgrader", REPO / "benchmarks" / "vs_nbgrader.py")
assert SPEC is not None and SPEC.loader is not None
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)

TINY_SOURCE = FILES / "course" / "assignments" / "tiny" / "source" / "tiny.ipynb"


def tiny_nbgrader(hidden: Path) -> nbformat.NotebookNode:
    source = nbformat.read(TINY_SOURCE, as_version=4)
    return bench.to_nbgrader(source, bench.hidden_cell_source("tiny", hidden), points=6, seed=7)


def test_solution_cells_seed_and_hidden_tests_carry_nbgrader_metadata(tmp_path):
    source = nbformat.read(TINY_SOURCE, as_version=4)
    nb = tiny_nbgrader(tmp_path)
    assert len(nb.cells) == len(source.cells) + 2
    meta = [c.metadata.get("nbgrader") for c in nb.cells]
    assert meta[0]["grade_id"] == "seed" and meta[0]["locked"] and not meta[0]["grade"]
    assert "keras.utils.set_random_seed(7)" in nb.cells[0].source
    solutions = [m["grade_id"] for m in meta[1:-1] if m]
    assert solutions == ["cell2", "cell3", "cell4"]  # the three cells of tiny.ipynb with markers
    assert all(m["solution"] and not m["grade"] and not m["locked"] for m in meta[1:-1] if m)
    tests = nb.cells[-1]
    assert tests.metadata["nbgrader"] == {"grade": True, "solution": False, "locked": True, "points": 6,
                                          "grade_id": "hidden_tests", "schema_version": 3}
    assert tests.source.startswith("### BEGIN HIDDEN TESTS\n")
    assert tests.source.endswith("\n### END HIDDEN TESTS")
    assert repr(str(tmp_path)) in tests.source and bench.HIDDEN_MARK not in tests.source
    nbformat.validate(nb)


def test_release_is_filled_with_the_reference_by_cell():
    source = nbformat.read(TINY_SOURCE, as_version=4)
    reference = bench.strip_markers(source)
    assert [c.source for c in reference.cells[1:]] == list(TINY_SOLUTION)
    release = tiny_nbgrader(Path("/nowhere"))
    for cell in release.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = "raise NotImplementedError()"
    filled = bench.fill_release(release, reference)
    assert [c.source for c in filled.cells[2:-1]] == list(TINY_SOLUTION)
    assert filled.cells[-1].source == release.cells[-1].source


def _earned(cells: list[str], folder: Path, monkeypatch: pytest.MonkeyPatch) -> float:
    """Run the cells and the hidden-tests cell in one namespace, in FOLDER; the points it shows."""
    monkeypatch.chdir(folder)
    namespace: dict[str, object] = {}
    for source in cells:
        exec(compile(source, "<cell>", "exec"), namespace)
    earned = namespace["_earned"]
    assert isinstance(earned, float)
    return earned


@pytest.mark.parametrize(("guess", "points"), [("99.5", 6.0), ("95.0", 5.0), ("0.0", 4.0)])
def test_hidden_tests_cell_gives_the_checks_points(tmp_path, monkeypatch, guess, points):
    student, hidden = tmp_path / "student", tmp_path / "hidden"
    student.mkdir()
    hidden.mkdir()
    load_recipe(FILES / "course", "tiny").build(None, student, hidden)
    tests = tiny_nbgrader(hidden).cells[-1].source
    solution = [*TINY_SOLUTION[:-1], f"guess = {guess}"]
    assert _earned([*solution, tests], student, monkeypatch) == points


def test_a_written_answer_becomes_a_manually_graded_answer_of_no_points():
    source = nbformat.read(REPO / "assignments" / "assignment01" / "source" / "assignment01.ipynb", as_version=4)
    nb = bench.to_nbgrader(source, "### BEGIN HIDDEN TESTS\n### END HIDDEN TESTS", points=10, seed=1234)
    written = [c.metadata["nbgrader"] for c in nb.cells
               if c.cell_type == "markdown" and "nbgrader" in c.metadata]
    assert written == [{"grade": True, "solution": True, "locked": False, "points": 0,
                        "grade_id": "cell11", "schema_version": 3}]
    code = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells[1:-1]
            if c.cell_type == "code" and "nbgrader" in c.metadata]
    assert code == ["cell3", "cell5", "cell8"]


def test_the_library_import_is_timed_in_a_fresh_interpreter_for_the_notebooks_modules():
    tiny = nbformat.read(TINY_SOURCE, as_version=4)
    modules, seconds = bench.library_import_s({"source": tiny, "reference": tiny}, tries=1)
    assert modules == ["numpy"] and 0 < seconds < 60  # what the zygote imports for it


def test_the_grader_s_bytecode_is_compiled_as_an_installation_would(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    for module in (package / "__init__.py", package / "sub" / "mod.py"):
        module.write_text("X = 1\n")
    assert bench.compile_grader(package) == package
    compiled = {p.name.split(".")[0] for p in package.rglob("__pycache__/*.pyc")}
    assert compiled == {"__init__", "mod"}
