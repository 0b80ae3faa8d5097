"""Feedback for each student and a summary for the class, as self-contained HTML pages."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import jinja2
import nbformat

from .paths import package_file
from .score import STATUSES, Result
from .submission import slug


def _template_source(name: str) -> str | None:
    """The text of the shipped template NAME, or None (Jinja2 then says it is not found)."""
    path = package_file("templates", name)
    return path.read_text(encoding="utf-8") if path.is_file() else None


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_template_source),
        autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["seconds"] = lambda s: f"{s:.1f} s"
    env.filters["points"] = lambda p: f"{p:g}"
    env.globals["STATUSES"] = STATUSES
    return env


def feedback_name(student: str) -> str:
    """The file name of a student's feedback page."""
    return f"{slug(student)}.html"


def write_feedback(result: Result, *, title: str, folder: Path, notebook_html: bool) -> Path:
    """Write RESULT's feedback page (and the executed notebook beside it) into FOLDER."""
    folder.mkdir(parents=True, exist_ok=True)
    page = folder / feedback_name(result.student)
    notebook_page = None
    if notebook_html and result.executed_notebook:
        notebook_page = page.with_suffix(".notebook.html")
        notebook_page.write_text(_notebook_html(result.executed_notebook), encoding="utf-8")
    html = _environment().get_template("feedback.html.j2").render(
        r=result, title=title, notebook_page=notebook_page.name if notebook_page else None,
    )
    page.write_text(html, encoding="utf-8")
    return page


def _notebook_html(notebook_json: str) -> str:
    """The executed notebook through nbconvert, student HTML sanitised."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="classic", sanitize_html=True)
    body, _ = exporter.from_notebook_node(nbformat.reads(notebook_json, as_version=4))
    return body


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
        counts[min(bins - 1, int(r.score / top * bins))] += 1
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


def _phase_stats(results: list[Result]) -> list[tuple[str, float, float, float]]:
    rows = []
    for label, attr in (("kernel start", "kernel_start_s"), ("execution", "execution_s"),
                        ("checks", "checks_s"), ("report", "report_s"), ("total", "total_s")):
        values = [getattr(r, attr) for r in results] or [0.0]
        rows.append((label, min(values), statistics.median(values), max(values)))
    return rows


def write_summary(results: list[Result], *, assignment: str, title: str, folder: Path) -> Path:
    """Write the class summary page, index.html, into FOLDER."""
    folder.mkdir(parents=True, exist_ok=True)
    scores = [r.score for r in results]
    html = _environment().get_template("summary.html.j2").render(
        assignment=assignment, title=title, results=results,
        histogram=_histogram(results), checks=_check_summaries(results),
        phases=_phase_stats(results), feedback_name=feedback_name,
        mean=statistics.fmean(scores) if scores else 0.0,
        median=statistics.median(scores) if scores else 0.0,
        max_score=max((r.max_score for r in results), default=0.0),
        failures=[r for r in results if r.status != "graded"],
    )
    page = folder / "index.html"
    page.write_text(html, encoding="utf-8")
    return page
