"""Feedback for each student and a summary for the class, as self-contained HTML pages.

The summary (index.html) is the staff page: it shows grader problems with their staff detail,
and pairs of similar submissions with a side-by-side page of each (similar/, staff only).
A student's pages never show staff detail nor a path of the grading machine. Each executed
notebook's page is rendered in a child process with time and memory limits (grader.reports.renderer).
"""

from __future__ import annotations

import difflib
import functools
import html
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from grader.model.errors import GraderError
from grader.model.late import as_utc, how_late
from grader.model.paths import package_file
from grader.model.result import GRADER_FAULTS, STATUSES, Result, Status, override_points
from grader.model.submission import slug
from grader.reports.renderer import (
    DEFAULT_LIMITS,
    Renderer,
    RenderLimits,
    render_notebook_page,
    scrub_paths,
    write_whole,
)
from grader.reports.similarity import Pair

SUMMARY_PAGE = "index.html"
SIMILAR_FOLDER = "similar"  # staff pages of similar pairs; no student's page is a folder
NOTEBOOK_SUFFIX = "~notebook.html"  # a slug has "~" only before its 10-digit digest: no clash
GRADER_PROBLEM = "not graded: grader problem"
# Statuses whose kernel ran the notebook: the only ones whose runtimes say anything.
RAN = frozenset({Status.GRADED, Status.CELL_ERROR, Status.TIMEOUT, Status.KERNEL_DIED})


class ReportError(GraderError):
    """A student's pages could not be rendered; plain fallback pages stand in their place."""


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
                   limits: RenderLimits = DEFAULT_LIMITS, renderer: Renderer | None = None) -> Path:
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
    write_whole(page, _feedback_html(result, title, with_notebook))
    if with_notebook and result.executed_notebook:
        problem = render_notebook_page(result.executed_notebook, notebook_page, limits, renderer)
        if problem:
            notebook_page.with_name(f".{notebook_page.name}.partial").unlink(missing_ok=True)
            write_whole(notebook_page, _plain_page(
                f"{title}: your executed notebook",
                "Your executed notebook could not be shown as a web page: it is too large or too "
                "complex to render (a very long markdown cell, for example). This does not change "
                "your grade; open your own notebook in Jupyter to see it."))
            raise ReportError(f"the executed notebook of {result.student} could not be rendered "
                              f"({problem}); a plain page says so instead")
    return page


def _feedback_html(result: Result, title: str, with_notebook: bool) -> str:
    """RESULT's feedback page; it names the run it shows (notebook, grading key, time), so that
    a page of another run is never taken for it (page_is_current)."""
    return _environment().get_template("feedback.html.j2").render(
        r=result, title=title, notebook_page=notebook_name(result.student) if with_notebook else None)


def page_is_current(result: Result, *, title: str, folder: Path, notebook_html: bool | None) -> bool:
    """Whether FOLDER holds RESULT's feedback page as write_feedback writes it now (with the
    executed notebook's page, where NOTEBOOK_HTML asks for it; None: with or without it): a page
    missing, or one that shows another run (a resubmission, a regrade) or an older state of
    this one (an override, a late penalty), is not."""
    try:
        found = (folder / feedback_name(result.student)).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    wanted = (True, False) if notebook_html is None else (notebook_html,)
    for linked in {bool(w and result.executed_notebook) for w in wanted}:
        if linked and not (folder / notebook_name(result.student)).is_file():
            continue  # the notebook's page is gone (or was never written)
        if found == _feedback_html(result, title, linked):
            return True
    return False


def write_feedback_pages(results: list[Result], *, title: str, folder: Path, notebook_html: bool,
                         limits: RenderLimits = DEFAULT_LIMITS) -> list[str]:
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


def _plain_page(heading: str, text: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>'
            f"{html.escape(heading)}</title></head>\n<body><h1>{html.escape(heading)}</h1>\n"
            f"<p>{html.escape(text)}</p></body></html>\n")


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
        failures=[r for r in results if r.status != Status.GRADED],
        not_isolated=[r for r in results if not r.sandboxed],
        pairs=None if pairs is None else list(zip(pairs, _write_pair_pages(pairs, title, folder),
                                                  strict=True)),
    )
    page = folder / SUMMARY_PAGE
    write_whole(page, html_text)
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
        write_whole(pair_folder / name, _environment().get_template("similar.html.j2").render(
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
