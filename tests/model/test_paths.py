"""Where the grader finds the course, its own shipped files and the dataset cache."""

from pathlib import Path

import pytest

from grader.model import paths
from grader.model.errors import GraderError
from tests.conftest import FILES, REPO


def test_the_course_is_the_option_else_the_environment_else_the_nearest_folder_up(tmp_path, monkeypatch):
    course = FILES / "course"
    monkeypatch.delenv("GRADER_COURSE", raising=False)
    monkeypatch.chdir(course / "assignments" / "tiny")
    assert paths.course_root() == course
    monkeypatch.setenv("GRADER_COURSE", str(REPO))
    assert paths.course_root() == REPO
    assert paths.course_root(course) == course


def test_a_folder_without_assignments_is_refused_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("GRADER_COURSE", raising=False)
    with pytest.raises(GraderError, match=f"{tmp_path} has no assignments/ folder: point --course"):
        paths.course_root(tmp_path)


def test_outside_any_course_an_editable_install_falls_back_to_its_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("GRADER_COURSE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert paths.course_root() == REPO  # the tests run from a checkout with pyproject.toml
    monkeypatch.setattr(paths, "_SOURCE_ROOT", tmp_path)  # e.g. site-packages: no checkout there
    (tmp_path / "assignments").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert paths.course_root() == tmp_path  # found from the working directory, as before
    monkeypatch.chdir("/")
    with pytest.raises(GraderError, match="no course folder found: .*pass --course DIR"):
        paths.course_root()


def test_the_templates_and_the_registry_are_read_from_the_package():
    page = paths.package_file("reports", "templates", "feedback.html.j2")
    assert "<html" in page.read_text(encoding="utf-8")
    assert paths.package_file("data", "registry.toml").is_file()
    assert not (REPO / "templates").exists() and not (REPO / "datasets" / "registry.toml").exists()
    assert Path(str(paths.package_file("reports", "templates"))).parent == REPO / "grader" / "reports"
