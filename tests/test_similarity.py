"""Copied work: similar pairs from the stored notebooks, on the staff pages only. No kernel runs."""

import json

from grader import similarity
from grader.cli import main
from grader.gradebook import Gradebook
from grader.report import feedback_name, write_feedback, write_summary
from grader.score import Result
from grader.similarity import normalise, similar_pairs
from tests.conftest import REPO

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
    assert "identical training or prediction output (cell 5/5)" in pairs[0].why
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
