import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from grader.model.outcomes import Attachment, CheckOutcome
from grader.model.result import Result
from grader.reports import renderer as rendering
from grader.reports.pages import (
    ReportError,
    feedback_name,
    notebook_name,
    phases_line,
    write_feedback,
    write_feedback_pages,
    write_summary,
)
from grader.reports.renderer import Renderer, RenderLimits, scrub_paths

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


def test_feedback_links_the_executed_notebook(tmp_path):
    r = result("alice", 4)
    cell = new_code_cell("display()")
    cell.outputs = [new_output("display_data", data={"text/html": "<script>alert(1)</script><b>ok</b>"})]
    r.executed_notebook = nbformat.writes(new_notebook(cells=[cell]))
    page = write_feedback(r, title="A1", folder=tmp_path, notebook_html=True)
    notebook_page = tmp_path / notebook_name("alice")
    assert f'href="{notebook_page.name}"' in page.read_text()
    assert "<script>alert(1)" not in notebook_page.read_text(), "student HTML is sanitised"
    assert "<b>ok</b>" in notebook_page.read_text()


def test_notebook_page_renders_markdown_and_still_cleans_student_html(tmp_path):
    r = result("alice", 4)
    cell = new_code_cell("show()")
    cell.outputs = [new_output("display_data", data={
        "text/html": "<p onclick='steal()'>table</p><script>alert(1)</script><img src=x onerror=alert(2)>"})]
    markdown = new_markdown_cell("# Title\n\nSome *words*, a [link](javascript:alert(3)) "
                                 "and <script>alert(4)</script>\n\n| a | b |\n|---|---|\n| 1 | 2 |")
    r.executed_notebook = nbformat.writes(new_notebook(cells=[markdown, cell]))
    write_feedback(r, title="A1", folder=tmp_path, notebook_html=True)
    html = (tmp_path / notebook_name("alice")).read_text()
    assert re.search(r"<h1[^>]*>Title", html) and "<em>words</em>" in html and "<td>1</td>" in html
    assert "&lt;h1" not in html and "&lt;p&gt;" not in html, "markdown shows as HTML, not as tags"
    assert "alert(1)</script>" not in html and "<script>alert(4)" not in html
    assert "onerror" not in html and "onclick" not in html and "javascript:alert(3)" not in html


def test_student_pages_show_no_host_path_nor_staff_detail(tmp_path):
    site_packages = next(p for p in sys.path if p.endswith("site-packages"))
    home, run = str(Path.home()), "/tmp/grader-x1y2z3/kernel.json"
    where = [f"{site_packages}/numpy/core.py", f"{sys.prefix}/bin/python", f"{home}/course/checks.py", run]
    r = result("bob", 1, "cell_error", f"cell 3 raised ValueError at {where[0]}")
    r.failed_cell["traceback"] = "\n".join(f'File "{w}", line 3' for w in where)
    r.checks[1].message = f"could not read {where[3]}"
    r.staff_detail = "STAFF ONLY: the checker's traceback"
    r.sandboxed = False
    cell = new_code_cell("1/0")
    cell.outputs = [new_output("error", ename="ValueError", evalue=where[2], traceback=where),
                    new_output("stream", name="stderr", text=f"{where[0]}:12: UserWarning")]
    r.executed_notebook = nbformat.writes(new_notebook(cells=[cell]))
    page = write_feedback(r, title="A1", folder=tmp_path, notebook_html=True)
    for html in (page.read_text(), (tmp_path / notebook_name("bob")).read_text()):
        for path in (site_packages, sys.prefix, home, "/tmp/grader-x1y2z3"):
            assert path not in html, f"{path} shown to the student"
        assert "numpy/core.py" in html, "the traceback stays readable"
    assert "STAFF ONLY" not in page.read_text() and "not isolated" not in page.read_text()


def test_a_lone_surrogate_in_student_text_does_not_break_the_page(tmp_path):
    r = result("bob", 1, "cell_error", "cell 3 raised ValueError: \ud800")
    r.checks[1].message = "found \udcff"
    assert "ValueError: ?" in write_feedback(r, title="A1", folder=tmp_path, notebook_html=False).read_text()


def test_the_failed_cell_is_named_as_the_executed_notebook_shows_it(tmp_path):
    r = result("bob", 1, "cell_error", "code cell 2 raised ValueError")
    assert "Cell 3:" in write_feedback(r, title="A1", folder=tmp_path, notebook_html=False).read_text()
    r.failed_cell.update(code_index=1, execution_count=2)
    html = write_feedback(r, title="A1", folder=tmp_path, notebook_html=False).read_text()
    assert "Code cell 2 (In [2] in your executed notebook):" in html


def test_scrub_paths_keeps_text_that_only_looks_like_a_prefix():
    home = str(Path.home())
    assert scrub_paths(f"{home}/x and {home}x") == f"~/x and {home}x"


def test_grader_problems_show_only_on_the_summary_and_count_for_nothing(tmp_path):
    broken = result("carol", 0, "error", "the grader failed; the staff will regrade")
    broken.staff_detail = "TypeError in checks/test_a.py line 3"
    broken.failed_cell = None
    broken.sandboxed = False
    results = [result("a", 4), result("b", 2), broken]
    html = write_summary(results, assignment="a1", title="A1", folder=tmp_path).read_text()
    assert "not graded: grader problem" in html and "TypeError in checks/test_a.py line 3" in html
    assert "mean 3.00" in html and "median 3.00" in html, "the error is not a score of 0"
    counts = [int(n) for n in re.findall(r'class="axis count"[^>]*>(\d+)<', html)]
    assert sum(counts) == 2, counts
    assert "without the grader's sandbox" in html
    page = write_feedback(broken, title="A1", folder=tmp_path, notebook_html=False).read_text()
    assert "TypeError" not in page and "not your fault" in page
    # a fault is not a score: neither the page's total nor a check's points read as zero
    assert "Not graded yet" in page and not re.search(r"\b0 / \d", page), page


def test_runtimes_are_over_notebooks_that_ran(tmp_path):
    ran = result("a", 4)
    invalid = result("b", 0, "invalid", "not JSON")
    invalid.execution_s = invalid.kernel_start_s = invalid.checks_s = 0.0
    html = write_summary([ran, invalid], assignment="a1", title="A1", folder=tmp_path).read_text()
    assert "<td>execution</td><td>1.5 s</td><td>1.5 s</td><td>1.5 s</td>" in html
    only_invalid = write_summary([invalid], assignment="a1", title="A1", folder=tmp_path).read_text()
    assert "No notebook ran" in only_invalid and "<td>0.0 s</td>" not in only_invalid


def test_page_names_never_collide(tmp_path):
    students = ["alice", "alice.notebook", "alice~notebook", "alice.html", "index", "Index",
                "a/b", "a_b", "ålice", "alice~notebook.html"]
    names = [feedback_name(s) for s in students] + [notebook_name(s) for s in students]
    assert len(set(names)) == len(names), names
    assert all("/" not in n for n in names) and "index.html" not in names
    assert feedback_name("alice") == "alice.html"
    for s in students:
        r = result(s, 4)
        if s == "alice":  # its notebook page was alice.notebook's feedback page
            r.executed_notebook = nbformat.writes(new_notebook(cells=[new_code_cell("x = 1")]))
        write_feedback(r, title="A1", folder=tmp_path, notebook_html=True)
    write_summary([result(s, 4) for s in students], assignment="a1", title="A1", folder=tmp_path)
    assert len(list(tmp_path.glob("*.html"))) == len(students) + 1 + 1
    assert "4 / 4" in (tmp_path / feedback_name("alice.notebook")).read_text()


def test_a_notebook_too_slow_to_render_leaves_a_plain_page(tmp_path):
    r = result("mallory", 4)
    r.executed_notebook = nbformat.writes(new_notebook(cells=[new_markdown_cell("[" * 100_000)]))
    with pytest.raises(ReportError, match="could not be rendered") as caught:
        write_feedback(r, title="A1", folder=tmp_path, notebook_html=True,
                       limits=RenderLimits(seconds=3))
    assert "3 s" in str(caught.value)
    assert "could not be shown" in (tmp_path / notebook_name("mallory")).read_text()
    assert "4 / 4" in (tmp_path / feedback_name("mallory")).read_text()


def test_one_page_that_cannot_be_rendered_does_not_stop_the_others(tmp_path):
    slow, fine = result("mallory", 4), result("zoe", 3)
    slow.executed_notebook = nbformat.writes(new_notebook(cells=[new_markdown_cell("[" * 100_000)]))
    problems = write_feedback_pages([slow, fine], title="A1", folder=tmp_path, notebook_html=True,
                                    limits=RenderLimits(seconds=2))
    assert len(problems) == 1 and "mallory" in problems[0]
    assert "3 / 4" in (tmp_path / feedback_name("zoe")).read_text()


def test_a_render_over_its_memory_limit_leaves_a_plain_page(tmp_path):
    r = result("mallory", 4)
    r.executed_notebook = nbformat.writes(new_notebook(cells=[new_markdown_cell("# hi")]))
    with pytest.raises(ReportError, match="could not be rendered"):
        write_feedback(r, title="A1", folder=tmp_path, notebook_html=True,
                       limits=RenderLimits(memory_mb=60))
    assert "could not be shown" in (tmp_path / notebook_name("mallory")).read_text()


def _rich_notebook() -> str:
    return nbformat.writes(new_notebook(cells=[
        new_markdown_cell("# Title\n\nsome *text* <script>alert(1)</script>"),
        new_code_cell("print('hi')", outputs=[new_output("stream", name="stdout", text="hi\n")]),
        new_code_cell("x", outputs=[new_output("display_data", data={"image/png": PNG})]),
    ]))


def test_the_warm_renderer_writes_the_page_a_cold_child_writes(tmp_path):
    r = result("alice", 4)
    r.executed_notebook = _rich_notebook()
    cold = write_feedback(r, title="A1", folder=tmp_path / "cold", notebook_html=True)
    renderer = Renderer()
    try:
        warm = write_feedback(r, title="A1", folder=tmp_path / "warm", notebook_html=True,
                              renderer=renderer)
        assert renderer.process is not None and renderer.process.poll() is None  # it served
    finally:
        renderer.close()
    page = notebook_name("alice")
    assert (warm.parent / page).read_text() == (cold.parent / page).read_text()
    assert "hi" in (warm.parent / page).read_text() and "<script>" not in (warm.parent / page).read_text()


def test_the_exporter_is_made_once_and_keeps_nothing_of_one_page_for_the_next():
    other = nbformat.writes(new_notebook(cells=[
        new_markdown_cell("## Another\n\n| a | b |\n|---|---|\n| 1 | 2 |"),
        new_code_cell("raise ValueError('x')", outputs=[new_output(
            "error", ename="ValueError", evalue="x", traceback=["Traceback", "ValueError: x"])]),
    ]))
    rich = _rich_notebook()  # once: its cells' ids are random
    rendering._exporter.cache_clear()
    fresh = {}
    for name, text in (("rich", rich), ("other", other)):
        fresh[name] = rendering.notebook_html(text)
        rendering._exporter.cache_clear()
    first = rendering._exporter()
    after_each_other = [rendering.notebook_html(text) for text in (other, rich, other)]
    assert rendering._exporter() is first  # one exporter, its templates compiled once
    assert after_each_other == [fresh["other"], fresh["rich"], fresh["other"]]
    assert "ValueError" in fresh["other"] and "<script>" not in fresh["rich"]


def test_the_warm_renderer_holds_each_page_to_its_limits_and_goes_on(tmp_path):
    slow, big, fine = result("mallory", 4), result("trudy", 4), result("zoe", 3)
    slow.executed_notebook = nbformat.writes(new_notebook(cells=[new_markdown_cell("[" * 100_000)]))
    fine.executed_notebook = _rich_notebook()
    # Megabytes of output: the page cannot be rendered in memory the forked child already holds
    big.executed_notebook = nbformat.writes(new_notebook(cells=[new_code_cell("print(s)", outputs=[
        new_output("stream", name="stdout", text="x" * 8_000_000)])]))
    renderer = Renderer()
    try:
        with pytest.raises(ReportError, match="longer than 2 s"):
            write_feedback(slow, title="A1", folder=tmp_path, notebook_html=True,
                           limits=RenderLimits(seconds=2), renderer=renderer)
        with pytest.raises(ReportError, match="more than 60 MB"):
            write_feedback(big, title="A1", folder=tmp_path, notebook_html=True,
                           limits=RenderLimits(memory_mb=60), renderer=renderer)
        server = renderer.process
        write_feedback(fine, title="A1", folder=tmp_path, notebook_html=True, renderer=renderer)
        assert renderer.process is server and server is not None and server.poll() is None
    finally:
        renderer.close()
    assert "could not be shown" in (tmp_path / notebook_name("mallory")).read_text()
    assert "could not be shown" in (tmp_path / notebook_name("trudy")).read_text()
    assert "hi" in (tmp_path / notebook_name("zoe")).read_text()


def test_a_renderer_that_died_is_started_again_for_the_next_page(tmp_path):
    r = result("alice", 4)
    r.executed_notebook = _rich_notebook()
    renderer = Renderer()
    try:
        renderer.start()
        dead = renderer.process
        assert dead is not None
        dead.kill()
        dead.wait()
        write_feedback(r, title="A1", folder=tmp_path, notebook_html=True, renderer=renderer)
        assert renderer.process is not None and renderer.process is not dead
        assert renderer.process.poll() is None
    finally:
        renderer.close()
    assert "hi" in (tmp_path / notebook_name("alice")).read_text()


def test_a_page_the_renderer_cannot_answer_for_is_rendered_by_a_cold_child(tmp_path, monkeypatch):
    monkeypatch.setattr(rendering, "module_command",
                        lambda module: [sys.executable, "-c", "import sys; sys.exit(3)"])
    r = result("alice", 4)
    r.executed_notebook = _rich_notebook()
    renderer = Renderer()
    try:
        write_feedback(r, title="A1", folder=tmp_path, notebook_html=True, renderer=renderer)
        assert renderer.process is None  # given up on
    finally:
        renderer.close()
    assert "hi" in (tmp_path / notebook_name("alice")).read_text()


def test_summary_has_histogram_pass_rates_runtimes_and_failures(tmp_path):
    results = [result("a", 4), result("b", 2), result("c", 0, "timeout", "cell 2 ran too long")]
    html = write_summary(results, assignment="a1", title="A1", folder=tmp_path).read_text()
    assert "3 submissions" in html and "mean 2.00" in html
    assert html.count('class="bar"') == 10
    assert "cell 2 ran too long" in html and f'href="{feedback_name("c")}"' in html
    assert "67%" in html  # test_a passed by two of three
    for phase in ("queue wait", "kernel start", "warm-up", "execution", "checks", "store", "report"):
        assert f"<td>{phase}</td>" in html


def test_the_closing_line_gives_each_phase_and_the_graders_overhead():
    done = [result("a", 4), result("b", 2), result("c", 0, "invalid", "not a notebook")]
    for r, (start, warm, run, check) in zip(done, [(1, 2, 10, 3), (3, 0, 20, 5), (0, 0, 0, 0)]):
        r.kernel_start_s, r.warmup_s, r.execution_s, r.checks_s = start, warm, run, check
    line = phases_line(done, seconds=24.0, workers=2)
    assert "kernel start 2.00" in line and "warm-up 1.00" in line and "execution 15.00" in line
    assert "checks 4.00" in line
    # 2 workers x 24 s = 48 s of slots, 38 s executing and checking: 10 s over 3 submissions
    assert "8.00 s per submission with 2 worker(s), of which 3.33 s the grader's own overhead" in line
    assert "batch's start" not in line  # none measured (Ray's batches)
    timed = phases_line(done, seconds=24.0, workers=2, start_s=4.5)
    assert timed.startswith(line) and "the batch's start, until its first notebook ran: 4.50 s" in timed
    assert phases_line([done[2]], seconds=1.0, workers=1) == ""
    # one slot gave its last result at 12 s and then had nothing left while the other ran on
    # until 29 s (the batch closed at 30 s): 12 + 29 + 1 = 42 s of slots, 4 s over 3 submissions
    tail = phases_line(done, seconds=30.0, workers=2, slot_ends=[29.0, 12.0])
    assert "of which 1.33 s the grader's own overhead" in tail
    assert "of which 7.33 s" in phases_line(done, seconds=30.0, workers=2)  # the idle slot counted


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


MEASURE = """<script>
window.addEventListener("load", () => {
  const svg = document.querySelector("svg").getBoundingClientRect();
  const clipped = [...document.querySelectorAll("svg text")].filter(t => {
    const box = t.getBoundingClientRect();
    return box.top < svg.top || box.bottom > svg.bottom;
  });
  document.body.dataset.clipped = String(clipped.length);
});
</script>"""


@pytest.mark.slow
def test_the_count_over_the_tallest_bar_is_not_clipped(tmp_path):
    results = [result(f"s{i}", 4) for i in range(5)] + [result("t", 1)]
    page = write_summary(results, assignment="a1", title="A1", folder=tmp_path)
    measured = tmp_path / "measured.html"
    measured.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    run = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,1600",
         "--virtual-time-budget=2000", "--dump-dom", measured.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    found = re.search(r'data-clipped="(\d+)"', run.stdout)
    assert found, run.stderr[-2000:]
    assert found.group(1) == "0", "a count or label is cut off by the chart's edge"


def test_a_page_is_current_only_while_it_shows_the_very_run_and_its_notebook_page(tmp_path):
    from dataclasses import replace
    from datetime import timedelta

    from grader.reports.pages import page_is_current

    r = result("alice", 4)
    r.executed_notebook = nbformat.writes(new_notebook(cells=[new_code_cell("x = 1")]))
    assert not page_is_current(r, title="A1", folder=tmp_path, notebook_html=True)  # none yet
    write_feedback(r, title="A1", folder=tmp_path, notebook_html=True)
    assert page_is_current(r, title="A1", folder=tmp_path, notebook_html=True)
    assert page_is_current(r, title="A1", folder=tmp_path, notebook_html=None)
    assert not page_is_current(r, title="A1", folder=tmp_path, notebook_html=False)
    # the same notebook and score, graded again a second later: another run, another page
    again = replace(r, graded_at=r.graded_at + timedelta(seconds=1))
    assert not page_is_current(again, title="A1", folder=tmp_path, notebook_html=True)
    (tmp_path / notebook_name("alice")).unlink()
    assert not page_is_current(r, title="A1", folder=tmp_path, notebook_html=True)
