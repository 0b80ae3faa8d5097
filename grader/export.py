"""Each student's latest grade as CSV or JSON, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from .score import Result

COLUMNS = ("student", "score", "max_score", "status", "reason", "graded_at", "sha256", "device")
# A spreadsheet reads a cell starting with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def rows(results: list[Result]) -> list[dict[str, Any]]:
    """One row per result; a grader fault has no score (None), not zero."""
    return [
        {"student": r.student, "score": r.score if r.counted else None,
         "max_score": r.max_score, "status": r.status, "reason": r.reason,
         "graded_at": r.graded_at.isoformat(), "sha256": r.sha256, "device": r.device}
        for r in results
    ]


def neutralise(value: Any) -> Any:
    """VALUE, with a quote before text that a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return f"'{value}"
    return value


def render(results: list[Result], fmt: str) -> str:
    """RESULTS as CSV (cells neutralised, no score for grader faults) or as JSON."""
    table = rows(results)
    if fmt == "json":
        return json.dumps(table, indent=2, ensure_ascii=False) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else neutralise(v) for k, v in row.items()} for row in table)
    return buffer.getvalue()
