"""The real datasets in ../shared/datasets: import, list, prepare every recipe, hidden stays hidden.

Skipped only where that folder is absent; CI has it. About 40 s on two cores, most of it IMDB.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from grader.data import load_registry, prepare, raw_inputs
from grader.data.cli import main
from grader.data.digest import hash_tree
from grader.data.prepare import load_recipe
from grader.model.errors import DataError
from tests.conftest import SHARED_DATASETS, require_real_datasets

REPO = Path(__file__).resolve().parents[2]
SHARED = SHARED_DATASETS
RECIPES = sorted(p.stem for p in (REPO / "datasets" / "recipes").glob("*.py"))
ASSIGNMENTS = sorted((REPO / "assignments").glob("*/assignment.toml"))
REGISTRY = load_registry()
DOWNLOADED = [name for name, entry in REGISTRY.items() if entry.kind != "generated"]

@pytest.fixture(autouse=True)
def _real_datasets() -> None:
    require_real_datasets()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh data home with ../shared/datasets imported through the CLI."""
    home = tmp_path_factory.mktemp("data-home")
    assert main(["data", "import", str(SHARED), "--data-home", str(home)]) == 0
    return home


def test_import_then_list_shows_every_dataset_present_and_verified(home, capsys):
    capsys.readouterr()
    assert main(["data", "list", "--data-home", str(home)]) == 0
    status = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    for name, entry in REGISTRY.items():
        assert status[name] == ("generated" if entry.kind == "generated" else "verified"), name


@pytest.mark.parametrize("recipe", RECIPES)
def test_prepare_is_deterministic_and_hidden_files_stay_out(home, recipe, tmp_path):
    prepared = prepare(recipe, course=REPO, data_home=home)
    module = load_recipe(REPO, recipe)
    (tmp_path / "student").mkdir()
    (tmp_path / "hidden").mkdir()
    module.build(
        raw_inputs(list(module.INPUTS), data_home=home), tmp_path / "student", tmp_path / "hidden"
    )
    student, hidden = hash_tree(prepared.student_dir), hash_tree(prepared.hidden_dir)
    assert hash_tree(tmp_path / "student") == student  # same bytes, built twice
    assert hash_tree(tmp_path / "hidden") == hidden
    assert student and hidden
    assert not prepared.hidden_dir.is_relative_to(prepared.student_dir)
    assert not {Path(r).name for r in student} & {Path(r).name for r in hidden}
    assert not set(student.values()) & set(hidden.values())


PROBE = """
import hashlib, json, os, sys
skip = (os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix), "/usr", "/proc", "/sys", "/dev")
seen = {}
for folder, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if not os.path.realpath(os.path.join(folder, d)).startswith(skip)]
    for name in files:
        path = os.path.join(folder, name)
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            seen[path] = digest.hexdigest()
        except OSError:
            seen[path] = "unreadable"
print("SEEN " + json.dumps(seen))
"""


@pytest.mark.parametrize("toml", ASSIGNMENTS, ids=[p.parent.name for p in ASSIGNMENTS])
@pytest.mark.slow
def test_no_hidden_file_is_visible_to_an_assignments_kernel(home, toml, tmp_path):
    """The real engine stages the files and runs a probe that hashes all it can see."""
    from grader.grading.local import grade_submission
    from grader.model.assignments import load_assignment
    from grader.model.submission import Submission
    from tests.conftest import notebook

    assignment = load_assignment(REPO, toml.parent.name)
    recipe = assignment.config.data.recipe
    prepared = prepare(recipe, course=REPO, data_home=home) if recipe else None
    probe = tmp_path / "probe.ipynb"
    probe.write_text(__import__("nbformat").writes(notebook(PROBE)))
    result = grade_submission(assignment, Submission("probe", probe), prepared=prepared)
    cells = json.loads(result.executed_notebook)["cells"]
    text = "".join("".join(o.get("text", "")) for o in cells[0]["outputs"])
    seen = json.loads(text.split("SEEN ", 1)[1])
    in_workdir = {p for p in seen if p.startswith("/home/student/work/")}
    assert result.sandboxed and in_workdir, result.reason
    if prepared is not None:
        hidden = hash_tree(prepared.hidden_dir)
        assert not set(seen.values()) & set(hidden.values())
        assert not {Path(p).name for p in seen} & {Path(r).name for r in hidden}
        student = {Path(r).name for r in hash_tree(prepared.student_dir)}
        assert {Path(p).name for p in in_workdir} & student


def one_cached_file(name: str, home: Path) -> Path:
    """A file of dataset NAME in the cache: the file itself, or the first file of an archive."""
    entry = REGISTRY[name]
    root = home / "raw" / name
    if entry.kind == "file":
        return root / entry.file
    return min(p for p in (root / entry.root).rglob("*") if p.is_file())


@pytest.mark.parametrize("name", DOWNLOADED)
def test_a_flipped_byte_in_any_cached_dataset_is_caught_with_the_repair_command(home, name):
    path = one_cached_file(name, home)
    original = path.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    path.write_bytes(bytes(flipped))
    try:
        with pytest.raises(DataError) as error:
            raw_inputs([name], data_home=home)
    finally:
        path.write_bytes(original)
    message = str(error.value)
    assert f"cached dataset {name!r} is corrupt" in message and "was not used" in message
    assert f"grader data fetch {name} --data-home {home}" in message
    assert f"grader data import DIR --data-home {home}" in message
    raw_inputs([name], data_home=home)  # restored: verified again


def test_student_and_hidden_files_have_the_documented_shapes(home):
    mnist = prepare("mnist", course=REPO, data_home=home)
    with np.load(mnist.student_dir / "mnist_train.npz") as train:
        assert train["x"].shape == (60000, 28, 28) and train["x"].dtype == np.uint8
    with np.load(mnist.hidden_dir / "mnist_test.npz") as test:
        assert test["x"].shape == (10000, 28, 28) and test["y"].shape == (10000,)
    boston = prepare("boston_housing", course=REPO, data_home=home)
    with np.load(boston.student_dir / "boston_housing_train.npz") as train:
        assert train["x"].shape == (404, 13)
    with np.load(boston.hidden_dir / "boston_housing_test.npz") as test:
        assert test["x"].shape == (102, 13)
    cats = prepare("cats_and_dogs", course=REPO, data_home=home)
    counts: dict[str, int] = {}
    for image in cats.student_dir.parent.rglob("*.jpg"):
        folder = image.parent.relative_to(cats.student_dir.parent).as_posix()
        counts[folder] = counts.get(folder, 0) + 1
    assert counts == {
        "student/cats_and_dogs/train/cats": 1000,
        "student/cats_and_dogs/train/dogs": 1000,
        "student/cats_and_dogs/validation/cats": 250,
        "student/cats_and_dogs/validation/dogs": 250,
        "hidden/cats_and_dogs_test/cats": 250,
        "hidden/cats_and_dogs_test/dogs": 250,
    }


def test_imdb_texts_and_sequences_agree(home):
    imdb = prepare("imdb", course=REPO, data_home=home)
    for folder, stem in ((imdb.student_dir, "imdb_train"), (imdb.hidden_dir, "imdb_test")):
        lines = (folder / f"{stem}.jsonl").read_text(encoding="utf-8").splitlines()
        first = json.loads(lines[0])
        with np.load(folder / f"{stem}_seq.npz") as seq:
            tokens, offsets, y = seq["tokens"], seq["offsets"], seq["y"]
        assert len(lines) == 25000 and offsets.shape == (25001,) and int(y.sum()) == 12500
        assert first["label"] == y[0] and tokens[offsets[:-1]].tolist() == [1] * 25000
        assert tokens.min() >= 1 and (tokens == 2).any()
        words = json.loads((imdb.student_dir / "imdb_word_index.json").read_text())
        rank = {index + 3: word for word, index in words.items()}
        decoded = [rank[int(t)] for t in tokens[offsets[0] + 1 : offsets[1]] if t > 2]
        assert decoded and all(word in first["text"].lower() for word in decoded)


def test_movielens_holds_out_ten_ratings_per_user_that_students_never_see(home):
    movielens = prepare("movielens", course=REPO, data_home=home)
    with np.load(movielens.student_dir / "movielens_train.npz") as train:
        ratings, users = train["ratings"], train["user"]
        assert ratings.shape == (943, 1682) and train["titles"].shape == (1682,)
    with np.load(movielens.hidden_dir / "movielens_test.npz") as test:
        held = (test["user"], test["item"])
    assert len(users) == 90570 and np.count_nonzero(ratings) == 90570
    assert (np.bincount(held[0], minlength=943) == 10).all()
    assert (ratings[held] == 0).all()


def test_boston_and_mnist_match_what_keras_load_data_gives(home, tmp_path):
    keras_home = tmp_path / "keras"
    (keras_home / "datasets").mkdir(parents=True)
    for name in ("boston_housing", "mnist"):
        shutil.copyfile(SHARED / name / f"{name}.npz", keras_home / "datasets" / f"{name}.npz")
    boston = prepare("boston_housing", course=REPO, data_home=home).student_dir
    mnist = prepare("mnist", course=REPO, data_home=home).hidden_dir
    script = f"""
import numpy as np
from keras.datasets import boston_housing, mnist
(x, y), _ = boston_housing.load_data()
with np.load({str(boston / "boston_housing_train.npz")!r}) as f:
    assert (f["x"] == x).all() and (f["y"] == y).all()
_, (x, y) = mnist.load_data()
with np.load({str(mnist / "mnist_test.npz")!r}) as f:
    assert (f["x"] == x).all() and (f["y"] == y).all()
"""
    env = {**os.environ, "KERAS_HOME": str(keras_home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
