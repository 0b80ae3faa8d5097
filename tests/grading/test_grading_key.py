"""What regrades: a change to a check or to the grader's grading code does (the latter when asked,
after saying how many it would); a change to a template, the CLI, the reports or the README never
does."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from grader.cli import main as cli_main
from grader.cli import run as cli_run
from grader.grading import batch as batch_module
from grader.grading.batch import grade_batch
from grader.grading.executor import Settings
from grader.model import assignments, result
from grader.model.assignments import code_digest, grading_code, load_assignment
from grader.model.submission import discover
from grader.store.gradebook import Gradebook
from tests.conftest import REPO, notebook

PACKAGE = REPO / "grader"


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("package") / "grader"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _changed(package: Path, relative: str) -> str:
    """The code digest of PACKAGE with one line added to RELATIVE, which is then put back."""
    path = package / relative
    before = path.read_bytes()
    comment = b"{# a new line #}\n" if relative.endswith(".j2") else b"# a new line\n"
    path.write_bytes(before + comment)
    try:
        return code_digest(package)
    finally:
        path.write_bytes(before)


@pytest.mark.parametrize("relative", [
    "reports/templates/feedback.html.j2", "reports/templates/summary.html.j2", "reports/pages.py",
    "cli/main.py", "cli/doctor.py", "course/bundle.py", "store/gradebook.py", "grading/batch.py",
    "model/late.py", "__main__.py",
])
def test_a_change_outside_the_grading_code_changes_no_digest(package_copy, relative):
    assert _changed(package_copy, relative) == code_digest(package_copy)


@pytest.mark.parametrize("relative", [
    "checker/checks.py", "checker/plugin.py", "grading/execute.py", "grading/score.py",
    "grading/check.py", "isolation/sandbox.py", "model/config.py",
])
def test_a_change_to_the_grading_code_changes_the_digest(package_copy, relative):
    assert _changed(package_copy, relative) != code_digest(package_copy)


def test_the_grading_code_is_this_packages_and_names_the_version():
    assert grading_code().endswith("+" + code_digest(PACKAGE)[:16])


def test_the_readme_and_the_docs_are_not_in_the_grading_key(course, tmp_path):
    assignment = load_assignment(course, "tiny")
    key = assignment.grading_key("data")
    (course / "README.md").write_text("# a course\n", encoding="utf-8")
    assert load_assignment(course, "tiny").grading_key("data") == key
    (assignment.public_checks / "test_public.py").write_text(
        (assignment.public_checks / "test_public.py").read_text() + "\n# a changed check\n")
    assert load_assignment(course, "tiny").grading_key("data") != key, "a changed check regrades"


def _batch(course: Path, subs: list, book: Gradebook, **settings: object):
    return grade_batch(load_assignment(course, "tiny"), subs, gradebook=book, prepared=None,
                       settings=Settings(workers=1, **settings))  # type: ignore[arg-type]


def _invalid(folder: Path, *names: str) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.ipynb").write_text("{ not json")
    return discover(folder, notebook_name="tiny.ipynb")


def _new_grader(monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    """This process grades as grader CODE from now on (a new grading code installed)."""
    for module in (assignments, result, batch_module, cli_run):
        monkeypatch.setattr(module, "grading_code", lambda: code)


def test_a_new_grader_keeps_the_old_results_until_asked_then_regrades_them(course, tmp_path,
                                                                           monkeypatch):
    book = Gradebook(tmp_path / "g.sqlite")
    subs = _invalid(tmp_path / "subs", "alice", "bob")
    first = _batch(course, subs, book)
    assert [r.grader for r in first.graded] == [grading_code()] * 2
    assert {r.grader for r in book.latest("tiny")} == {grading_code()}
    again = _batch(course, subs, book)
    assert (again.graded, sorted(again.skipped), again.older) == ([], ["alice", "bob"], [])

    _new_grader(monkeypatch, "9.9+newgradingcode")
    kept = _batch(course, subs, book)
    assert (kept.graded, kept.skipped, sorted(kept.older)) == ([], [], ["alice", "bob"])
    assert {r.grader for r in book.latest("tiny")} == {grading_code()}, "old results kept"

    regraded = _batch(course, subs, book, regrade_new_grader=True)
    assert sorted(r.student for r in regraded.graded) == ["alice", "bob"] and regraded.older == []
    assert {r.grader for r in book.latest("tiny")} == {"9.9+newgradingcode"}
    assert _batch(course, subs, book, regrade_new_grader=True).graded == [], "graded once"


def test_a_changed_check_regrades_without_being_asked(course, tmp_path):
    book = Gradebook(tmp_path / "g.sqlite")
    subs = _invalid(tmp_path / "subs", "alice")
    assert len(_batch(course, subs, book).graded) == 1
    check = course / "assignments" / "tiny" / "checks" / "public" / "test_public.py"
    check.write_text(check.read_text() + "\n# a changed check\n")
    assert [r.student for r in _batch(course, subs, book).graded] == ["alice"]


@pytest.mark.slow  # one notebook runs in a sandboxed kernel
def test_grader_run_says_how_many_a_new_grader_would_regrade(course, tmp_path, monkeypatch, capsys):
    subs = tmp_path / "subs"
    subs.mkdir()
    nbformat.write(notebook("x = 1"), subs / "alice.ipynb")
    _invalid(subs, "bob")
    args = ["run", "tiny", "--course", str(course), "--submissions", str(subs), "--gradebook",
            str(tmp_path / "g.sqlite"), "--reports", str(tmp_path / "r"), "--no-notebook-html"]
    assert cli_main.main(args) == 0
    _new_grader(monkeypatch, "9.9+newgradingcode")
    capsys.readouterr()
    assert cli_main.main(args) == 0
    out = capsys.readouterr().out
    assert "0 graded, 0 already graded" in out
    assert "2 results were graded by another grader than this one (9.9+newgradingcode)" in out
    assert "--regrade-new-grader" in out
    page = (tmp_path / "r" / "index.html").read_text()
    assert "Graded by" in page and grading_code() in page
