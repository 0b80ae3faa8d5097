"""The typed configuration of an assignment, read from its assignment.toml."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AssignmentError


@dataclass(frozen=True)
class Limits:
    """What one submission may use; the grader stops it past these."""

    total_seconds: float = 900.0  # wall time for the whole notebook
    cell_seconds: float = 300.0  # wall time for one cell
    kernel_start_seconds: float = 60.0  # for the kernel to start and answer
    check_seconds: float = 300.0  # for all checks of one submission together
    memory_mb: int = 4096  # address space of each process of the kernel
    disk_mb: int = 1024  # the working directory and /tmp each, and the largest file written
    processes: int = 256  # processes and threads of the kernel together (sandbox only)
    open_files: int = 1024  # open files of each process
    output_bytes: int = 2_000_000  # stored outputs of the executed notebook, all cells together


@dataclass(frozen=True)
class Data:
    """Where the student-visible files come from."""

    recipe: str | None = None  # a recipe in datasets/recipes/, or none
    student_files: tuple[str, ...] = ()  # files of the recipe copied next to the notebook


@dataclass(frozen=True)
class AssignmentConfig:
    """One assignment.toml."""

    title: str  # shown on reports and by `grader list`
    notebook: str  # file name of the instructor and starter notebook, e.g. assignment01.ipynb
    points: float  # total points; must equal the points of all checks
    seed: int = 0  # seeds Python, NumPy and TensorFlow before the first cell
    limits: Limits = field(default_factory=Limits)
    data: Data = field(default_factory=Data)


def _build(cls: type, table: dict[str, Any], where: str) -> Any:
    """Make a dataclass from a TOML table, refusing unknown keys and wrong types."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise AssignmentError(f"{where}: unknown setting {unknown[0]!r}; known: {', '.join(known)}")
    values: dict[str, Any] = {}
    for name, value in table.items():
        kind = known[name].type
        if kind in ("float",) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind.startswith("tuple") and isinstance(value, list):
            value = tuple(value)
        expected = {"str": str, "int": int, "float": float}.get(kind.split(" ")[0])
        if expected and (not isinstance(value, expected) or isinstance(value, bool)):
            raise AssignmentError(f"{where}: {name} must be a {kind}, found {value!r}")
        values[name] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise AssignmentError(f"{where}: {exc}") from None


def load_config(path: Path) -> AssignmentConfig:
    """Read and validate an assignment.toml."""
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AssignmentError(f"{path} is missing: every assignment needs an assignment.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise AssignmentError(f"{path} is not valid TOML: {exc}") from None
    limits = _build(Limits, table.pop("limits", {}), f"{path} [limits]")
    data = _build(Data, table.pop("data", {}), f"{path} [data]")
    config = _build(AssignmentConfig, {**table}, str(path))
    config = dataclasses.replace(config, limits=limits, data=data)
    if config.points <= 0:
        raise AssignmentError(f"{path}: points must be positive, found {config.points}")
    if not config.notebook.endswith(".ipynb"):
        raise AssignmentError(f"{path}: notebook must name an .ipynb file, found {config.notebook!r}")
    return config
