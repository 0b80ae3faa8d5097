"""Feedback for each student and a summary for the class, as self-contained HTML pages.

The summary (index.html) is the staff page: it shows grader problems with their staff detail,
and pairs of similar submissions with a side-by-side page of each (similar/, staff only).
A student's pages never show staff detail nor a path of the grading machine. Each student's
pages are rendered in a child process with time and memory limits, since a notebook is student
data that nbconvert may take minutes over.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import html
import json
import os
import re
import resource
import select
import signal
import site
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import nbformat
from markupsafe import Markup

from grader.isolation.launch import module_command
from grader.model import paths
from grader.model.errors import GraderError
from grader.model.late import as_utc, how_late
from grader.model.paths import package_file
from grader.model.result import GRADER_FAULTS, STATUSES, Result, override_points
from grader.model.submission import slug
from grader.reports.similarity import Pair

SUMMARY_PAGE = "index.html"
SIMILAR_FOLDER = "similar"  # staff pages of similar pairs; no student's page is a folder
NOTEBOOK_SUFFIX = "~notebook.html"  # a slug has "~" only before its 10-digit digest: no clash
GRADER_PROBLEM = "not graded: grader problem"
# Statuses whose kernel ran the notebook: the only ones whose runtimes say anything.
RAN = frozenset({"graded", "cell_error", "timeout", "kernel_died"})


class ReportError(GraderError):
    """A student's pages could not be rendered; plain fallback pages stand in their place."""


@dataclass(frozen=True)
class RenderLimits:
    """What rendering one student's pages may take."""

    seconds: float = 60.0  # wall clock, and CPU time, of the rendering child
    memory_mb: int = 2048  # address space of the rendering child


# Host paths -------------------------------------------------------------------------------------

@functools.cache
def _host_prefixes() -> dict[str, str]:
    """Folders of the grading machine and what students see instead."""
    prefixes: dict[str, str] = {}
    sites = [*site.getsitepackages(), site.getusersitepackages(),
             *(sysconfig.get_paths().get(k, "") for k in ("purelib", "platlib"))]
    for path in sites:
        prefixes[path] = "<site-packages>"
    for path in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix):
        prefixes[path] = "<python>"
    prefixes[str(paths.PACKAGE.parent)] = "<grader>"
    prefixes[str(Path.home())] = "~"
    for path, label in list(prefixes.items()):
        prefixes.setdefault(os.path.realpath(path), label)
    return {p.rstrip("/"): label for p, label in prefixes.items() if p and p.rstrip("/")}


@functools.cache
def _host_pattern() -> re.Pattern[str]:
    runs = {re.escape(d) for d in ("/tmp", tempfile.gettempdir(), os.path.realpath(tempfile.gettempdir()))}
    run_dirs = rf"(?:{'|'.join(sorted(runs))})/grader-[^/\s'\"]*"
    fixed = "|".join(re.escape(p) for p in sorted(_host_prefixes(), key=len, reverse=True))
    return re.compile(rf"(?P<run>{run_dirs})|(?P<fixed>{fixed})(?=[/\\\s'\":,)\]]|$)")


def scrub_paths(text: str) -> str:
    """TEXT with the grading machine's folders (venv, site-packages, run dirs, home) named generically."""
    prefixes = _host_prefixes()

    def name(match: re.Match[str]) -> str:
        return "<run>" if match.group("run") else prefixes[match.group("fixed")]

    return _host_pattern().sub(name, text)


def _scrub_outputs(value: Any) -> Any:
    """Every string in an output (tracebacks, stderr, text) with host paths scrubbed."""
    if isinstance(value, str):
        return scrub_paths(value)
    if isinstance(value, list):
        return [_scrub_outputs(v) for v in value]
    if isinstance(value, dict):
        return type(value)({k: _scrub_outputs(v) for k, v in value.items()})
    return value


# Student pages ---------------------------------------------------------------------------------

def _template_source(name: str) -> str | None:
    """The text of the shipped template NAME, or None (Jinja2 then says it is not found)."""
    path = package_file("reports", "templates", name)
    return path.read_text(encoding="utf-8") if path.is_file() else None


@functools.cache
def _environment() -> jinja2.Environment:
    """The pages' Jinja2 environment, one per process, so that each template is compiled once
    (a few hundredths of a second each), not once per page."""
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_template_source),
        autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["seconds"] = lambda s: f"{s:.1f} s"
    env.filters["points"] = lambda p: f"{p:g}"
    env.filters["hostless"] = lambda s: scrub_paths(str(s))
    env.filters["how_late"] = how_late
    env.filters["utc"] = lambda moment: as_utc(moment).strftime("%Y-%m-%d %H:%M UTC")
    env.globals["STATUSES"] = STATUSES
    env.globals["GRADER_PROBLEM"] = GRADER_PROBLEM
    env.globals["GRADER_FAULTS"] = GRADER_FAULTS
    env.globals["RAN"] = RAN
    env.globals["override_points"] = override_points
    env.tests["needs_review_any"] = lambda r: any(o.needs_review for o in r.overrides)
    return env


def feedback_name(student: str) -> str:
    """The file name of a student's feedback page."""
    return f"{slug(student)}.html"


def notebook_name(student: str) -> str:
    """The file name of a student's executed notebook page; no student's feedback page has it."""
    return f"{slug(student)}{NOTEBOOK_SUFFIX}"


def write_feedback(result: Result, *, title: str, folder: Path, notebook_html: bool,
                   limits: RenderLimits = RenderLimits(), renderer: Renderer | None = None) -> Path:
    """Write RESULT's feedback page (and the executed notebook beside it) into FOLDER.

    The executed notebook is rendered in a child process within LIMITS, forked by RENDERER's
    warm server where one is given. When that fails (time or memory limit, a crash), a plain
    page saying the notebook could not be rendered stands in its place and ReportError is
    raised: its message says what happened, for the staff (record it on the result). Returns
    the feedback page's path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    page, notebook_page = folder / feedback_name(result.student), folder / notebook_name(result.student)
    notebook_page.unlink(missing_ok=True)
    with_notebook = bool(notebook_html and result.executed_notebook)
    _write_whole(page, _environment().get_template("feedback.html.j2").render(
        r=result, title=title, notebook_page=notebook_page.name if with_notebook else None))
    if with_notebook and result.executed_notebook:
        problem = _render_notebook_page(result.executed_notebook, notebook_page, limits, renderer)
        if problem:
            notebook_page.with_name(f".{notebook_page.name}.partial").unlink(missing_ok=True)
            _write_whole(notebook_page, _plain_page(
                f"{title}: your executed notebook",
                "Your executed notebook could not be shown as a web page: it is too large or too "
                "complex to render (a very long markdown cell, for example). This does not change "
                "your grade; open your own notebook in Jupyter to see it."))
            raise ReportError(f"the executed notebook of {result.student} could not be rendered "
                              f"({problem}); a plain page says so instead")
    return page


def write_feedback_pages(results: list[Result], *, title: str, folder: Path, notebook_html: bool,
                         limits: RenderLimits = RenderLimits()) -> list[str]:
    """Write every result's feedback pages; what could not be rendered (fallbacks stand in)."""
    problems, renderer = [], Renderer()
    try:
        for result in results:
            try:
                write_feedback(result, title=title, folder=folder, notebook_html=notebook_html,
                               limits=limits, renderer=renderer)
            except ReportError as exc:
                problems.append(str(exc))
    finally:
        renderer.close()
    return problems


def _render_notebook_page(notebook_json: str, page: Path, limits: RenderLimits,
                          renderer: Renderer | None = None) -> str:
    """Render the notebook to PAGE in a limited child process (forked by RENDERER's warm server
    where it has one); what went wrong, or ''."""
    if renderer is not None:
        answer = renderer.render(notebook_json, page, limits)
        if answer is not None:
            return _render_problem(answer, limits)
    command = [sys.executable, "-c", "from grader.reports.pages import _render_child; _render_child()",
               str(page), str(limits.memory_mb), str(max(1, int(limits.seconds)))]
    try:
        run = subprocess.run(command, input=notebook_json.encode("utf-8", "surrogatepass"),
                             capture_output=True, timeout=limits.seconds, check=False)
    except subprocess.TimeoutExpired:
        return f"rendering took longer than {limits.seconds:g} s"
    return _render_problem({"returncode": run.returncode,
                            "stderr": run.stderr.decode("utf-8", "replace")}, limits)


def _render_problem(answer: dict[str, Any], limits: RenderLimits) -> str:
    """What went wrong in a rendering child, from its exit status and stderr; '' if nothing."""
    returncode, stderr = int(answer["returncode"]), str(answer.get("stderr", "")).strip()
    if answer.get("timed_out"):
        return f"rendering took longer than {limits.seconds:g} s"
    if returncode == 0:
        return ""
    if returncode == -signal.SIGXCPU:
        return f"rendering used more than {limits.seconds:g} s of CPU"
    if "MemoryError" in stderr or returncode == -signal.SIGKILL:
        return f"rendering needed more than {limits.memory_mb} MB of memory"
    last = stderr.splitlines()[-1] if stderr else f"exit status {returncode}"
    return f"the renderer failed: {last[:500]}"


class Renderer:
    """The warm renderer (grader.reports.renderserver) of one thread: nbconvert imported once, each page
    still rendered in a limited child of its own. Where the server is gone or stops answering,
    `render` says so (None) and the page is rendered by a cold child; the next page starts a new
    server. Use it from one thread at a time; close it when done."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self._pending = b""

    def start(self) -> None:
        """Start the server, which warms up in the background; no-op if it runs."""
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                module_command("grader.reports.renderserver"), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            self._pending, self._ready = b"", False

    def render(self, notebook_json: str, page: Path, limits: RenderLimits) -> dict[str, Any] | None:
        """The server's answer for rendering NOTEBOOK_JSON to PAGE within LIMITS, or None where
        the server could not answer (it is then stopped)."""
        self.start()
        assert self.process is not None and self.process.stdin is not None
        try:
            if not self._ready:
                self._ready = bool(self._answer(_WARM_UP_SECONDS).get("ready"))
            request = {"page": str(page), "notebook": notebook_json,
                       "memory_mb": limits.memory_mb, "seconds": max(1, int(limits.seconds))}
            self.process.stdin.write(json.dumps(request).encode("ascii") + b"\n")
            self.process.stdin.flush()
            return self._answer(limits.seconds + 10)
        except (OSError, ValueError, KeyError):
            self.close()
            return None

    def close(self) -> None:
        """Stop the server."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def _answer(self, timeout: float) -> dict[str, Any]:
        """The server's next line, as a dict; OSError if none came within TIMEOUT s."""
        assert self.process is not None and self.process.stdout is not None
        fd, deadline = self.process.stdout.fileno(), time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise OSError("the renderer did not answer in time")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise OSError("the renderer stopped")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        answer = json.loads(line)
        if not isinstance(answer, dict):
            raise ValueError("the renderer's answer is not an object")
        return answer


_WARM_UP_SECONDS = 120.0


def limit_renderer(memory_mb: int, seconds: int) -> None:
    """Hold this rendering process to MEMORY_MB of address space and SECONDS of CPU."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, memory_mb * 2**20))
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))


def _render_child() -> None:
    """In the rendering child: limit this process, then render the notebook on stdin to a page."""
    page, memory_mb, seconds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    limit_renderer(memory_mb, seconds)
    notebook_json = sys.stdin.buffer.read().decode("utf-8", "surrogatepass")
    _write_whole(page, _notebook_html(notebook_json))


def _write_whole(path: Path, text: str) -> None:
    """Write TEXT to PATH through a temporary file, so that PATH is never half written."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8", errors="replace")
    partial.replace(path)


def _plain_page(heading: str, text: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>'
            f"{html.escape(heading)}</title></head>\n<body><h1>{html.escape(heading)}</h1>\n"
            f"<p>{html.escape(text)}</p></body></html>\n")


# Markdown renders as HTML; whatever the student wrote is cleaned to these tags and attributes.
SAFE_TAGS = frozenset({
    "a", "abbr", "acronym", "b", "blockquote", "br", "code", "dd", "del", "details", "div", "dl",
    "dt", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre",
    "s", "span", "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead",
    "tr", "u", "ul",
})
SAFE_ATTRIBUTES = {
    "*": ["class", "id", "title"], "a": ["href"], "img": ["src", "alt", "width", "height"],
    "td": ["align", "colspan", "rowspan"], "th": ["align", "colspan", "rowspan"],
}


def _clean_html(element: str | bytes) -> str:
    """Student HTML reduced to SAFE_TAGS: no script, style, event handler or javascript: URL."""
    import bleach

    text = element.decode() if isinstance(element, bytes) else str(element)
    return bleach.clean(text, tags=SAFE_TAGS, attributes=SAFE_ATTRIBUTES,
                        protocols={"http", "https", "mailto"})


def _notebook_html(notebook_json: str) -> str:
    """The executed notebook through nbconvert: markdown rendered, student HTML cleaned, host
    paths scrubbed from outputs."""
    notebook = nbformat.reads(notebook_json, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = _scrub_outputs(cell.get("outputs", []))
    body, _ = _exporter().from_notebook_node(notebook)
    return body


@functools.cache
def _exporter() -> Any:
    """The HTML exporter, made once per process: its Jinja templates are compiled on its first
    page (a tenth of a second), so the warm renderer's children, forked after its warm-up page,
    each start from compiled templates. An exporter keeps nothing of a page for the next."""
    from nbconvert import HTMLExporter

    # nbconvert's own clean_html escapes <h1> and <p>, so markdown showed as literal tags; ours
    # keeps what markdown makes and still drops scripts (nbconvert issue #2016).
    return HTMLExporter(template_name="classic", sanitize_html=True,
                        filters={"clean_html": _clean_html})


# Class summary ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckSummary:
    name: str
    description: str
    public: bool
    max_points: float
    passed: int
    partial: int
    total: int

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else 0.0


def _histogram(results: list[Result], bins: int = 10) -> list[tuple[str, int]]:
    """Counts of scores in BINS equal slices of the maximum."""
    top = max((r.max_score for r in results), default=1.0) or 1.0
    counts = [0] * bins
    for r in results:
        counts[max(0, min(bins - 1, int(r.score / top * bins)))] += 1
    width = top / bins
    return [(f"{i * width:g}–{(i + 1) * width:g}", n) for i, n in enumerate(counts)]


def _check_summaries(results: list[Result]) -> list[CheckSummary]:
    by_name: dict[str, list] = {}
    for r in results:
        for c in r.checks:
            by_name.setdefault(c.name, []).append(c)
    return [
        CheckSummary(name, cs[0].description, cs[0].public, cs[0].max_points,
                     sum(c.outcome == "passed" for c in cs), sum(c.outcome == "partial" for c in cs),
                     len(results))
        for name, cs in by_name.items()
    ]


# The phases of grading one submission, in order, as the summary page and `grader run` name them.
PHASES = (("queue wait", "queue_s"), ("kernel start", "kernel_start_s"), ("warm-up", "warmup_s"),
          ("execution", "execution_s"), ("checks", "checks_s"), ("store", "store_s"),
          ("report", "report_s"))


def phases_line(results: list[Result], *, seconds: float, workers: int, start_s: float = 0.0,
                slot_ends: list[float] | None = None) -> str:
    """The mean of each phase over RESULTS that ran, and the grader's own overhead: the slots'
    time not spent executing notebooks or checking them, per submission; with START_S, the
    batch's start: the seconds before its first notebook began to run.

    The slots' time is SECONDS x WORKERS, or with SLOT_ENDS (the seconds into the batch at which
    each slot gave its last result) their sum plus the batch's close once: a slot that has
    nothing left to take while another finishes a long notebook is idle, not overhead."""
    ran = [r for r in results if r.status in RAN]
    if not ran:
        return ""
    means = ", ".join(f"{label} {statistics.fmean(getattr(r, attr) for r in ran):.2f}"
                      for label, attr in PHASES)
    useful = sum(r.execution_s + r.checks_s for r in ran)
    busy = seconds * workers
    if slot_ends:
        busy = min(busy, sum(slot_ends) + max(0.0, seconds - max(slot_ends)))
    overhead = max(0.0, busy - useful) / len(results)
    start = (f" (the batch's start, until its first notebook ran: {start_s:.2f} s, once)"
             if start_s > 0 else "")
    return (f"phases, mean s per notebook: {means}; {seconds / len(results):.2f} s per submission"
            f" with {workers} worker(s), of which {overhead:.2f} s the grader's own overhead{start}")


def _phase_stats(results: list[Result]) -> list[tuple[str, float, float, float]]:
    """Fastest, median and slowest of each phase, over the notebooks that actually ran."""
    ran = [r for r in results if r.status in RAN]
    if not ran:
        return []
    rows = []
    for label, attr in (*PHASES, ("total", "total_s")):
        values = [getattr(r, attr) for r in ran]
        rows.append((label, min(values), statistics.median(values), max(values)))
    return rows


def write_summary(results: list[Result], *, assignment: str, title: str, folder: Path,
                  pairs: list[Pair] | None = None) -> Path:
    """Write the class summary page, index.html, into FOLDER: the staff's page. PAIRS (from
    grader.reports.similarity) are listed there, each with a side-by-side page under similar/."""
    folder.mkdir(parents=True, exist_ok=True)
    scored = [r for r in results if r.status not in GRADER_FAULTS]
    scores = [r.score for r in scored]
    html_text = _environment().get_template("summary.html.j2").render(
        assignment=assignment, title=title, results=results, scored=scored,
        histogram=_histogram(scored), checks=_check_summaries(scored),
        phases=_phase_stats(results), feedback_name=feedback_name,
        mean=statistics.fmean(scores) if scores else 0.0,
        median=statistics.median(scores) if scores else 0.0,
        max_score=max((r.max_score for r in results), default=0.0),
        failures=[r for r in results if r.status != "graded"],
        not_isolated=[r for r in results if not r.sandboxed],
        pairs=None if pairs is None else list(zip(pairs, _write_pair_pages(pairs, title, folder),
                                                  strict=True)),
    )
    page = folder / SUMMARY_PAGE
    _write_whole(page, html_text)
    return page


def _write_pair_pages(pairs: list[Pair], title: str, folder: Path) -> list[str]:
    """Write a side-by-side page of each pair's written code into FOLDER/similar/ (the old ones
    removed); their links from the summary."""
    pair_folder = folder / SIMILAR_FOLDER
    pair_folder.mkdir(exist_ok=True)
    for old in pair_folder.glob("pair-*.html"):
        old.unlink()
    links = []
    for number, pair in enumerate(pairs, 1):
        name = f"pair-{number:04d}.html"
        _write_whole(pair_folder / name, _environment().get_template("similar.html.j2").render(
            title=title, pair=pair, feedback_name=feedback_name, diff=_side_by_side(pair)))
        links.append(f"{SIMILAR_FOLDER}/{name}")
    return links


def _side_by_side(pair: Pair) -> Markup:
    """The two students' written code side by side, differences marked; difflib escapes the
    code (&, <, >), and the column titles are escaped here."""
    table = difflib.HtmlDiff(tabsize=4, wrapcolumn=70).make_table(
        pair.first.text.splitlines(), pair.second.text.splitlines(),
        html.escape(pair.first.student), html.escape(pair.second.student))
    return Markup(table)


# Staff review pages (served by grader/review.py, never written to the reports folder) ----------

def review_list_page(results: list[Result], *, title: str, assignment: str) -> str:
    """The review page's list of the batch: each student's score, status and flags."""
    return _environment().get_template("review_list.html.j2").render(
        results=results, title=title, assignment=assignment, feedback_name=feedback_name,
        notebook_name=notebook_name, slug=slug)


def review_student_page(result: Result, *, title: str, rubric: tuple[Any, ...],
                        answers: dict[str, str], history: list[Any], csrf: str, feedback: str,
                        notebook: str | None) -> str:
    """One student's review page: the checks and the rubric items, each with its form, and
    every override made so far."""
    return _environment().get_template("review_student.html.j2").render(
        r=result, title=title, rubric=rubric, answers=answers, history=history, csrf=csrf,
        feedback=feedback, notebook=notebook,
        current={(o.kind, o.item): o for o in result.overrides})
