import nbformat

from grader.course.release import CODE_STUB, MARKDOWN_STUB, find_leaks, make_starter
from grader.model.assignments import load_assignment
from tests.conftest import REPO, notebook


def source_notebook():
    nb = notebook(
        "import numpy as np\n### BEGIN SOLUTION\nanswer = compute_the_answer(42)\n### END SOLUTION",
        "def f(x):\n    ### BEGIN SOLUTION\n    return np.sqrt(x) + offset_value\n    ### END SOLUTION",
    )
    nb.cells.append(nbformat.v4.new_markdown_cell(
        "Why?\n### BEGIN SOLUTION\nBecause the gradient vanishes.\n### END SOLUTION"))
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="42\n")]
    nb.cells[0].execution_count = 3
    return nb


def test_starter_replaces_solutions_keeping_indentation():
    starter = make_starter(source_notebook())
    assert starter.cells[0].source == f"import numpy as np\n{CODE_STUB}"
    assert starter.cells[1].source == f"def f(x):\n    {CODE_STUB}"
    assert starter.cells[2].source == f"Why?\n{MARKDOWN_STUB}"
    assert starter.cells[0].outputs == [] and starter.cells[0].execution_count is None


def test_clean_starter_has_no_leaks():
    source = source_notebook()
    assert find_leaks(make_starter(source), source, ["assert answer == 42, 'hidden check line'"]) == []


def test_solution_text_anywhere_in_the_starter_is_a_leak():
    source = source_notebook()
    starter = make_starter(source)
    starter.cells[2].source += "\nBecause the gradient vanishes."
    starter.metadata["notes"] = "answer = compute_the_answer(42)"
    leaks = find_leaks(starter, source, [])
    assert "solution line 'Because the gradient vanishes.'" in leaks
    assert "solution line 'answer = compute_the_answer(42)'" in leaks


HIDDEN = """def test_answer(submission, hidden):
    expected = load_hidden_answers(hidden)
    assert submission.number("answer") == expected, "answer is wrong"
"""


def test_a_hidden_check_pasted_into_the_notebook_is_a_leak():
    source = source_notebook()
    starter = make_starter(source)
    starter.cells[1].source += "\n    expected = load_hidden_answers(hidden)\n" \
        '    assert submission.number("answer") == expected, "answer is wrong"'
    leaks = find_leaks(starter, source, [HIDDEN])
    assert any(leak.startswith("hidden check lines") for leak in leaks)


def test_hidden_check_names_and_paths_are_leaks():
    source = source_notebook()
    starter = make_starter(source)
    starter.cells[0].source += "\n# run test_answer from checks/hidden/test_a.py to see"
    leaks = find_leaks(starter, source, [HIDDEN])
    assert "hidden check name 'test_answer'" in leaks
    assert any(leak.startswith("path into the hidden checks") for leak in leaks)


def test_one_shared_line_is_not_a_leak():
    source = source_notebook()
    starter = make_starter(source)
    starter.cells[0].source += "\nexpected = load_hidden_answers(hidden)"
    assert find_leaks(starter, source, [HIDDEN]) == []


def test_committed_starters_reproduce_byte_for_byte():
    for folder in sorted((REPO / "assignments").iterdir()):
        if not (folder / "assignment.toml").exists():
            continue
        assignment = load_assignment(REPO, folder.name)
        source = nbformat.read(assignment.source_notebook, as_version=4)
        expected = nbformat.writes(make_starter(source)) + "\n"
        assert assignment.release_notebook.read_text(encoding="utf-8") == expected, folder.name
