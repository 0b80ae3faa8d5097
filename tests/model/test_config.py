from pathlib import Path

import pytest

from grader.model.config import load_config
from grader.model.errors import AssignmentError
from tests.conftest import REPO

HEAD = 'title = "T"\nnotebook = "a.ipynb"\npoints = 3\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "assignment.toml"
    path.write_text(text)
    return path


def test_loads_typed_values_and_defaults(tmp_path):
    config = load_config(write(tmp_path, HEAD + '[limits]\ncell_seconds = 5\n'
                               '[data]\nrecipe = "r"\nstudent_files = ["a.npz"]\n'))
    assert config.points == 3.0 and isinstance(config.points, float)
    assert config.limits.cell_seconds == 5.0 and isinstance(config.limits.cell_seconds, float)
    assert config.limits.total_seconds == 900.0
    assert config.data.student_files == ("a.npz",)
    assert config.data.recipe == "r"
    assert load_config(write(tmp_path, HEAD)).data.recipe is None


@pytest.mark.parametrize("name", ["assignment01", "assignment02", "assignment03"])
def test_the_course_assignments_are_valid(name):
    assert load_config(REPO / "assignments" / name / "assignment.toml").points == 10


# Each bad config: the key its one-line message must name and the words that say what is expected.
BAD = [
    (HEAD + "bogus = 1\n", "unknown key bogus", "expected one of: title"),
    (HEAD + "[limits]\nbogus = 1\n", "unknown key limits.bogus", "limits.total_seconds"),
    (HEAD + '[data]\nrecipes = "r"\n', "unknown key data.recipes", "data.recipe"),
    (HEAD + "[extra]\nx = 1\n", "unknown key extra", "expected one of"),
    ('title = "T"\nnotebook = "a.ipynb"\npoints = "many"\n', "points must be a number", "found 'many'"),
    ('title = "T"\nnotebook = "a.ipynb"\npoints = true\n', "points must be a number", "found True"),
    ('title = "T"\nnotebook = "a.ipynb"\npoints = 0\n', "points must be a number above 0", "found 0"),
    ('title = "T"\nnotebook = "a.ipynb"\npoints = -2.5\n', "points must be a number above 0", "found -2.5"),
    ('title = "T"\nnotebook = "a.ipynb"\n', "points is missing", "expected a number"),
    ('notebook = "a.ipynb"\npoints = 1\n', "title is missing", "expected a string"),
    ('title = " "\nnotebook = "a.ipynb"\npoints = 1\n', "title must be a non-empty string", "found ' '"),
    ('title = "T"\nnotebook = "a.txt"\npoints = 3\n', "notebook must be a file name ending in .ipynb", "a.txt"),
    ('title = "T"\nnotebook = "../x.ipynb"\npoints = 3\n', "notebook must be a file name", "../x.ipynb"),
    ('title = "T"\nnotebook = 5\npoints = 3\n', "notebook must be a string", "found 5"),
    (HEAD + "seed = -1\n", "seed must be a whole number from 0", "found -1"),
    (HEAD + "seed = 1.5\n", "seed must be a whole number", "found 1.5"),
    (HEAD + "limits = 5\n", "limits must be a table", "found 5"),
    (HEAD + "[limits]\ncell_seconds = true\n", "limits.cell_seconds must be a number", "found True"),
    (HEAD + "[limits]\ncell_seconds = 0\n", "limits.cell_seconds must be a number above 0", "found 0"),
    (HEAD + "[limits]\ntotal_seconds = -5\n", "limits.total_seconds must be a number above 0", "found -5"),
    (HEAD + "[limits]\nmemory_mb = 0\n", "limits.memory_mb must be a number above 0", "found 0"),
    (HEAD + "[limits]\nmemory_mb = 1.5\n", "limits.memory_mb must be a whole number", "found 1.5"),
    (HEAD + '[limits]\nprocesses = "many"\n', "limits.processes must be a whole number", "'many'"),
    (HEAD + "[limits]\noutput_bytes = -1\n", "limits.output_bytes must be a number above 0", "found -1"),
    (HEAD + '[data]\nrecipe = "../evil"\n', "data.recipe must be a plain name", "'../evil'"),
    (HEAD + "[data]\nrecipe = 3\n", "data.recipe must be a string", "found 3"),
    (HEAD + '[data]\nrecipe = "r"\nstudent_files = "a.npz"\n', "data.student_files must be a list of strings",
     "'a.npz'"),
    (HEAD + '[data]\nrecipe = "r"\nstudent_files = ["../hidden/x.npz"]\n',
     "data.student_files must be a list of plain file names", "../hidden/x.npz"),
    (HEAD + '[data]\nstudent_files = ["a.npz"]\n', "data.student_files needs data.recipe", "recipe"),
]


@pytest.mark.parametrize(("text", "key", "expected"), BAD)
def test_rejects_a_bad_config_with_one_line_naming_file_key_and_expectation(tmp_path, text, key, expected):
    path = write(tmp_path, text)
    with pytest.raises(AssignmentError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    assert key in message and expected in message, message


@pytest.mark.parametrize(("text", "words"), [
    ('title = "T\n', "is not valid TOML"),
    (b"\xff\xfe", "cannot be read"),
])
def test_unreadable_config_says_so_in_one_line(tmp_path, text, words):
    path = tmp_path / "assignment.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(AssignmentError, match=f"^{path}.*{words}"):
        load_config(path)


def test_missing_config_says_so(tmp_path):
    with pytest.raises(AssignmentError, match="missing"):
        load_config(tmp_path / "assignment.toml")
