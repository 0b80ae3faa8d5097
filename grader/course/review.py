"""Staff review: a local web page where course staff adjust a check's points and grade the
written answers of the rubric (assignment.toml's [[rubric]]).

Every change is an Override in the gradebook, with who, when, why and the notebook it was made
on; the final score is worked out with it in grader/model/late.py's `apply_late`, and the student's
pages are written again. The page is served by the standard library (wsgiref) on 127.0.0.1 only,
a thread per connection with a timeout, so that one half-sent request (any local user can open
one) stalls no one else; the page's own work (the gradebook, the pages) runs one at a time.
Every URL starts with a random token (/TOKEN/...), without which the answer is 403; every form
carries this session's CSRF token; the pages load nothing from anywhere and run no script (a
strict Content-Security-Policy), and the token never leaves in a Referer (same-origin).
"""

from __future__ import annotations

import json
import math
import secrets
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs, quote, unquote
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from grader.model import late
from grader.model.assignments import Assignment
from grader.model.config import RubricItem
from grader.model.errors import GraderError
from grader.model.result import Override, Result
from grader.model.submission import slug
from grader.reports.pages import (
    ReportError,
    feedback_name,
    notebook_name,
    review_list_page,
    review_student_page,
    write_feedback,
)
from grader.store.gradebook import Gradebook

HOST = "127.0.0.1"  # never another interface: the page changes grades
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self';"
       " base-uri 'none'; frame-ancestors 'none'")
HEADERS = [("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
           ("Referrer-Policy", "same-origin"), ("Cache-Control", "no-store"),
           ("X-Frame-Options", "DENY")]
MAX_FORM_BYTES = 64 * 1024
ANSWER_CHARS = 20_000  # of a written answer shown to the reviewer
REQUEST_TIMEOUT = 20.0  # seconds a connection may take to send its request or read the answer

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class Refused(Exception):
    """A request the review page answers with an HTTP error and a one-line reason."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status = status


@dataclass
class Review:
    """The review page of one assignment, as a WSGI application."""

    assignment: Assignment
    gradebook: Gradebook
    reports: Path  # where the student's pages are (written again after each change)
    reviewer: str  # "who" of every override made here
    notebook_html: bool = True  # write the executed notebook's page beside the feedback
    on_change: Callable[[list[Result]], None] | None = None  # e.g. write the summary again
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    port: int | None = None  # set once bound: the Host and Origin a request must name
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def url(self) -> str:
        """The page's address, token included."""
        return f"http://{HOST}:{self.port}/{self.token}/"

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            status, headers, body = self._answer(environ)
        except Refused as exc:
            status, headers, body = exc.status, [], _plain(exc.status, str(exc))
        start_response(status, [*HEADERS, *headers])
        return [body]

    def _answer(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        self._check_host(environ)
        path = environ.get("PATH_INFO", "")
        prefix = f"/{self.token}/"
        if not secrets.compare_digest(path[: len(prefix)].encode(), prefix.encode()):
            raise Refused("403 Forbidden", "this page needs the address `grader review` printed,"
                          " token included")
        route, method = path[len(prefix):], environ.get("REQUEST_METHOD", "GET")
        if method == "POST":
            if not route.startswith("student/"):
                raise Refused("405 Method Not Allowed", "only a student's page takes a form")
            self._check_origin(environ)
            form = _form(environ)  # read before the lock: a slow sender holds its own thread only
            with self.lock:
                student = self._post(route.removeprefix("student/"), form)
            location = f"{prefix}student/{quote(slug(student))}"
            return "303 See Other", [("Location", location)], b""
        if method != "GET":
            raise Refused("405 Method Not Allowed", f"{method} is not answered here")
        with self.lock:
            return self._get(route)

    def _get(self, route: str) -> tuple[str, list[tuple[str, str]], bytes]:
        if route == "":
            return _html(review_list_page(self._results(), title=self.assignment.config.title,
                                          assignment=self.assignment.name))
        if route.startswith("student/"):
            return _html(self._student_page(self._result(route.removeprefix("student/"))))
        if route.startswith("pages/"):
            return _html(self._report_page(unquote(route.removeprefix("pages/"))))
        raise Refused("404 Not Found", "no such page: start from the list")

    def _check_host(self, environ: dict[str, Any]) -> None:
        """Refuse a Host other than this server's (a DNS-rebinding page would name its own)."""
        if self.port is None:
            return
        if environ.get("HTTP_HOST", "") not in {f"{HOST}:{self.port}", f"localhost:{self.port}"}:
            raise Refused("403 Forbidden", "wrong Host: open the address `grader review` printed")

    def _check_origin(self, environ: dict[str, Any]) -> None:
        origin = environ.get("HTTP_ORIGIN")
        if origin and self.port is not None and origin not in {
                f"http://{HOST}:{self.port}", f"http://localhost:{self.port}"}:
            raise Refused("403 Forbidden", "a form from another site is refused")

    def _results(self) -> list[Result]:
        return self.gradebook.latest(self.assignment.name)

    def _result(self, student_slug: str) -> Result:
        wanted = unquote(student_slug)
        for result in self._results():
            if slug(result.student) == wanted:
                return result
        raise Refused("404 Not Found", f"no student {wanted!r} in {self.assignment.name}")

    def _student_page(self, result: Result) -> str:
        history = self.gradebook.overrides(self.assignment.name, history=True).get(result.student, [])
        answers = {item.name: written_answer(result.executed_notebook, item.cell)
                   for item in self.assignment.config.rubric}
        return review_student_page(result, title=self.assignment.config.title,
                                   rubric=self.assignment.config.rubric, answers=answers,
                                   history=history, csrf=self.csrf,
                                   feedback=feedback_name(result.student),
                                   notebook=notebook_name(result.student)
                                   if result.executed_notebook else None)

    def _report_page(self, name: str) -> str:
        """A student's feedback or executed-notebook page from the reports folder, written
        there first where it is missing; only those names are served."""
        for result in self._results():
            names = {feedback_name(result.student), notebook_name(result.student)}
            if name in names:
                page = self.reports / name
                if not page.is_file():
                    self._write_pages(result)
                if not page.is_file():
                    raise Refused("404 Not Found", f"{name} could not be written")
                return page.read_text(encoding="utf-8", errors="replace")
        raise Refused("404 Not Found", f"no page {name!r}")

    def _post(self, student_slug: str, form: dict[str, str]) -> str:
        """Store the override FORM asks for; the student's name."""
        if not secrets.compare_digest(form.get("csrf", "").encode(), self.csrf.encode()):
            raise Refused("403 Forbidden", "the form's CSRF token is missing or stale: reload the page")
        result = self._result(student_slug)
        override = make_override(result, self.assignment.config.rubric, form, reviewer=self.reviewer)
        self.gradebook.add_override(self.assignment.name, result.student, override)
        late.restate(self.gradebook, self.assignment)
        results = self._results()
        for fresh in results:
            if fresh.student == result.student:
                self._write_pages(fresh)
        if self.on_change is not None:
            self.on_change(results)
        return result.student

    def _write_pages(self, result: Result) -> None:
        try:
            write_feedback(result, title=self.assignment.config.title, folder=self.reports,
                           notebook_html=self.notebook_html)
        except ReportError:
            pass  # a plain page stands in for the notebook; the feedback page is written


def make_override(result: Result, rubric: tuple[RubricItem, ...], form: dict[str, str], *,
                  reviewer: str, now: datetime | None = None) -> Override:
    """The Override FORM asks for on RESULT (kind, item, points, comment); Refused (400) with
    what is wrong where it asks for something the assignment lacks or points out of range."""
    if not result.counted:
        raise Refused("409 Conflict", "this submission is not graded (a grader problem): grade it"
                      " again with `grader run` before reviewing it")
    kind, item, comment = form.get("kind", ""), form.get("item", ""), form.get("comment", "").strip()
    checks = {c.name: c for c in result.checks}
    items = {i.name: i for i in rubric}
    if kind == "check" and item in checks:
        most, was = checks[item].max_points, checks[item].points
        if not comment:
            raise Refused("400 Bad Request", "say why the check's points change: the comment is"
                          " shown to the student")
    elif kind == "rubric" and item in items:
        most, was = items[item].points, None
    else:
        raise Refused("400 Bad Request", f"no {kind or 'item'} {item!r} to review in this submission")
    try:
        points = float(form.get("points", ""))
    except ValueError:
        raise Refused("400 Bad Request", f"points must be a number from 0 to {most:g}") from None
    if not math.isfinite(points) or not 0 <= points <= most:
        raise Refused("400 Bad Request", f"points must be from 0 to {most:g}, found {points:g}")
    return Override(kind=kind, item=item, points=points, comment=comment[:5000], reviewer=reviewer,
                    made_at=now or datetime.now(UTC), sha256=result.sha256, was=was)


def written_answer(notebook_json: str | None, cell: str) -> str:
    """The markdown a rubric item grades: the cell whose id is CELL, or the markdown cells from
    the one whose heading holds CELL up to the next code cell; '' when not found."""
    try:
        cells = json.loads(notebook_json or "{}").get("cells", [])
    except (ValueError, AttributeError):
        return ""
    if not isinstance(cells, list):
        return ""
    cells = [c for c in cells if isinstance(c, dict)]
    texts = [_source(c) for c in cells]
    for c, text in zip(cells, texts, strict=True):
        if c.get("id") == cell:
            return text[:ANSWER_CHARS]
    wanted = cell.strip().lstrip("#").strip().lower()
    for start, (c, text) in enumerate(zip(cells, texts, strict=True)):
        headings = [line.lstrip("#").strip().lower() for line in text.splitlines() if line.startswith("#")]
        if c.get("cell_type") == "markdown" and any(wanted in h for h in headings):
            found = []
            for after, later in zip(cells[start:], texts[start:], strict=True):
                if after.get("cell_type") != "markdown":
                    break
                found.append(later)
            return "\n\n".join(found)[:ANSWER_CHARS]
    return ""


def _source(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(map(str, source)) if isinstance(source, list) else str(source)


def _form(environ: dict[str, Any]) -> dict[str, str]:
    """The POSTed form's fields (the first value of each); Refused if it is too large."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = -1
    if not 0 <= length <= MAX_FORM_BYTES:
        raise Refused("413 Content Too Large", f"a form of at most {MAX_FORM_BYTES} bytes is taken")
    try:
        body = environ["wsgi.input"].read(length).decode("utf-8", "replace")
    except OSError:  # the socket's timeout: a form sent in part, or too slowly
        raise Refused("408 Request Timeout", "the form was not sent in time: send it again") from None
    return {key: values[0] for key, values in parse_qs(body, keep_blank_values=True).items()}


def _html(text: str) -> tuple[str, list[tuple[str, str]], bytes]:
    return "200 OK", [("Content-Type", "text/html; charset=utf-8")], text.encode("utf-8", "replace")


def _plain(status: str, reason: str) -> bytes:
    return f"{status}: {reason}\n".encode()


class _QuietHandler(WSGIRequestHandler):
    """No line per request: it would print the token to the terminal's scrollback and logs."""

    timeout = REQUEST_TIMEOUT  # on the connection's socket: a stalled client is dropped

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, none waited for at shutdown."""

    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet for a client that stalled or went away; the usual traceback otherwise."""
        if not isinstance(sys.exc_info()[1], (TimeoutError, ConnectionError)):
            super().handle_error(request, client_address)


def bind(review: Review, port: int = 0, *, timeout: float = REQUEST_TIMEOUT) -> WSGIServer:
    """A server of REVIEW bound to 127.0.0.1:PORT (0: any free port), each connection in its own
    thread with TIMEOUT seconds to send its request; GraderError if it cannot bind."""
    if not 0 <= port <= 65535:
        raise GraderError(f"--port must be from 0 to 65535 (0: any free port), found {port}")
    handler = type("Handler", (_QuietHandler,), {"timeout": timeout})
    try:
        server = make_server(HOST, port, review, server_class=_ThreadingServer, handler_class=handler)
    except OSError as exc:
        raise GraderError(f"cannot serve the review page on {HOST}:{port} ({exc.strerror or exc}):"
                          " pass another --port, or 0 for any free one") from None
    review.port = server.server_port
    return server
