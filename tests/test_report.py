import shutil
import subprocess

import pytest

from grader.plugin import Attachment, CheckOutcome
from grader.report import feedback_name, write_feedback, write_summary
from grader.score import Result

PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


def result(student: str, score: float, status: str = "graded", reason: str = "") -> Result:
    return Result(
        student=student, assignment="a1", notebook="n.ipynb", sha256="ab" * 32,
        checks_sha256="c", status=status, reason=reason, score=score, max_score=4,
        checks=[
            CheckOutcome("test_a", "the <b>mean</b> is right", True, 2, min(score, 2),
                         "passed" if score >= 2 else "failed", ""),
            CheckOutcome("test_b", "", False, 2, max(0, score - 2), "failed",
                         "expected 0.9, found <script>alert(1)</script>",
                         [Attachment("image", "curve", PNG), Attachment("text", "note", "a < b")]),
        ],
        failed_cell=None if status == "graded" else {
            "index": 2, "source": "print('<img src=x onerror=alert(1)>')", "ename": "ValueError",
            "evalue": "bad <value>", "traceback": "Traceback ...\nValueError: bad <value>"},
        execution_s=1.5, kernel_start_s=0.5, checks_s=1.0,
    )


def test_feedback_shows_score_checks_error_and_plots_escaped(tmp_path):
    page = write_feedback(result("<script>x</script>", 3, "cell_error", "cell 3 raised ValueError"),
                          title="A1", folder=tmp_path, notebook_html=False)
    html = page.read_text()
    assert page.name == feedback_name("<script>x</script>") and "/" not in page.name
    assert "3 / 4" in html and "cell 3 raised ValueError" in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert f"data:image/png;base64,{PNG}" in html
    assert "hidden" in html and "public" in html
    assert "not isolated" in html


def test_feedback_links_the_executed_notebook(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    r = result("alice", 4)
    cell = new_code_cell("display()")
    cell.outputs = [new_output("display_data", data={"text/html": "<script>alert(1)</script><b>ok</b>"})]
    r.executed_notebook = nbformat.writes(new_notebook(cells=[cell]))
    page = write_feedback(r, title="A1", folder=tmp_path, notebook_html=True)
    notebook_page = tmp_path / "alice.notebook.html"
    assert 'href="alice.notebook.html"' in page.read_text()
    assert "<script>alert(1)" not in notebook_page.read_text(), "student HTML is sanitised"


def test_summary_has_histogram_pass_rates_runtimes_and_failures(tmp_path):
    results = [result("a", 4), result("b", 2), result("c", 0, "timeout", "cell 2 ran too long")]
    html = write_summary(results, assignment="a1", title="A1", folder=tmp_path).read_text()
    assert "3 submissions" in html and "mean 2.00" in html
    assert html.count('class="bar"') == 10
    assert "cell 2 ran too long" in html and 'href="c.html"' in html
    assert "67%" in html  # test_a passed by two of three


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: `apt-get install -y chromium` (.ci/run does)")
    return path


@pytest.mark.slow
def test_pages_render_in_headless_chromium_without_console_errors(tmp_path):
    results = [result("alice", 4), result("bob", 1, "cell_error", "cell 3 raised ValueError")]
    pages = [write_feedback(r, title="A1", folder=tmp_path, notebook_html=False) for r in results]
    pages.append(write_summary(results, assignment="a1", title="A1", folder=tmp_path))
    for page in pages:
        shot = page.with_suffix(".png")
        run = subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
             "--window-size=1100,1600", f"--screenshot={shot}", page.as_uri()],
            capture_output=True, text=True, timeout=120,
        )
        console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
        assert console == [], f"{page.name}: {console}"
        assert shot.exists() and shot.stat().st_size > 10_000, run.stderr[-2000:]
