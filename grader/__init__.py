"""grader: grade Jupyter notebooks of a deep-learning course in sandboxed kernels.

The public surface; everything else is private and may change. Check authors import from
`grader.checks` (see docs/checks.md).

The names below load their module on first use (PEP 562), so that importing one part of the
package, e.g. the trusted checker's `grader.plugin` and `grader.checks`, does not load the
gradebook, the notebook runner or the report templates.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .assignments import Assignment, list_assignments, load_assignment
    from .checks import Credit, Feedback
    from .config import AssignmentConfig, Limits
    from .errors import GraderError
    from .exchange import StudentValueError
    from .gradebook import Gradebook
    from .outcomes import CheckOutcome
    from .pipeline import Batch, Settings, grade_batch, grade_submission
    from .score import Result
    from .submission import Submission, discover

# Each public name and the module that defines it.
_HOMES = {
    "Assignment": "assignments", "list_assignments": "assignments", "load_assignment": "assignments",
    "AssignmentConfig": "config", "Limits": "config", "GraderError": "errors",
    "StudentValueError": "exchange", "Gradebook": "gradebook", "Batch": "pipeline",
    "Settings": "pipeline", "grade_batch": "pipeline", "grade_submission": "pipeline",
    "CheckOutcome": "outcomes", "Credit": "checks", "Feedback": "checks", "Result": "score",
    "Submission": "submission", "discover": "submission",
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
