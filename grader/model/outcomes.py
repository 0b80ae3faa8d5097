"""What one check produced, as the grader stores and reports it.

Plain records, importing neither pytest nor NumPy: the checker writes them as JSON, and the
scoring, the gradebook and the reports read them back without loading the checks' libraries.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Attachment:
    """A figure or a note a check adds to the student's feedback page."""

    kind: str  # image | text
    title: str
    content: str  # base64 PNG, or text


@dataclass
class CheckOutcome:
    """One check as the grader stores and reports it."""

    name: str
    description: str
    public: bool
    max_points: float
    points: float = 0.0
    outcome: str = "failed"  # passed | partial | failed | error
    message: str = ""  # for the student
    attachments: list[Attachment] = field(default_factory=list)
    fault: str = ""  # "grader" when the check's own code broke, not the student's values
    detail: str = ""  # for staff only: the traceback of a check that broke
