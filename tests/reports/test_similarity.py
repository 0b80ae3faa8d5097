"""Copied work: similar pairs from the stored notebooks, on the staff pages only. No kernel runs."""

import json
import time
from types import SimpleNamespace

import numpy as np

from grader.checks import SubmissionView, weights_digest
from grader.cli.main import main
from grader.grading.check import read_results as _read_results
from grader.model.result import Result
from grader.reports import similarity
from grader.reports.pages import feedback_name, write_feedback, write_summary
from grader.reports.similarity import normalise, similar_pairs
from grader.store.gradebook import Gradebook
from tests.conftest import REPO, before_migrations

A01 = REPO / "assignments" / "assignment01"
STARTER = (A01 / "release" / "assignment01.ipynb").read_text()
REFERENCE = (A01 / "submissions" / "reference.ipynb").read_text()
PARTIAL = (A01 / "submissions" / "partial.ipynb").read_text()

# A copy of the reference made to look different: its own names, other comments, a docstring.
DISGUISE = [
    ("scale", "normaliser"), ("raw", "predicted"), ("(points", "(batch"),
    ("x.mean(axis=0)", "x.mean(  # average of each part\n    axis = 0)"),
    ("def predict_grades(batch):\n", 'def predict_grades(batch):\n    """Grades of a batch."""\n'),
    ("verbose=0)\nprint(\"final", "verbose=0)   # quiet\n\nprint(\"final"),
]


def disguised(notebook_json: str) -> str:
    """NOTEBOOK_JSON's code cells with renamed variables, changed comments and layout."""
    notebook = json.loads(notebook_json)
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            for old, new in DISGUISE:
                source = source.replace(old, new)
            cell["source"] = source
    return json.dumps(notebook)


def with_code(notebook_json: str, index: int, code: str, outputs: list | None = None) -> str:
    """NOTEBOOK_JSON with code cell INDEX replaced by CODE (and OUTPUTS)."""
    notebook = json.loads(notebook_json)
    cell = notebook["cells"][index]
    cell["source"], cell["outputs"] = code, outputs or []
    return json.dumps(notebook)


def result(student: str, notebook_json: str | None) -> Result:
    return Result(student=student, assignment="assignment01", notebook=f"{student}.ipynb",
                  sha256="ab" * 32, checks_sha256="c", status="graded", reason="", score=5,
                  max_score=10, executed_notebook=notebook_json)


def students(pairs):
    return [{p.first.student, p.second.student} for p in pairs]


def test_normalising_ignores_comments_docstrings_names_and_layout_but_not_the_api():
    one = 'def f(a):\n    """Doc."""\n    total = np.sum(a, axis=0)  # sum\n    return total\n'
    two = "def g(values):\n\n    s = np.sum(values,\n               axis=0)\n    return s\n"
    other = "def g(values):\n    s = np.mean(values, axis=1)\n    return s\n"
    names = frozenset({"np"})
    assert normalise(one, names) == normalise(two, names)
    assert normalise(one, names) != normalise(other, names)
    assert "sum" in normalise(one, names) and "axis" in normalise(one, names)
    assert "total" not in normalise(one, names) and "Doc" not in " ".join(normalise(one, names))


def test_a_disguised_copy_of_the_reference_is_flagged():
    copy = disguised(REFERENCE)
    code = "".join(c["source"] for c in json.loads(copy)["cells"] if c["cell_type"] == "code")
    assert "normaliser" in code and "# average of each part" in code and '"""Grades' in code
    pairs = similar_pairs([result("ana", REFERENCE), result("ben", copy)], STARTER)
    assert students(pairs) == [{"ana", "ben"}]
    assert pairs[0].similarity >= 0.9 and "code" in pairs[0].why


def test_the_reference_and_the_partial_example_are_not_paired():
    pairs = similar_pairs([result("ana", REFERENCE), result("carl", PARTIAL)], STARTER)
    assert pairs == []
    # ... although they share the statistics cell: what they share is still measured
    both = similar_pairs([result("ana", REFERENCE), result("carl", PARTIAL)], STARTER, threshold=0.01)
    assert students(both) == [{"ana", "carl"}] and both[0].similarity < similarity.CODE_THRESHOLD


def test_starters_pair_with_nobody_and_the_given_code_is_left_out():
    commented = with_code(STARTER, 3, "# not done yet\nraise NotImplementedError()\n"
                          'print("means", means, "minimums", minimums, "maximums", maximums)\n'
                          'print("grades", np.unique(y, return_counts=True))')
    results = [result("s1", STARTER), result("s2", STARTER), result("s3", commented),
               result("ana", REFERENCE), result("ben", disguised(REFERENCE)), result("carl", PARTIAL)]
    pairs = similar_pairs(results, STARTER, threshold=0.01)
    assert all(not {"s1", "s2", "s3"} & pair for pair in students(pairs))
    assert similarity.written(result("s3", commented), similarity.starter_lines(STARTER)).cells == [
        (3, "# not done yet")]


def with_cells(notebook_json: str, *cells: tuple[str, list], first: bool = False) -> str:
    """NOTEBOOK_JSON with code CELLS ((source, outputs) each) added at its end, or FIRST."""
    notebook = json.loads(notebook_json)
    added = [{"cell_type": "code", "metadata": {}, "execution_count": None, "source": source,
              "outputs": outputs} for source, outputs in cells]
    notebook["cells"] = [*added, *notebook["cells"]] if first else [*notebook["cells"], *added]
    return json.dumps(notebook)


def test_huge_cells_are_read_in_linear_time_and_capped():
    # Each took the old regexes quadratic time: 80 s for the 60,000 newlines, hours for 1 MB.
    newlines = ("x = 1" + "\n" * 60_000, [])
    megabyte = ("\n" * 1_000_000, [])
    digits = ("model.fit(x)", [{"output_type": "stream", "name": "stdout", "text": "7" * 1_000_000}])
    junk = ("values = [" + "1, " * 400_000 + "]", [])  # 1.2 MB of written code, first
    ana = with_cells(REFERENCE, newlines, megabyte, digits)
    ben = with_cells(disguised(REFERENCE), junk, first=True)
    start = time.monotonic()
    pairs = similar_pairs([result("ana", ana), result("ben", ben), result("carl", PARTIAL)], STARTER)
    assert time.monotonic() - start < 5
    assert students(pairs) == [{"ana", "ben"}]  # the junk cell does not hide ben's own code
    read = similarity.written(result("ben", ben), similarity.starter_lines(STARTER))
    assert len(read.cells[0][1]) == similarity.MAX_CELL_CHARS
    assert sum(len(code) for _, code in read.cells) <= similarity.MAX_CODE_CHARS


def test_reading_a_notebook_stops_at_its_time_limit(monkeypatch):
    monkeypatch.setattr(similarity, "MAX_SECONDS", 0.0)
    assert similarity.written(result("ana", REFERENCE), frozenset()).cells == []
    nested = '{"cells": ' + "[" * 100_000 + "]" * 100_000 + "}"  # json's RecursionError
    assert similarity.written(result("ben", nested), frozenset()).cells == []


def training_output(loss: str) -> list:
    return [{"output_type": "stream", "name": "stdout", "text": [f"final training loss {loss}\n"]}]


def test_identical_training_output_lists_a_pair_whose_code_is_half_alike():
    model_cell = 5  # the cell that builds and fits the model
    code = json.loads(REFERENCE)["cells"][model_cell]["source"]
    changed = "".join(code).replace("Adam(learning_rate=0.05)", "RMSprop()")
    ana = with_code(REFERENCE, model_cell, "".join(code), training_output("0.3124567"))
    ben = with_code(disguised(REFERENCE), model_cell, changed, training_output("0.3124567"))
    ben_own = with_code(disguised(REFERENCE), model_cell, changed, training_output("0.2981234"))
    strict = {"threshold": 0.999, "result_threshold": 0.5}
    pairs = similar_pairs([result("ana", ana), result("ben", ben)], STARTER, **strict)
    assert students(pairs) == [{"ana", "ben"}] and pairs[0].similarity < 0.999
    assert "identical training or prediction output (cell 5)" in pairs[0].why
    assert similar_pairs([result("ana", ana), result("ben", ben_own)], STARTER, **strict) == []


def test_summary_lists_the_pair_with_a_side_by_side_page_and_feedback_does_not(tmp_path):
    ana, ben = result("ana", REFERENCE), result("ben", disguised(REFERENCE))
    pairs = similar_pairs([ana, ben], STARTER)
    page = write_summary([ana, ben], assignment="assignment01", title="A1", folder=tmp_path, pairs=pairs)
    html = page.read_text()
    assert "Similar submissions" in html and "ana · ben" in html and "1 pair(s)" in html
    assert 'href="similar/pair-0001.html"' in html
    side = (tmp_path / "similar" / "pair-0001.html").read_text()
    assert "normaliser" in side and "scale" in side and 'class="diff"' in side
    assert f'href="../{feedback_name("ben")}"' in side
    for student, other in ((ana, "ben"), (ben, "ana")):
        feedback = write_feedback(student, title="A1", folder=tmp_path, notebook_html=False).read_text()
        assert other not in feedback and "similar" not in feedback.lower()


def test_a_summary_without_pairs_says_so_and_old_pair_pages_go(tmp_path):
    ana, carl = result("ana", REFERENCE), result("carl", PARTIAL)
    (tmp_path / "similar").mkdir()
    (tmp_path / "similar" / "pair-0001.html").write_text("old")
    html = write_summary([ana, carl], assignment="assignment01", title="A1", folder=tmp_path,
                         pairs=similar_pairs([ana, carl], STARTER)).read_text()
    assert "No two submissions are suspiciously alike" in html
    assert not (tmp_path / "similar" / "pair-0001.html").exists()


def test_student_code_and_names_on_the_side_by_side_page_are_escaped(tmp_path):
    hostile = "<img src=x onerror=alert(1)>"
    code = ('means = x.mean(axis=0)\nminimums = x.min(axis=0)\nmaximums = x.max(axis=0)\n'
            'label = "</td></table><script>alert(2)</script>"\n')
    ana = result(hostile, with_code(REFERENCE, 3, code))
    ben = result("ben", with_code(disguised(REFERENCE), 3, code.replace("label", "tag")))
    pairs = similar_pairs([ana, ben], STARTER)
    assert students(pairs) == [{hostile, "ben"}]
    write_summary([ana, ben], assignment="assignment01", title="A1", folder=tmp_path, pairs=pairs)
    for page in (tmp_path / "similar" / "pair-0001.html", tmp_path / "index.html"):
        html = page.read_text()
        assert "<script" not in html and "<img" not in html, page.name
        assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in (tmp_path / "similar" / "pair-0001.html").read_text()


def test_grader_report_lists_the_pairs_from_the_gradebook(tmp_path, capsys):
    book = tmp_path / "book.sqlite"
    gradebook = Gradebook(book)
    for student, notebook in (("ana", REFERENCE), ("ben", disguised(REFERENCE)), ("carl", PARTIAL),
                              ("s1", STARTER), ("s2", STARTER)):
        gradebook.store(result(student, notebook))
    reports = tmp_path / "reports"
    assert main(["report", "assignment01", "--course", str(REPO), "--gradebook", str(book),
                 "--reports", str(reports), "--no-notebook-html"]) == 0
    html = (reports / "index.html").read_text()
    assert "ana · ben" in html and html.count('href="similar/pair-') == 1
    assert main(["report", "assignment01", "--course", str(REPO), "--gradebook", str(book),
                 "--reports", str(reports), "--no-notebook-html", "--similar", "20"]) == 0
    assert "ana · carl" in (reports / "index.html").read_text()


# Weights of the trained models: digests made in the trusted checker, stored as plain data ---------

class FakeModel:
    def __init__(self, *weights):
        self.weights = [np.asarray(w) for w in weights]

    def get_weights(self):
        return self.weights


class BrokenModel:
    def get_weights(self):
        raise RuntimeError("no weights")


def test_the_weights_digest_changes_with_any_value_dtype_or_shape():
    digest = weights_digest(FakeModel([[1.0, 2.0]], [0.5]))
    assert len(digest) == 64 and digest == weights_digest(FakeModel([[1.0, 2.0]], [0.5]))
    assert digest != weights_digest(FakeModel([[1.0, 2.5]], [0.5]))
    assert digest != weights_digest(FakeModel(np.array([[1.0, 2.0]], dtype="float32"), [0.5]))
    assert digest != weights_digest(FakeModel([[1.0], [2.0]], [0.5]))
    assert weights_digest(BrokenModel()) == ""


def test_the_view_records_the_weights_of_each_model_the_checks_load():
    class Link:
        def fetch(self, name, call=None):
            return SimpleNamespace(kind="model", type="Sequential", value=FakeModel([1.0, 2.0]))

    view = SubmissionView(Link(), "")
    view.model("model")
    assert view.weights == {"model": weights_digest(FakeModel([1.0, 2.0]))}


def test_the_checkers_weights_are_read_back_as_digests_only(tmp_path):
    good = "ab" * 32
    (tmp_path / "r.json").write_text(json.dumps({"checks": [
        {"name": "t", "description": "", "public": True, "max_points": 1, "points": 1,
         "outcome": "passed"}],
        "weights": {"model": good, "other": "<script>", "third": 5}}))
    checks = _read_results(tmp_path / "r.json", 0, "", 1.0)
    assert checks.weights == {"model": good} and not checks.problem


def test_weights_survive_the_gradebook_and_older_rows_have_none(tmp_path):
    import sqlite3

    path = tmp_path / "g.sqlite"
    Gradebook(path).store(result("old", None))
    with sqlite3.connect(path) as db:  # what an earlier release made: no weights column
        before_migrations(db)
        db.execute("ALTER TABLE grading_runs DROP COLUMN weights")
    book = Gradebook(path)
    new = result("new", None)
    new.weights = {"model": "cd" * 32}
    book.store(new)
    assert {r.student: r.weights for r in book.latest("assignment01")} == {
        "old": {}, "new": {"model": "cd" * 32}}


def test_identical_weights_list_a_pair_whose_code_is_half_alike():
    code = "".join(json.loads(REFERENCE)["cells"][5]["source"])
    ana, ben = result("ana", REFERENCE), result("ben", with_code(
        disguised(REFERENCE), 5, code.replace("Adam(learning_rate=0.05)", "RMSprop()")))
    strict = {"threshold": 0.999, "result_threshold": 0.5}
    assert similar_pairs([ana, ben], STARTER, **strict) == []
    ana.weights, ben.weights = {"model": "ef" * 32}, {"model": "ef" * 32}
    pairs = similar_pairs([ana, ben], STARTER, **strict)
    assert students(pairs) == [{"ana", "ben"}]
    assert "identical weights of the trained model (model)" in pairs[0].why


def test_odd_notebooks_pair_with_nobody_and_break_nothing():
    odd = [result("not-json", "{"), result("no-cells", '{"cells": 5}'),
           result("odd-cells", json.dumps({"cells": [7, {"cell_type": "code", "source": [1, 2],
                                                          "outputs": [{"data": 3}, "x"]}]})),
           result("magic", with_code(PARTIAL, 3, "%matplotlib inline\n!pip install x\nmeans = (")),
           result("ana", REFERENCE), result("ben", disguised(REFERENCE))]
    assert students(similar_pairs(odd, STARTER)) == [{"ana", "ben"}]
