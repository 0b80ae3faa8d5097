"""The typed configuration of an assignment, read from its assignment.toml."""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.model.errors import AssignmentError
from grader.model.schema import (
    NOT_EMPTY,
    PLAIN_NAME,
    POSITIVE,
    Rule,
    from_table,
    plain_name,
    relative_path,
    setting,
)

NOTEBOOK = Rule(lambda v: plain_name(v) and v.endswith(".ipynb"), "a file name ending in .ipynb")
SEED = Rule(lambda v: 0 <= v < 2**32, "a whole number from 0 to 2**32 - 1")
FILE_NAMES = Rule(lambda v: all(plain_name(name) for name in v),
                  "a list of plain file names (no folder, no '..')")
PENALTIES = {"per_day": 86_400.0, "per_hour": 3_600.0}  # seconds in each started unit of lateness
PENALTY = Rule(lambda v: v in PENALTIES, f"one of {', '.join(map(repr, PENALTIES))}")
FRACTION = Rule(lambda v: 0 <= v <= 1, "a fraction from 0 to 1 (0.1 is 10% of the points)")
RELATIVE_CSV = Rule(lambda v: relative_path(v) and v.endswith(".csv"),
                    "a .csv file inside the assignment folder (a relative path without '..')")


def parse_moment(text: str) -> dt.datetime | None:
    """TEXT as an ISO-8601 date-time with a UTC offset, else None."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


MOMENT = Rule(lambda v: parse_moment(v) is not None,
              "an ISO-8601 date-time with a UTC offset, e.g. 2026-03-01T23:59:00+01:00")


@dataclass(frozen=True)
class Limits:
    """What one submission may use; the grader stops it past these. Every limit is above 0."""

    total_seconds: float = setting(900.0, POSITIVE)  # wall time for the whole notebook
    cell_seconds: float = setting(300.0, POSITIVE)  # wall time for one cell
    kernel_start_seconds: float = setting(60.0, POSITIVE)  # for the kernel to start and answer
    check_seconds: float = setting(300.0, POSITIVE)  # for all checks of one submission together
    memory_mb: int = setting(4096, POSITIVE)  # address space of each kernel process (GPU: cgroup)
    cpus: float = setting(1.0, POSITIVE)  # cores a Ray task asks for and its kernel may use (--executor ray)
    disk_mb: int = setting(1024, POSITIVE)  # working directory and /tmp each, and the largest file
    processes: int = setting(256, POSITIVE)  # processes and threads of the kernel (sandbox only)
    open_files: int = setting(1024, POSITIVE)  # open files of each process
    output_bytes: int = setting(2_000_000, POSITIVE)  # stored outputs of the executed notebook


@dataclass(frozen=True)
class Data:
    """Where the student-visible files come from."""

    recipe: str | None = setting(None, PLAIN_NAME)  # datasets/recipes/RECIPE.py, or none
    student_files: tuple[str, ...] = setting((), FILE_NAMES)  # recipe files copied beside the notebook


@dataclass(frozen=True)
class Deadline:
    """When the assignment is due and what handing it in late costs (see grader/model/late.py)."""

    due: str = setting(rule=MOMENT)  # ISO-8601 with offset; handed in after it is late
    penalty: str = setting("per_day", PENALTY)  # "per_day" or "per_hour": the unit `rate` is per
    rate: float = setting(0.0, FRACTION)  # fraction of the maximum points lost per started unit
    cap: float = setting(1.0, FRACTION)  # the largest fraction lateness takes (before the cutoff)
    cutoff: str | None = setting(None, MOMENT)  # after it the score is 0 (moved by an extension)
    extensions: str | None = setting(None, RELATIVE_CSV)  # CSV (student, due) of later due dates

    @property
    def due_at(self) -> dt.datetime:
        moment = parse_moment(self.due)
        assert moment is not None  # checked when the file was read
        return moment

    @property
    def cutoff_at(self) -> dt.datetime | None:
        return None if self.cutoff is None else parse_moment(self.cutoff)

    @property
    def unit_seconds(self) -> float:
        """The length of one unit of lateness, in seconds."""
        return PENALTIES[self.penalty]


@dataclass(frozen=True)
class RubricItem:
    """A written (markdown) answer the notebook asks for, graded by staff in `grader review`."""

    name: str = setting(rule=PLAIN_NAME)  # e.g. "q1": names the item in the gradebook
    cell: str = setting(rule=NOT_EMPTY)  # the answer's markdown cell: its cell id, or a heading in it
    points: float = setting(rule=POSITIVE)  # the most a reviewer may give; part of `points`
    description: str = setting("")  # what a good answer holds, for the reviewer


@dataclass(frozen=True)
class AssignmentConfig:
    """One assignment.toml."""

    title: str = setting(rule=NOT_EMPTY)  # shown on reports and by `grader list`
    notebook: str = setting(rule=NOTEBOOK)  # instructor and starter notebook, e.g. assignment01.ipynb
    points: float = setting(rule=POSITIVE)  # total points; must equal the points of all checks
    seed: int = setting(0, SEED)  # seeds Python, NumPy and TensorFlow before the first cell
    limits: Limits = field(default_factory=Limits)
    data: Data = field(default_factory=Data)
    deadline: Deadline | None = None  # no [deadline] table: nothing is ever late
    rubric: tuple[RubricItem, ...] = ()  # [[rubric]] tables: staff-graded answers, part of `points`

    @property
    def rubric_points(self) -> float:
        """The points of the rubric items; the checks are worth `points` less these."""
        return round(sum(item.points for item in self.rubric), 4)

    @property
    def check_points(self) -> float:
        """What the checks together must be worth."""
        return round(self.points - self.rubric_points, 4)


def load_config(path: Path) -> AssignmentConfig:
    """Read and validate an assignment.toml; any problem is one AssignmentError line."""
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AssignmentError(f"{path} is missing: every assignment needs an assignment.toml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AssignmentError(f"{path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AssignmentError(f"{path} is not valid TOML: {exc}") from None
    rubric = _rubric(table.pop("rubric", []), path)
    config: AssignmentConfig = from_table(AssignmentConfig, _moments_as_text(table), where=str(path),
                                          error=AssignmentError, given={"rubric": rubric})
    if config.rubric_points >= config.points:
        raise AssignmentError(f"{path}: the rubric items are worth {config.rubric_points:g} of"
                              f" points = {config.points:g}: leave points for the checks")
    if config.data.student_files and config.data.recipe is None:
        raise AssignmentError(f"{path}: data.student_files needs data.recipe, the recipe that makes them")
    deadline = config.deadline
    if deadline is not None and deadline.cutoff_at is not None and deadline.cutoff_at < deadline.due_at:
        raise AssignmentError(f"{path}: deadline.cutoff ({deadline.cutoff}) is before deadline.due"
                              f" ({deadline.due}): the cutoff must be the same time or later")
    return config


def _rubric(tables: object, path: Path) -> tuple[RubricItem, ...]:
    """The [[rubric]] tables of PATH as RubricItems, names unique; one AssignmentError line if not."""
    if not isinstance(tables, list):
        raise AssignmentError(f"{path}: rubric must be a list of tables ([[rubric]]), found {tables!r}")
    items: list[RubricItem] = []
    for number, table in enumerate(tables, 1):
        item = from_table(RubricItem, table, where=str(path), error=AssignmentError,
                          prefix=f"rubric[{number}].")
        if any(other.name == item.name for other in items):
            raise AssignmentError(f"{path}: rubric[{number}].name {item.name!r} is used twice:"
                                  " give each rubric item its own name")
        items.append(item)
    return tuple(items)


def _moments_as_text(table: dict[str, Any]) -> dict[str, Any]:
    """TABLE with the [deadline] table's TOML date-times (written without quotes) as ISO text,
    so that quoted and unquoted dates are checked alike (a date-time without offset is refused)."""
    deadline = table.get("deadline")
    if not isinstance(deadline, dict):
        return table
    moments = (dt.datetime, dt.date, dt.time)
    converted = {k: v.isoformat() if isinstance(v, moments) else v for k, v in deadline.items()}
    return {**table, "deadline": converted}
