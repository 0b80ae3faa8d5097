from pathlib import Path

import pytest

from grader.config import load_config
from grader.errors import AssignmentError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "assignment.toml"
    path.write_text(text)
    return path


def test_loads_typed_values_and_defaults(tmp_path):
    config = load_config(write(tmp_path, 'title = "T"\nnotebook = "a.ipynb"\npoints = 3\n'
                               '[limits]\ncell_seconds = 5\n[data]\nstudent_files = ["a.npz"]\n'))
    assert config.points == 3.0 and isinstance(config.points, float)
    assert config.limits.cell_seconds == 5.0
    assert config.limits.total_seconds == 900.0
    assert config.data.student_files == ("a.npz",)
    assert config.data.recipe is None


@pytest.mark.parametrize(("text", "words"), [
    ('title = "T"\nnotebook = "a.ipynb"\npoints = 3\nbogus = 1\n', "unknown setting 'bogus'"),
    ('title = "T"\nnotebook = "a.ipynb"\npoints = "many"\n', "points must be a float"),
    ('title = "T"\nnotebook = "a.txt"\npoints = 3\n', "must name an .ipynb"),
    ('title = "T"\nnotebook = "a.ipynb"\npoints = 0\n', "points must be positive"),
    ('title = "T"\nnotebook = "a.ipynb"\n', "points"),
    ('title = "T\n', "not valid TOML"),
    ('title = "T"\nnotebook = "a.ipynb"\npoints = 1\n[limits]\ncell_seconds = true\n', "cell_seconds"),
])
def test_rejects_bad_configs_with_the_reason(tmp_path, text, words):
    with pytest.raises(AssignmentError, match=words.replace("(", r"\(")):
        load_config(write(tmp_path, text))


def test_missing_config_says_so(tmp_path):
    with pytest.raises(AssignmentError, match="missing"):
        load_config(tmp_path / "assignment.toml")
