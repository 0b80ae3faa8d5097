"""Preparing a recipe's student and hidden files: cache key, reuse, rebuild, determinism."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from data_conftest_helpers import registry_text, write_sources

from grader.data import load_registry
from grader.data.digest import hash_tree
from grader.data.importing import import_dir
from grader.data.prepare import prepare
from grader.model.errors import DataError

REPO = Path(__file__).resolve().parents[2]
RECIPE = """
from pathlib import Path
import numpy as np
from grader.data.npz import save_npz

INPUTS = ["tiny", "tinyzip"]
VERSION = "1"

def build(raw, student, hidden):
    data = np.frombuffer(raw["tiny"].read_bytes(), dtype=np.uint8)
    save_npz(student / "echo.npz", {"x": data[:100]}, compress=True)
    (hidden / "secret.txt").write_bytes((raw["tinyzip"] / "data" / "b.txt").read_bytes())
"""


@pytest.fixture
def course(tmp_path: Path) -> Path:
    """A course folder with the synthetic registry and one recipe, echo."""
    root = tmp_path / "course"
    (root / "datasets" / "recipes").mkdir(parents=True)
    (root / "datasets" / "registry.toml").write_text(registry_text())
    (root / "datasets" / "recipes" / "echo.py").write_text(RECIPE)
    return root


def filled_home(course: Path, folder: Path) -> Path:
    """A data home with the synthetic datasets imported."""
    registry = load_registry(course / "datasets" / "registry.toml")
    sources = write_sources(folder / "sources")
    home = folder / "home"
    for result in import_dir(sources, list(registry.values()), data_home=home):
        assert result.outcome in ("imported", "generated")
    return home


def test_prepare_builds_once_and_reuses_the_result(course, tmp_path):
    home = filled_home(course, tmp_path)
    first = prepare("echo", course=course, data_home=home)
    stamp = (first.student_dir / "echo.npz").stat().st_mtime_ns
    again = prepare("echo", course=course, data_home=home)
    assert again == first and (again.student_dir / "echo.npz").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in first.student_dir.iterdir()) == ["echo.npz"]
    assert sorted(p.name for p in first.hidden_dir.iterdir()) == ["secret.txt"]


def test_the_key_follows_content_not_paths(course, tmp_path):
    one = prepare("echo", course=course, data_home=filled_home(course, tmp_path / "a"))
    two = prepare("echo", course=course, data_home=filled_home(course, tmp_path / "b"))
    assert one.student_dir.parent.name == two.student_dir.parent.name
    assert hash_tree(one.student_dir.parent) == hash_tree(two.student_dir.parent)
    recipe = course / "datasets" / "recipes" / "echo.py"
    recipe.write_text(recipe.read_text().replace('VERSION = "1"', 'VERSION = "2"'))
    three = prepare("echo", course=course, data_home=tmp_path / "a" / "home")
    assert three.student_dir.parent.name != one.student_dir.parent.name


def test_a_missing_input_names_the_fetch_command(course, tmp_path):
    with pytest.raises(DataError, match="grader data fetch tiny"):
        prepare("echo", course=course, data_home=tmp_path / "empty")


def test_a_corrupt_input_stops_preparation(course, tmp_path):
    home = filled_home(course, tmp_path)
    (home / "raw" / "tinyzip" / "tiny" / "data" / "b.txt").write_text("tampered")
    with pytest.raises(DataError, match="'tinyzip' is corrupt.*grader data fetch tinyzip"):
        prepare("echo", course=course, data_home=home)
    assert not (home / "prepared").exists() or not any((home / "prepared").glob("echo-*"))


def test_a_corrupt_prepared_file_is_rebuilt_not_used(course, tmp_path, caplog):
    home = filled_home(course, tmp_path)
    prepared = prepare("echo", course=course, data_home=home)
    good = (prepared.hidden_dir / "secret.txt").read_bytes()
    (prepared.hidden_dir / "secret.txt").write_bytes(b"flipped")
    (prepared.student_dir / "planted.txt").write_text("not from the recipe")
    with caplog.at_level(logging.WARNING, logger="grader.data.prepare"):
        again = prepare("echo", course=course, data_home=home)
    assert "is corrupt" in caplog.text and "rebuilding" in caplog.text
    assert (again.hidden_dir / "secret.txt").read_bytes() == good
    assert not (again.student_dir / "planted.txt").exists()


def test_a_prepared_result_survives_losing_the_raw_cache(course, tmp_path):
    home = filled_home(course, tmp_path)
    prepared = prepare("echo", course=course, data_home=home)
    shutil.rmtree(home / "raw")
    assert prepare("echo", course=course, data_home=home) == prepared


def test_the_grading_recipe_gives_the_same_bytes_twice(tmp_path):
    one = prepare("grading", course=REPO, data_home=tmp_path / "a")
    two = prepare("grading", course=REPO, data_home=tmp_path / "b")
    assert hash_tree(one.student_dir.parent) == hash_tree(two.student_dir.parent)
    assert [p.name for p in one.student_dir.iterdir()] == ["grading.npz"]
    assert [p.name for p in one.hidden_dir.iterdir()] == ["grading_hidden.npz"]
