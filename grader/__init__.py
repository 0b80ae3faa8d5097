"""grader: grade Jupyter notebooks of a deep-learning course in sandboxed kernels.

The public surface; everything else is private and may change. Check authors import from
`grader.checker.checks` (see docs/checks.md).

The names below load their module on first use (PEP 562), so that importing one part of the
package, e.g. the trusted checker's `grader.checker.plugin` and `grader.checker.checks`, does not load the
gradebook, the notebook runner or the report templates.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grader.checker.checks import Credit, Feedback
    from grader.checker.exchange import StudentValueError
    from grader.grading.batch import grade_batch
    from grader.grading.executor import Batch, Settings
    from grader.grading.local import grade_submission
    from grader.model.assignments import Assignment, list_assignments, load_assignment
    from grader.model.config import AssignmentConfig, Limits
    from grader.model.errors import GraderError
    from grader.model.outcomes import CheckOutcome
    from grader.model.result import Result
    from grader.model.submission import Submission, discover
    from grader.store.gradebook import Gradebook

# Each public name and the module that defines it.
_HOMES = {
    "Assignment": "model.assignments", "list_assignments": "model.assignments",
    "load_assignment": "model.assignments", "AssignmentConfig": "model.config", "Limits": "model.config",
    "GraderError": "model.errors", "StudentValueError": "checker.exchange", "Gradebook": "store.gradebook",
    "Batch": "grading.executor", "Settings": "grading.executor", "grade_batch": "grading.batch",
    "grade_submission": "grading.local", "CheckOutcome": "model.outcomes", "Credit": "checker.checks",
    "Feedback": "checker.checks", "Result": "model.result", "Submission": "model.submission",
    "discover": "model.submission",
}

__all__ = [
    "Assignment", "AssignmentConfig", "Batch", "CheckOutcome", "Credit", "Feedback", "Gradebook",
    "GraderError", "Limits", "Result", "Settings", "StudentValueError", "Submission", "discover",
    "grade_batch", "grade_submission", "list_assignments", "load_assignment",
]


def __getattr__(name: str) -> Any:
    """Load a public name's module when the name is first used."""
    if name not in _HOMES:
        raise AttributeError(f"module 'grader' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
