"""The typed configuration of an assignment, read from its assignment.toml."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AssignmentError
from .settings import NOT_EMPTY, PLAIN_NAME, POSITIVE, Rule, from_table, plain_name, setting

NOTEBOOK = Rule(lambda v: plain_name(v) and v.endswith(".ipynb"), "a file name ending in .ipynb")
SEED = Rule(lambda v: 0 <= v < 2**32, "a whole number from 0 to 2**32 - 1")
FILE_NAMES = Rule(lambda v: all(plain_name(name) for name in v),
                  "a list of plain file names (no folder, no '..')")


@dataclass(frozen=True)
class Limits:
    """What one submission may use; the grader stops it past these. Every limit is above 0."""

    total_seconds: float = setting(900.0, POSITIVE)  # wall time for the whole notebook
    cell_seconds: float = setting(300.0, POSITIVE)  # wall time for one cell
    kernel_start_seconds: float = setting(60.0, POSITIVE)  # for the kernel to start and answer
    check_seconds: float = setting(300.0, POSITIVE)  # for all checks of one submission together
    memory_mb: int = setting(4096, POSITIVE)  # address space of each kernel process (GPU: cgroup)
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
class AssignmentConfig:
    """One assignment.toml."""

    title: str = setting(rule=NOT_EMPTY)  # shown on reports and by `grader list`
    notebook: str = setting(rule=NOTEBOOK)  # instructor and starter notebook, e.g. assignment01.ipynb
    points: float = setting(rule=POSITIVE)  # total points; must equal the points of all checks
    seed: int = setting(0, SEED)  # seeds Python, NumPy and TensorFlow before the first cell
    limits: Limits = field(default_factory=Limits)
    data: Data = field(default_factory=Data)


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
    config: AssignmentConfig = from_table(AssignmentConfig, table, where=str(path), error=AssignmentError)
    if config.data.student_files and config.data.recipe is None:
        raise AssignmentError(f"{path}: data.student_files needs data.recipe, the recipe that makes them")
    return config
