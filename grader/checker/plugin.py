"""The pytest plugin that runs an assignment's checks in the trusted process.

A check is a plain pytest function. Its fixtures reach the submission (`submission`), the hidden
data (`hidden`), the feedback page (`feedback`) and partial credit (`credit`); its marker
`@pytest.mark.points(n)` says what it is worth. What the fixtures hand out, and the helpers checks
use, are in `grader.checker.checks` (the check authors' API). The plugin writes every check's outcome to
the JSON file named by --grader-results, with a digest of the weights of each model the checks
loaded (for the staff's similarity list), which is all the grader reads back.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from grader.checker.checks import Credit, Feedback, SubmissionView
from grader.checker.exchange import KernelLink, StudentValueError
from grader.model.outcomes import Attachment, CheckOutcome


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("grader", "grading a submission")
    group.addoption("--grader-shared", help="the run's shared folder (sock/, out/, in/)")
    group.addoption("--grader-hidden", help="folder of hidden data")
    group.addoption("--grader-student-data", help="folder of the data the students get")
    group.addoption("--grader-public", help="folder of the public checks")
    group.addoption("--grader-results", help="JSON file the outcomes are written to")
    group.addoption("--grader-why-no-kernel", default="the notebook's kernel is not running")
    group.addoption("--grader-timeout", type=float, default=120.0, help="seconds per request")
    group.addoption("--grader-wait", action="store_true",
                    help="import the heavy libraries, then wait for one JSON line on stdin with "
                         "'connection' (the kernel's connection info) and 'why_no_kernel' (the "
                         "grader starts the checks early)")
    group.addoption("--grader-warmed", action="store_true",
                    help="with --grader-wait, import nothing more while waiting: a warm checker "
                         "(grader.checker.server) imported what these checks use already")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "points(n): the points a check is worth")
    if config.getoption("--grader-wait"):
        if not config.getoption("--grader-warmed"):
            _warm_up()
        go = json.loads(sys.stdin.readline() or "{}")
        config.option.grader_connection = go.get("connection")
        config.option.grader_why_no_kernel = go.get("why_no_kernel", "")
    if config.getoption("--grader-results"):
        config.pluginmanager.register(_Collector(config), "grader-collector")


@pytest.fixture(scope="session")
def submission(request: pytest.FixtureRequest) -> Iterator[SubmissionView]:
    """The submission under grading, as a grader.checker.checks.SubmissionView."""
    config = request.config
    connection = getattr(config.option, "grader_connection", None)
    link = None
    if connection:
        link = KernelLink(connection, Path(config.getoption("--grader-shared")),
                          config.getoption("--grader-timeout"))
    view = SubmissionView(link, config.getoption("--grader-why-no-kernel"))
    config.stash[_VIEW] = view
    yield view
    if link is not None:
        link.close()


@pytest.fixture(scope="session")
def hidden(request: pytest.FixtureRequest) -> Path:
    """The folder of hidden data; only trusted checks ever see it."""
    folder = request.config.getoption("--grader-hidden")
    if not folder:
        raise RuntimeError("the grader gave no hidden data folder")
    return Path(folder)


@pytest.fixture(scope="session")
def student_data(request: pytest.FixtureRequest) -> Path:
    """The folder of the data the students get, as prepared (not as the student left it)."""
    folder = request.config.getoption("--grader-student-data")
    if not folder:
        raise RuntimeError("the grader gave no student data folder")
    return Path(folder)


@pytest.fixture
def feedback(request: pytest.FixtureRequest) -> Feedback:
    """Attach plots and notes to the student's feedback."""
    return Feedback(request.node.stash.setdefault(_ATTACHMENTS, []))


@pytest.fixture
def credit(request: pytest.FixtureRequest) -> Credit:
    """Give part of a check's points."""
    return request.node.stash.setdefault(_CREDIT, Credit())


def _warm_up() -> None:
    """Import what checks use while the student's notebook still runs."""
    import importlib

    for name in ("numpy", "keras", "matplotlib.pyplot", "jupyter_client", "zmq"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


_ATTACHMENTS = pytest.StashKey[list[Attachment]]()
_VIEW = pytest.StashKey[SubmissionView]()
_CREDIT = pytest.StashKey[Credit]()


def _student_caused(excinfo: pytest.ExceptionInfo[BaseException]) -> bool:
    """Whether a check failed because of the submission: a failed assert or pytest.fail, or a
    value the student handed over that was missing, of the wrong kind or broke. Anything else
    raised in a check is a bug of the check or the grader, never the student's zero."""
    return (excinfo.errisinstance((AssertionError, StudentValueError))
            or excinfo.errisinstance(pytest.fail.Exception)
            or excinfo.errisinstance(pytest.skip.Exception))


def _message(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    """What the student reads for a failed check: the author's words, never the check's code."""
    exc = excinfo.value
    if excinfo.errisinstance(pytest.skip.Exception):
        return f"not graded: {exc}"
    if _student_caused(excinfo):
        return str(exc).strip() or "the check failed"
    return "this check could not run because of a problem on the grader's side (not your fault)"


class _Collector:
    """Turns pytest's reports into CheckOutcomes and writes them out at the end."""

    def __init__(self, config: pytest.Config):
        self.path = Path(config.getoption("--grader-results"))
        public = config.getoption("--grader-public")
        self.public = Path(public).resolve() if public else None
        self.outcomes: dict[str, CheckOutcome] = {}

    def _outcome(self, item: pytest.Item) -> CheckOutcome:
        if item.nodeid not in self.outcomes:
            marker = item.get_closest_marker("points")
            points = float(marker.args[0]) if marker and marker.args else 1.0
            doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
            path = Path(str(item.path)).resolve()
            public = self.public is not None and self.public in path.parents
            self.outcomes[item.nodeid] = CheckOutcome(
                name=item.name, description=doc.strip().splitlines()[0] if doc.strip() else "",
                public=public, max_points=points,
            )
        return self.outcomes[item.nodeid]

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        yield
        outcome = self._outcome(item)
        outcome.attachments = item.stash.get(_ATTACHMENTS, [])
        if call.when == "teardown":
            return
        if call.excinfo is not None:
            outcome.outcome = "failed" if call.when == "call" else "error"
            outcome.points = 0.0
            outcome.message = _message(call.excinfo)
            if not _student_caused(call.excinfo):
                outcome.outcome, outcome.fault = "error", "grader"
                outcome.detail = f"{item.nodeid} ({call.when}): " + str(
                    call.excinfo.getrepr(style="short", chain=True))[-8000:]
        elif call.when == "call":
            credit = item.stash.get(_CREDIT, None)
            fraction = 1.0 if credit is None or credit.fraction is None else credit.fraction
            outcome.points = round(outcome.max_points * fraction, 4)
            outcome.outcome = "passed" if fraction >= 1.0 else "partial"
            outcome.message = credit.message if credit is not None else ""

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """With --collect-only, list each check and its points (the preflight reads them)."""
        if not session.config.option.collectonly:
            return
        listed = [{"name": item.name, "file": str(item.path), "public": self._outcome(item).public,
                   "points": self._outcome(item).max_points,
                   "marked": bool((m := item.get_closest_marker("points")) and m.args)}
                  for item in session.items]
        self.path.write_text(json.dumps({"collected": listed}), encoding="utf-8")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if session.config.option.collectonly:
            return
        data = [asdict(o) for o in self.outcomes.values()]
        view = session.config.stash.get(_VIEW, None)
        weights = dict(view.weights) if view is not None else {}
        self.path.write_text(json.dumps({"checks": data, "weights": weights}), encoding="utf-8")
