"""Staff review and overrides: the rubric config, overrides in the gradebook, the final score,
flagging on a changed notebook, the review page's token, CSRF and binding, and (in headless
Chromium) the whole path from the page to `grader run`, the student's page and the export."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import nbformat
import pytest
from nbformat.v4 import new_markdown_cell

from grader.cli.run import validation_problems
from grader.course import export
from grader.course.review import HOST, Review, bind, make_override, written_answer
from grader.grading.preflight import CollectedCheck, check_points
from grader.model import late
from grader.model.assignments import load_assignment
from grader.model.config import load_config
from grader.model.errors import AssignmentError, GraderError
from grader.model.outcomes import CheckOutcome
from grader.model.result import Override, Result, attach_overrides, override_points
from grader.reports.pages import write_feedback, write_summary
from grader.store.gradebook import Gradebook
from tests.conftest import TINY_SOLUTION, before_migrations, notebook
from tests.reports.test_report import chromium

RUBRIC = '''
[[rubric]]
name = "q1"
cell = "Why squares"
points = 2
description = "says why squaring keeps the order of non-negative values"
'''
ANSWER = "## Why squares\nBecause x is never negative, squaring keeps its order."
SHA = "a" * 64


@pytest.fixture
def rubric_course(course: Path) -> Path:
    """The tiny course with a written answer worth 2 of its 8 points."""
    config = course / "assignments" / "tiny" / "assignment.toml"
    config.write_text(config.read_text().replace("points = 6", "points = 8") + RUBRIC)
    return course


def executed(*markdown: str) -> str:
    nb = notebook("x = 1")
    nb.cells[:0] = [new_markdown_cell(m) for m in markdown]
    return nbformat.writes(nb)


def stored_result(student: str = "alice", sha256: str = SHA, **changes: object) -> Result:
    result = Result(
        student=student, assignment="tiny", notebook=f"{student}.ipynb", sha256=sha256,
        checks_sha256="key", status="graded", reason="", score=5.0, max_score=8.0,
        checks=[CheckOutcome("test_total", "total is the sum of x", True, 1, 1, "passed"),
                CheckOutcome("test_guess", "the guess", False, 5, 4, "partial", "close")],
        executed_notebook=executed("# Tiny", ANSWER),
        submitted_at=datetime(2026, 3, 1, 12, tzinfo=UTC))
    for name, value in changes.items():
        setattr(result, name, value)
    return result


def override(kind: str, item: str, points: float, sha256: str = SHA, was: float | None = None) -> Override:
    return Override(kind=kind, item=item, points=points, comment=f"{item} reviewed", reviewer="ada",
                    made_at=datetime(2026, 3, 2, 9, tzinfo=UTC), sha256=sha256, was=was)


# The rubric in assignment.toml -------------------------------------------------------------------

def test_the_rubric_is_read_and_its_points_are_part_of_the_total(rubric_course):
    config = load_config(rubric_course / "assignments" / "tiny" / "assignment.toml")
    assert [(i.name, i.cell, i.points) for i in config.rubric] == [("q1", "Why squares", 2.0)]
    assert config.rubric_points == 2 and config.check_points == 6


@pytest.mark.parametrize("rubric, expected", [
    ('[[rubric]]\nname = "q1"\ncell = "c"\n', "rubric[1].points is missing"),
    ('[[rubric]]\nname = "q1"\ncell = "c"\npoints = -1\n', "rubric[1].points must be"),
    ('[[rubric]]\nname = "q1"\ncell = "c"\npoints = 1\nweight = 2\n', "unknown key rubric[1].weight"),
    ('[[rubric]]\nname = "q1"\ncell = "c"\npoints = 1\n[[rubric]]\nname = "q1"\ncell = "d"\npoints = 1\n',
     "rubric[2].name 'q1' is used twice"),
    ('[[rubric]]\nname = "q1"\ncell = "c"\npoints = 6\n', "leave points for the checks"),
    ('rubric = "q1"\n', "rubric must be a list of tables"),
])
def test_a_bad_rubric_is_one_line(course, rubric, expected):
    config = course / "assignments" / "tiny" / "assignment.toml"
    text = config.read_text()
    config.write_text(text + rubric if rubric.startswith("[[") else rubric + text)
    with pytest.raises(AssignmentError) as error:
        load_config(config)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_a_rubric_description_change_regrades_nothing_and_a_points_change_does(rubric_course):
    config = rubric_course / "assignments" / "tiny" / "assignment.toml"
    key = load_assignment(rubric_course, "tiny").grading_key("data")
    config.write_text(config.read_text().replace("says why squaring", "explains why squaring"))
    assert load_assignment(rubric_course, "tiny").grading_key("data") == key
    config.write_text(config.read_text().replace("points = 8", "points = 9").replace("points = 2", "points = 3"))
    assert load_assignment(rubric_course, "tiny").grading_key("data") != key


def test_the_checks_must_be_worth_the_points_less_the_rubric(rubric_course):
    assignment = load_assignment(rubric_course, "tiny")
    checks = [CollectedCheck(f"test_{n}", "t.py", True, 3, True) for n in range(2)]
    check_points(assignment, checks)  # 8 points, 2 of them the rubric's
    with pytest.raises(GraderError, match="says points = 8 less the rubric's 2: make them agree"):
        check_points(assignment, [*checks, CollectedCheck("test_x", "t.py", True, 2, True)])
    reference = stored_result(score=6.0, checks=[CheckOutcome("test_a", "", True, 6, 6, "passed")])
    starter = stored_result(score=0.0, checks=[CheckOutcome("test_a", "", True, 6, 0, "failed")])
    assert validation_problems(assignment, reference, starter) == []
    reference.score = 5.0
    assert "the reference got 5/6 from the checks" in validation_problems(assignment, reference, starter)[0]


def test_the_written_answer_is_found_by_cell_id_or_heading():
    text = executed("# Tiny", ANSWER, "more of the answer")
    assert written_answer(text, "why squares").startswith("## Why squares")
    assert "more of the answer" in written_answer(text, "Why squares")
    cell_id = json.loads(text)["cells"][1]["id"]
    assert written_answer(text, cell_id) == ANSWER
    assert written_answer(text, "no such heading") == "" and written_answer(None, "x") == ""


# The final score -------------------------------------------------------------------------------

def test_the_final_score_is_checks_with_overrides_plus_rubric_less_the_late_penalty(rubric_course):
    assignment = load_assignment(rubric_course, "tiny")
    config = assignment.root / "assignment.toml"
    config.write_text(config.read_text().replace(
        "[limits]", '[deadline]\ndue = "2026-03-01T00:00:00+00:00"\nrate = 0.125\n\n[limits]'))
    policy = late.load_policy(load_assignment(rubric_course, "tiny"))
    result = stored_result()
    attach_overrides(result, [override("check", "test_guess", 5, was=4), override("rubric", "q1", 1.5)])
    assert override_points(result) == 2.5
    assert late.apply_late(result, policy)
    # 5 from the checks, +1 for test_guess, +1.5 for q1: 7.5, less 1 started day x 12.5% of 8
    assert (result.raw_score, result.late_penalty, result.score) == (5.0, 1.0, 6.5)


def test_overrides_never_take_the_score_below_zero_or_above_the_maximum():
    result = stored_result(score=7.5)
    attach_overrides(result, [override("check", "test_guess", 5, was=4), override("rubric", "q1", 2)])
    late.apply_late(result, None)
    assert result.score == 8.0
    low = stored_result(score=0.5)
    attach_overrides(low, [override("check", "test_total", 0, was=1)])
    late.apply_late(low, None)
    assert low.score == 0.0


def test_an_override_made_on_another_notebook_is_flagged_and_not_applied():
    result = stored_result(sha256="b" * 64)
    attach_overrides(result, [override("check", "test_guess", 5), override("rubric", "q1", 2),
                              override("check", "test_gone", 1, sha256="b" * 64)])
    assert [o.needs_review for o in result.overrides] == [True, True, True]
    late.apply_late(result, None)
    assert result.score == 5.0


# The gradebook ---------------------------------------------------------------------------------

def test_overrides_are_stored_with_who_when_why_and_the_latest_counts(tmp_path):
    book = Gradebook(tmp_path / "g.sqlite")
    book.store(stored_result())
    book.add_override("tiny", "alice", override("check", "test_guess", 3, was=4))
    book.add_override("tiny", "alice", override("check", "test_guess", 4.5, was=4))
    book.add_override("tiny", "alice", override("rubric", "q1", 2))
    latest = book.overrides("tiny")["alice"]
    assert [(o.kind, o.item, o.points) for o in latest] == [("check", "test_guess", 4.5), ("rubric", "q1", 2)]
    assert latest[0].reviewer == "ada" and latest[0].comment == "test_guess reviewed"
    assert latest[0].made_at == datetime(2026, 3, 2, 9, tzinfo=UTC) and latest[0].sha256 == SHA
    assert len(book.overrides("tiny", history=True)["alice"]) == 3
    (result,) = book.latest("tiny")
    assert [o.points for o in result.overrides] == [4.5, 2]
    assert result.score == 5.0, "stored scores change only when restated"
    book.restate_late("tiny", lambda r: late.apply_late(r, None))
    assert book.latest("tiny")[0].score == 7.5  # 5, +0.5 for test_guess, +2 for q1


def test_an_older_gradebook_opens_and_gets_the_overrides_table(tmp_path):
    path = tmp_path / "old.sqlite"
    Gradebook(path).store(stored_result())
    with sqlite3.connect(path) as db:
        before_migrations(db)
        db.execute("DROP TABLE overrides")
    book = Gradebook(path)
    assert book.latest("tiny")[0].overrides == []
    book.add_override("tiny", "alice", override("rubric", "q1", 1))
    assert book.overrides("tiny")["alice"][0].points == 1


# Pages and exports -----------------------------------------------------------------------------

def test_the_feedback_page_summary_and_export_show_the_overrides(tmp_path):
    reviewed, flagged = stored_result(), stored_result("bob", sha256="c" * 64)
    attach_overrides(reviewed, [override("check", "test_guess", 5, was=4), override("rubric", "q1", 2)])
    attach_overrides(flagged, [override("rubric", "q1", 2)])
    for r in (reviewed, flagged):
        late.apply_late(r, None)
    page = write_feedback(reviewed, title="Tiny", folder=tmp_path, notebook_html=False).read_text()
    assert "8 / 8" in page and "Reviewed by the course staff" in page
    assert "Check test_guess: 4 → 5 points" in page and "Written answer q1: 2 points" in page
    assert "ada" in page and "test_guess reviewed" in page
    bob = write_feedback(flagged, title="Tiny", folder=tmp_path, notebook_html=False).read_text()
    assert "Reviewed by the course staff" not in bob and "5 / 8" in bob
    summary = write_summary([reviewed, flagged], assignment="tiny", title="Tiny", folder=tmp_path).read_text()
    assert "needs review" in summary and "reviewed +3" in summary
    rows = list(csv.DictReader(io.StringIO(export.render([reviewed, flagged], "csv"))))
    assert rows[0]["score"] == "8.0" and rows[0]["raw_score"] == "5.0" and rows[0]["override_points"] == "3.0"
    assert "check test_guess: 4 -> 5 points by ada" in rows[0]["overrides"]
    assert rows[1]["score"] == "5.0" and "written answer q1" in rows[1]["needs_review"]
    assert "reviewed by the course staff" in export.comment(reviewed)


# The review page (WSGI, no browser) --------------------------------------------------------------

@pytest.fixture
def review_page(rubric_course, tmp_path) -> Review:
    book = Gradebook(tmp_path / "g.sqlite")
    book.store(stored_result())
    return Review(assignment=load_assignment(rubric_course, "tiny"), gradebook=book,
                  reports=tmp_path / "reports", reviewer="ada", notebook_html=False)


def call(app: Review, path: str, *, method: str = "GET", form: dict[str, str] | None = None,
         **headers: str) -> tuple[str, dict[str, str], str]:
    body = "&".join(f"{k}={urllib.request.quote(v)}" for k, v in (form or {}).items()).encode()
    environ = {"PATH_INFO": path, "REQUEST_METHOD": method, "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body), **headers}
    setup_testing_defaults(environ)
    answer: dict[str, object] = {}
    chunks = app(environ, lambda status, head: answer.update(status=status, headers=dict(head)))
    return str(answer["status"]), dict(answer["headers"]), b"".join(chunks).decode()  # type: ignore[arg-type]


def test_every_request_needs_the_token(review_page):
    for path in ("/", "/student/alice", f"/{review_page.token[:-1]}/", f"/x{review_page.token}/"):
        status, headers, body = call(review_page, path)
        assert status.startswith("403") and "alice" not in body
        assert "default-src 'none'" in headers["Content-Security-Policy"]
    status, headers, body = call(review_page, f"/{review_page.token}/")
    assert status == "200 OK" and "alice" in body and "5 / 8" in body
    assert "<script" not in body and "http" not in body, "no script, nothing from elsewhere"
    review_page.notebook_html = True  # as `grader review` writes them
    status, _, page = call(review_page, f"/{review_page.token}/pages/alice.html")
    assert status == "200 OK" and "feedback for <strong>alice</strong>" in page
    status, _, notebook_page = call(review_page, f"/{review_page.token}/pages/alice~notebook.html")
    assert status == "200 OK" and "Why squares" in notebook_page, "the executed notebook, rendered"
    for name in ("index.html", "..%2Fg.sqlite", "../g.sqlite"):
        assert call(review_page, f"/{review_page.token}/pages/{name}")[0].startswith("404")


def test_a_form_without_this_sessions_csrf_token_changes_nothing(review_page):
    form = {"kind": "rubric", "item": "q1", "points": "2", "comment": ""}
    for csrf in ("", "forged"):
        status, _, _ = call(review_page, f"/{review_page.token}/student/alice", method="POST",
                            form={**form, "csrf": csrf})
        assert status.startswith("403")
    assert review_page.gradebook.overrides("tiny") == {}
    status, headers, _ = call(review_page, f"/{review_page.token}/student/alice", method="POST",
                              form={**form, "csrf": review_page.csrf})
    assert status.startswith("303") and headers["Location"] == f"/{review_page.token}/student/alice"
    (stored,) = review_page.gradebook.overrides("tiny")["alice"]
    assert (stored.reviewer, stored.points, stored.sha256) == ("ada", 2, SHA)
    assert review_page.gradebook.latest("tiny")[0].score == 7.0
    assert "7 / 8" in (review_page.reports / "alice.html").read_text()


def test_a_form_from_another_origin_or_host_is_refused(review_page):
    review_page.port = 8765
    form = {"kind": "rubric", "item": "q1", "points": "2", "csrf": review_page.csrf}
    good_host = {"HTTP_HOST": f"{HOST}:8765"}
    status, _, _ = call(review_page, f"/{review_page.token}/", HTTP_HOST="evil.example:8765")
    assert status.startswith("403")
    status, _, _ = call(review_page, f"/{review_page.token}/student/alice", method="POST", form=form,
                        HTTP_ORIGIN="http://evil.example", **good_host)
    assert status.startswith("403") and review_page.gradebook.overrides("tiny") == {}
    status, _, _ = call(review_page, f"/{review_page.token}/student/alice", method="POST", form=form,
                        HTTP_ORIGIN=f"http://{HOST}:8765", **good_host)
    assert status.startswith("303")


@pytest.mark.parametrize("form, expected", [
    ({"kind": "check", "item": "test_guess", "points": "6", "comment": "x"}, "from 0 to 5"),
    ({"kind": "check", "item": "test_guess", "points": "nan", "comment": "x"}, "from 0 to 5"),
    ({"kind": "check", "item": "test_guess", "points": "4", "comment": " "}, "say why"),
    ({"kind": "check", "item": "test_nope", "points": "1", "comment": "x"}, "no check 'test_nope'"),
    ({"kind": "rubric", "item": "q1", "points": "2.5"}, "from 0 to 2"),
    ({"kind": "grade", "item": "q1", "points": "1"}, "no grade 'q1'"),
])
def test_an_override_out_of_range_or_of_nothing_is_refused(review_page, form, expected):
    status, _, body = call(review_page, f"/{review_page.token}/student/alice", method="POST",
                           form={**form, "csrf": review_page.csrf})
    assert status.startswith("400") and expected in body
    assert review_page.gradebook.overrides("tiny") == {}


def test_make_override_records_the_check_points_before(review_page):
    o = make_override(stored_result(), review_page.assignment.config.rubric,
                      {"kind": "check", "item": "test_guess", "points": "4.5", "comment": "partial credit"},
                      reviewer="ada")
    assert (o.was, o.points, o.sha256, o.reviewer) == (4, 4.5, SHA, "ada")


def test_the_page_is_served_on_127_0_0_1_only(review_page):
    server = bind(review_page, 0)
    try:
        assert server.server_address[0] == "127.0.0.1" and review_page.port == server.server_port
        assert review_page.url.startswith(f"http://127.0.0.1:{server.server_port}/{review_page.token}/")
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        with urllib.request.urlopen(review_page.url, timeout=10) as answer:
            assert answer.status == 200 and b"alice" in answer.read()
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(GraderError, match="--port must be"):
        bind(review_page, 70000)


def test_a_half_sent_request_stalls_no_other_and_is_dropped_at_its_timeout(review_page):
    server = bind(review_page, 0, timeout=2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stalled_headers, stalled_form = socket.socket(), socket.socket()
    try:
        stalled_headers.connect((HOST, review_page.port))
        stalled_headers.sendall(f"GET /{review_page.token}/ HTTP/1.1\r\nHost: ".encode())
        stalled_form.connect((HOST, review_page.port))
        stalled_form.sendall(f"POST /{review_page.token}/student/alice HTTP/1.1\r\nHost: {HOST}:"
                             f"{review_page.port}\r\nContent-Length: 500\r\n\r\ncsrf=".encode())
        with urllib.request.urlopen(review_page.url, timeout=10) as answer:
            assert answer.status == 200 and b"alice" in answer.read()
        for stalled in (stalled_headers, stalled_form):  # answered while both still stall
            stalled.setblocking(False)
            with pytest.raises(BlockingIOError):
                stalled.recv(100)
            stalled.settimeout(10)
        assert stalled_headers.recv(100) == b"", "dropped at its timeout"
        assert stalled_form.recv(100).startswith(b"HTTP/1.0 408 Request Timeout")
        assert review_page.gradebook.overrides("tiny") == {}
    finally:
        stalled_headers.close()
        stalled_form.close()
        server.shutdown()
        server.server_close()


# Headless Chromium ---------------------------------------------------------------------------------

class Tab:
    """One Chromium tab driven over the DevTools protocol (tornado's websocket client)."""

    def __init__(self, socket) -> None:
        self.socket, self.calls = socket, 0

    async def call(self, method: str, **params: object) -> dict:
        self.calls += 1
        await self.socket.write_message(json.dumps({"id": self.calls, "method": method, "params": params}))
        while True:
            message = await self.socket.read_message()
            assert message is not None, "Chromium closed the DevTools connection"
            answer = json.loads(message)
            if answer.get("id") == self.calls:
                assert "error" not in answer, answer
                return answer["result"]

    async def value(self, expression: str) -> object:
        answer = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return answer["result"].get("value")

    async def until(self, expression: str, seconds: float = 30) -> object:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = await self.value(f"document.readyState === 'complete' && ({expression})")
            if found:
                return found
            await asyncio.sleep(0.1)
        raise AssertionError(f"the page never showed {expression}: {await self.value('document.body.innerText')}")

    async def save(self, kind: str, item: str, points: str, comment: str) -> None:
        """Fill the form of ITEM on the page and submit it as a reviewer would."""
        form = f"document.querySelector('form[data-kind=\"{kind}\"][data-item=\"{item}\"]')"
        await self.value(f"{form}.points.value = {json.dumps(points)};"
                         f"{form}.comment.value = {json.dumps(comment)};"
                         f"{form}.querySelector('button').click(); true")


def browse(url: str, scenario, profile: Path) -> None:
    """Run SCENARIO(tab, url) in a headless Chromium."""
    from tornado.websocket import websocket_connect

    browser = subprocess.Popen(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            assert time.monotonic() < deadline and browser.poll() is None, "Chromium did not start"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            page = next(t for t in json.loads(answer.read()) if t["type"] == "page")

        async def drive() -> None:
            socket = await websocket_connect(page["webSocketDebuggerUrl"], max_message_size=2**26)
            try:
                await scenario(Tab(socket), url)
            finally:
                socket.close()
        asyncio.run(drive())
    finally:
        browser.terminate()
        browser.wait(timeout=30)


async def change_a_score_and_reload(tab: Tab, url: str) -> None:
    """Open the list, open alice, lower a check, grade q1, reload: both stay on the page."""
    await tab.call("Page.navigate", url=url)
    await tab.until("document.querySelector('a[href^=\"student/\"]') !== null")
    await tab.value("document.querySelector('a[href^=\"student/\"]').click(); true")
    await tab.until("document.querySelector('form[data-item=\"test_total\"]') !== null")
    await tab.save("check", "test_total", "0.5", "the sum is rounded by hand")
    await tab.until("document.querySelector('[data-check=\"test_total\"]') !== null")
    await tab.save("rubric", "q1", "2", "clear and right")
    await tab.until("document.querySelector('[data-rubric=\"q1\"]') !== null")
    await tab.call("Page.reload", ignoreCache=True)
    await asyncio.sleep(0.5)
    text = await tab.until("document.querySelector('[data-rubric=\"q1\"]') !== null && document.body.innerText")
    assert "set to 0.5 by Ada Staff: the sum is rounded by hand" in str(text)
    assert "2 / 2 by Ada Staff: clear and right" in str(text)
    assert "Why squares" in str(text), "the student's written answer is shown beside the rubric"


def reviewed_notebook(folder: Path, answer: str = ANSWER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    nb = notebook(*TINY_SOLUTION)
    nb.cells.append(new_markdown_cell(answer))
    path = folder / "alice.ipynb"
    nbformat.write(nb, path)
    return path


def grader(*args: object, ok: bool = True) -> subprocess.CompletedProcess[str]:
    run = subprocess.run([sys.executable, "-m", "grader", *map(str, args)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 or not ok, run.stderr[-3000:]
    return run


@pytest.mark.slow
def test_an_override_made_in_chromium_survives_grader_run_and_reaches_the_page_and_export(rubric_course, tmp_path):
    subs, book, reports = tmp_path / "subs", tmp_path / "g.sqlite", tmp_path / "reports"
    reviewed_notebook(subs)
    where = ("--course", rubric_course, "--gradebook", book, "--reports", reports)
    grader("run", "tiny", "--submissions", subs, "--workers", "1", *where)
    assert Gradebook(book).latest("tiny")[0].score == 6  # every check, the written answer not yet graded

    review = subprocess.Popen([sys.executable, "-m", "grader", "review", "tiny", *map(str, where),
                               "--reviewer", "Ada Staff"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = review.stdout.readline()
        assert "open http://127.0.0.1:" in line, line + review.stderr.read()
        url = line.split("open ")[1].split()[0]
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(url.rsplit("/", 2)[0] + "/", timeout=10)
        browse(url, change_a_score_and_reload, tmp_path / "profile")
    finally:
        review.send_signal(signal.SIGINT)
        out, err = review.communicate(timeout=30)
    assert review.returncode == 0 and out.strip() == "review stopped; every change is in the gradebook", err
    assert Gradebook(book).latest("tiny")[0].score == 7.5  # 6 - 1 + 0.5 + 2

    again = grader("run", "tiny", "--submissions", subs, "--workers", "1", "--force", *where)
    assert "1 graded" in again.stdout
    assert Gradebook(book).count_runs("tiny")["alice"] == 2
    (result,) = Gradebook(book).latest("tiny")
    assert result.score == 7.5 and not any(o.needs_review for o in result.overrides)
    page = (reports / "alice.html").read_text()
    assert "7.5 / 8" in page and "Ada Staff" in page and "the sum is rounded by hand" in page
    assert "Check test_total: 1 → 0.5 points" in page
    (row,) = csv.DictReader(io.StringIO(grader("export", "tiny", *where[:4]).stdout))
    assert row["score"] == "7.5" and "by Ada Staff" in row["overrides"]

    reviewed_notebook(subs, ANSWER + " Edited after review.")
    grader("run", "tiny", "--submissions", subs, "--workers", "1", *where)
    (changed,) = Gradebook(book).latest("tiny")
    assert changed.score == 6 and all(o.needs_review for o in changed.overrides)
    assert "needs review" in (reports / "index.html").read_text()
    assert "Reviewed by the course staff" not in (reports / "alice.html").read_text()


@pytest.mark.slow
def test_the_review_page_in_chromium_stores_a_change_that_a_reload_shows(review_page, tmp_path):
    server = bind(review_page, 0)
    review_page.reviewer = "Ada Staff"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        browse(review_page.url, change_a_score_and_reload, tmp_path / "profile")
    finally:
        server.shutdown()
        server.server_close()
    (result,) = review_page.gradebook.latest("tiny")
    assert result.score == 6.5  # 5 - 1 + 0.5 + 2
    assert {o.item: o.reviewer for o in result.overrides} == {"test_total": "Ada Staff", "q1": "Ada Staff"}
    assert result.overrides[0].made_at > datetime.now(UTC) - timedelta(minutes=5)


def test_review_without_a_gradebook_or_with_a_taken_port_is_one_line(rubric_course, tmp_path):
    missing = grader("review", "tiny", "--course", rubric_course, "--gradebook", tmp_path / "none.sqlite",
                     ok=False)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no gradebook" in missing.stderr
    book = tmp_path / "g.sqlite"
    Gradebook(book).store(stored_result())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = grader("review", "tiny", "--course", rubric_course, "--gradebook", book, "--port", port, ok=False)
    assert busy.returncode == 2 and busy.stderr.count("\n") == 1 and f"127.0.0.1:{port}" in busy.stderr
    assert "Traceback" not in busy.stderr
