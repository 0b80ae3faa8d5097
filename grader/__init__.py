"""grader: grade Jupyter notebooks of a deep-learning course in sandboxed kernels.

The public surface; everything else is private and may change.
"""

from .assignments import Assignment, list_assignments, load_assignment
from .config import AssignmentConfig, Limits
from .errors import GraderError
from .exchange import StudentValueError
from .gradebook import Gradebook
from .pipeline import Batch, Settings, grade_batch, grade_submission
from .plugin import CheckOutcome, Credit, Feedback
from .score import Result
from .submission import Submission, discover

__all__ = [
    "Assignment", "AssignmentConfig", "Batch", "CheckOutcome", "Credit", "Feedback", "Gradebook",
    "GraderError", "Limits", "Result", "Settings", "StudentValueError", "Submission", "discover",
    "grade_batch", "grade_submission", "list_assignments", "load_assignment",
]
