import json
import os
import unicodedata

import nbformat
import pytest

from grader.model.errors import SubmissionError
from grader.model.submission import InvalidNotebook, discover, read_notebook, slug, student_id
from tests.conftest import notebook


def test_discovers_files_and_folders_sorted(tmp_path):
    nbformat.write(notebook("1"), tmp_path / "bob.ipynb")
    (tmp_path / "alice").mkdir()
    nbformat.write(notebook("1"), tmp_path / "alice" / "whatever.ipynb")
    (tmp_path / "notes.txt").write_text("not a notebook")
    (tmp_path / ".hidden.ipynb").write_text("{}")
    found = discover(tmp_path, notebook_name="a.ipynb")
    assert [(s.student, s.path.name) for s in found] == [("alice", "whatever.ipynb"), ("bob", "bob.ipynb")]
    assert [s.submitted_at for s in found] == [None, None]  # no .collected.json: the file's time


def test_submission_times_come_from_the_collected_manifest(tmp_path):
    nbformat.write(notebook("1"), tmp_path / "bob.ipynb")
    nbformat.write(notebook("1"), tmp_path / "cy.ipynb")
    (tmp_path / ".collected.json").write_text(json.dumps({"students": {
        "bob": {"submitted_at": "2026-03-01T09:30:00+01:00", "source": "a.ipynb", "name": "Bob",
                "lms_id": "7", "late": True}}}))
    found = discover(tmp_path, notebook_name="a.ipynb")
    assert [(s.student, s.submitted_at and s.submitted_at.isoformat()) for s in found] == [
        ("bob", "2026-03-01T09:30:00+01:00"), ("cy", None)]
    (tmp_path / ".collected.json").write_text("{not json")
    with pytest.raises(SubmissionError, match="is not a manifest `grader collect` wrote"):
        discover(tmp_path, notebook_name="a.ipynb")


def test_folder_with_several_notebooks_prefers_the_assignment_name(tmp_path):
    folder = tmp_path / "carol"
    folder.mkdir()
    for name in ("draft.ipynb", "a.ipynb"):
        nbformat.write(notebook("1"), folder / name)
    (tmp_path / "dave").mkdir()
    for name in ("x.ipynb", "y.ipynb"):
        nbformat.write(notebook("1"), tmp_path / "dave" / name)
    (tmp_path / "erin").mkdir()
    found = {s.student: s for s in discover(tmp_path, notebook_name="a.ipynb")}
    assert found["carol"].path.name == "a.ipynb"
    assert found["dave"].path is None and "several notebooks" in found["dave"].problem
    assert found["erin"].path is None and "no .ipynb" in found["erin"].problem


def test_missing_or_empty_folder_is_a_user_error(tmp_path):
    with pytest.raises(SubmissionError, match="does not exist"):
        discover(tmp_path / "nope", notebook_name="a.ipynb")
    nbformat.write(notebook("1"), tmp_path / "alice.ipynb")
    with pytest.raises(SubmissionError, match="is a file, not a folder of submissions; pass the folder"):
        discover(tmp_path / "alice.ipynb", notebook_name="a.ipynb")
    (tmp_path / "alice.ipynb").unlink()
    with pytest.raises(SubmissionError, match="no notebooks"):
        discover(tmp_path, notebook_name="a.ipynb")


@pytest.mark.parametrize(("content", "words"), [
    (b"{not json", "not JSON"),
    (b"\xff\xfe\x00", "not JSON"),
    (b'{"hello": 1}', "not a notebook"),
    (json.dumps({"cells": "x", "nbformat": 4, "nbformat_minor": 5, "metadata": {}}).encode(),
     "does not follow the notebook format"),
    (nbformat.writes(notebook("", "   ")).encode(), "no code"),
])
def test_unreadable_notebooks_say_why(tmp_path, content, words):
    path = tmp_path / "s.ipynb"
    path.write_bytes(content)
    with pytest.raises(InvalidNotebook, match=words):
        read_notebook(path)


def test_nbformat3_notebooks_are_upgraded(tmp_path):
    v3 = {"nbformat": 3, "nbformat_minor": 0, "metadata": {"name": ""}, "worksheets": [
        {"cells": [{"cell_type": "code", "input": "x = 1", "language": "python",
                    "outputs": [], "metadata": {}}], "metadata": {}}]}
    path = tmp_path / "old.ipynb"
    path.write_text(json.dumps(v3))
    nb, digest = read_notebook(path)
    assert nb.nbformat == 4 and nb.cells[0].source == "x = 1" and len(digest) == 64


def test_hostile_student_ids_become_safe_file_names():
    for hostile in ("../../etc/passwd", "a/b", "..", "\x00\x1b[31mred", "é" * 300, "con", ""):
        name = slug(student_id(hostile))
        assert "/" not in name and name not in (".", "..") and 0 < len(name) <= 80
        assert name.isprintable()
    assert slug("alice") == "alice"
    assert slug("a/b") != slug("a_b") and slug("index") != "index"
    assert len(student_id("x" * 1000)) <= 100
    assert student_id("\x07bell") == "?bell"


def test_nfc_and_nfd_spellings_are_one_student_and_both_hand_ins_are_refused(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "José"), unicodedata.normalize("NFD", "José")
    assert nfc != nfd and student_id(nfd) == student_id(nfc) == nfc
    nbformat.write(notebook("1"), tmp_path / f"{nfc}.ipynb")
    nbformat.write(notebook("2"), tmp_path / f"{nfd}.ipynb")
    nbformat.write(notebook("3"), tmp_path / "bob.ipynb")
    (tmp_path / "bob").mkdir()
    nbformat.write(notebook("4"), tmp_path / "bob" / "a.ipynb")
    nbformat.write(notebook("5"), tmp_path / "carol.ipynb")
    found = discover(tmp_path, notebook_name="a.ipynb")
    assert [s.student for s in found] == ["José", "bob", "carol"]
    for s in found[:2]:
        assert s.path is None and "2 hand-ins have the same student id" in s.problem
    assert found[2].path == tmp_path / "carol.ipynb"


def test_symlinked_hand_ins_are_refused(tmp_path):
    instructor = tmp_path / "instructor.ipynb"
    nbformat.write(notebook("answer = 42"), instructor)
    subs = tmp_path / "subs"
    (subs / "bob").mkdir(parents=True)
    (subs / "alice.ipynb").symlink_to(instructor)
    (subs / "bob" / "a.ipynb").symlink_to(instructor)
    (subs / "carol").symlink_to(tmp_path)
    found = {s.student: s for s in discover(subs, notebook_name="a.ipynb")}
    assert set(found) == {"alice", "bob", "carol"}
    for s in found.values():
        assert s.path is None and "symbolic link" in s.problem, s
    with pytest.raises(InvalidNotebook, match="symbolic link"):
        read_notebook(subs / "alice.ipynb")


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "s.ipynb"
    os.mkfifo(fifo)
    with pytest.raises(InvalidNotebook, match="not a regular file"):
        read_notebook(fifo)


def _forged(path, *, source: str = "x = 2", metadata: dict | None = None, raw_metadata: str = "") -> str:
    """A notebook of two code cells written to PATH, its second cell's SOURCE and the notebook's
    METADATA as given; RAW_METADATA (JSON text) put first in that metadata as it is."""
    nb = json.loads(nbformat.writes(notebook("means = 1", "x = 2")))
    nb["cells"][1]["source"] = source
    nb["metadata"].update(metadata or {})
    text = json.dumps(nb)
    if raw_metadata:
        text = text.replace('"metadata": {"kernelspec"', '"metadata": {' + raw_metadata + ', "kernelspec"', 1)
    path.write_text(text)
    return path


def test_a_lone_surrogate_anywhere_makes_the_notebook_invalid_with_where(tmp_path):
    cases = {"source": _forged(tmp_path / "source.ipynb", source="x = '\ud800'"),
             "metadata": _forged(tmp_path / "meta.ipynb", metadata={"note": "\udc80"}),
             "key": _forged(tmp_path / "key.ipynb", metadata={"\udfff": 1})}
    for path in cases.values():
        with pytest.raises(InvalidNotebook, match="cannot be written down.*lone surrogate"):
            read_notebook(path)
    with pytest.raises(InvalidNotebook, match=r"U\+D800\) in cell 2: remove it"):
        read_notebook(cases["source"])


def test_json_nested_deeper_than_any_notebook_is_invalid_not_a_crash(tmp_path):
    for depth in (100, 100_000):  # past MAX_DEPTH; past the JSON decoder's own recursion limit
        path = _forged(tmp_path / f"deep{depth}.ipynb", raw_metadata='"deep": ' + "[" * depth + "]" * depth)
        with pytest.raises(InvalidNotebook, match="nested more than 64 levels deep"):
            read_notebook(path)
    widgets = {"state": {"m": {"model_name": "x", "state": {"layout": {"a": [{"b": [1, 2]}]}}}}}
    read_notebook(_forged(tmp_path / "ok.ipynb", metadata={"widgets": widgets}))  # an ordinary depth

