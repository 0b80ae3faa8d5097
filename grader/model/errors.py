"""The grader's own exception types; only the CLI turns them into a message and an exit code."""


class GraderError(Exception):
    """A user-facing problem: the message says what is wrong and what to do next."""


class AssignmentError(GraderError):
    """An assignment folder or its config is missing or invalid."""


class SubmissionError(GraderError):
    """A submissions folder or notebook cannot be used."""


class DataError(GraderError):
    """A dataset is missing, corrupt, or cannot be fetched or imported."""


class GradebookError(GraderError):
    """The gradebook cannot be opened or holds no such results."""


class ValidationFailed(GraderError):
    """`grader validate` found the reference or the starter graded wrongly."""


class PreflightFailed(GraderError):
    """A kernel or the checker cannot start on this machine: nothing was graded."""


class WorkRootTooDeep(GraderError):
    """The folder where run folders are made is too deep for the kernels' sockets."""


def gist(text: str) -> str:
    """The last non-blank line of TEXT (a traceback's exception, a log's last word), at most 200
    characters: what a one-line message quotes of a longer failure."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "no detail")[:200]
