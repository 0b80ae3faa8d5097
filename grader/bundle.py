"""The student bundle (`grader bundle`) and the students' own check of it (`grader check`).

A bundle is a zip of one folder: the starter notebook, the student-visible data beside it (as
`grader run` puts it in a kernel's working directory), the public checks with the part of
checks/conftest.py they use, `bundle.toml` (what `grader check` needs: the notebook's name, the
seed, the limits, the points of the public checks and how many are hidden) and a README. Nothing
hidden goes in: no solution, no hidden check or helper only hidden checks use, no hidden data,
no data recipe. `grader check` reads the unzipped folder as an assignment whose checks are the
public ones, and grades the notebook through the pipeline like any submission.
"""

from __future__ import annotations

import ast
import asyncio
import shutil
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .assignments import Assignment
from .config import FILE_NAMES, NOTEBOOK, SEED, AssignmentConfig, Data, Limits
from .data.prepare import Prepared
from .devices import CPU, Device, threads_per_kernel
from .errors import AssignmentError
from .pipeline import grade_submission, student_data_files
from .preflight import CollectedCheck, collect_checks, preflight_checks
from .score import Result
from .settings import NOT_EMPTY, PLAIN_NAME, from_table, setting
from .submission import Submission, slug

INFO = "bundle.toml"  # the bundle's description, read by `grader check`
CONFTEST = "conftest.py"


@dataclass(frozen=True)
class BundleInfo:
    """bundle.toml: what `grader check` needs to check the notebook, and nothing of the hidden
    part but its points."""

    assignment: str = setting(rule=PLAIN_NAME)  # the assignment's name in the course
    title: str = setting(rule=NOT_EMPTY)
    notebook: str = setting(rule=NOTEBOOK)  # the notebook beside bundle.toml
    public_points: float = setting(0.0)  # what the public checks are worth together
    hidden_points: float = setting(0.0)  # what the checks students never see are worth
    seed: int = setting(0, SEED)
    data: tuple[str, ...] = setting((), FILE_NAMES)  # student-visible files beside the notebook
    limits: Limits = field(default_factory=Limits)


def write_bundle(assignment: Assignment, prepared: Prepared | None, output: Path) -> list[str]:
    """Write ASSIGNMENT's student bundle to OUTPUT (a zip of one folder named after it); return
    the members written."""
    files = bundle_files(assignment, prepared)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in sorted(files.items()):
            member = f"{assignment.name}/{name}"
            if isinstance(content, Path):
                archive.write(content, member)
            else:
                archive.writestr(member, content)
    partial.replace(output)
    return sorted(f"{assignment.name}/{name}" for name in files)


def bundle_files(assignment: Assignment, prepared: Prepared | None) -> dict[str, Path | str]:
    """Every file of the bundle, by its path in the bundle's folder: a file to copy, or text."""
    config = assignment.config
    starter = assignment.release_notebook
    if not starter.is_file():
        raise AssignmentError(f"the starter notebook {starter} is missing: run `grader release "
                              f"{assignment.name}` first")
    files: dict[str, Path | str] = {config.notebook: starter}
    data = _student_data(assignment, prepared)
    for name, path in data.items():
        for source in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if source.is_file():
                files[str(Path(name) / source.relative_to(path)) if path.is_dir() else name] = source
    public = sorted(p for p in assignment.public_checks.rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts)
    if not any(p.name.startswith("test_") for p in public):
        raise AssignmentError(f"{assignment.public_checks} holds no public checks (test_*.py): "
                              "a bundle without them checks nothing")
    for path in public:
        files[f"checks/public/{path.relative_to(assignment.public_checks)}"] = path
    conftest = assignment.root / "checks" / CONFTEST
    if conftest.is_file():
        kept = public_conftest(conftest.read_text(encoding="utf-8"),
                               [p.read_text(encoding="utf-8") for p in public if p.suffix == ".py"])
        if kept is not None:
            files[f"checks/{CONFTEST}"] = kept
    public_points = _public_points(assignment)
    info = BundleInfo(assignment=assignment.name, title=config.title, notebook=config.notebook,
                      public_points=public_points,
                      hidden_points=round(config.points - public_points, 4), seed=config.seed,
                      data=tuple(data), limits=config.limits)
    files[INFO] = info_text(info)
    files["README.md"] = readme(info)
    return files


def _student_data(assignment: Assignment, prepared: Prepared | None) -> dict[str, Path]:
    """The student-visible data by name, exactly what a kernel gets (pipeline._Kernel)."""
    files = student_data_files(assignment, prepared)
    missing = [name for name, path in files.items() if not path.exists()]
    if missing:
        raise AssignmentError(f"the prepared data of {assignment.name} has no {missing[0]}: check "
                              f"[data] student_files in {assignment.root / 'assignment.toml'}")
    return files


def _public_points(assignment: Assignment) -> float:
    """What the public checks are worth, as pytest collects them in the trusted process."""
    checks = asyncio.run(collect_checks(assignment, sandboxed=False))
    unmarked = [c for c in checks if c.public and not c.marked]
    if unmarked:
        raise AssignmentError(f"{unmarked[0].file}: {unmarked[0].name} has no "
                              "@pytest.mark.points(n): every check must say what it is worth")
    return round(sum(c.points for c in checks if c.public), 4)


def public_conftest(conftest: str, public_sources: list[str]) -> str | None:
    """The part of a checks/conftest.py that the public checks use: the imports, the fixtures
    and helpers they name (and what those name in turn), autouse fixtures; None when they use
    none of it. What only hidden checks use stays out."""
    tree = ast.parse(conftest)
    defined: dict[str, ast.stmt] = {}
    for stmt in tree.body:
        for name in _bound_names(stmt):
            defined[name] = stmt
    needed = {name for source in public_sources for name in _names(ast.parse(source))}
    keep: set[int] = set()  # the statements kept, by id
    todo = [defined[n] for n in needed if n in defined] + [s for s in tree.body if _autouse(s)]
    while todo:
        stmt = todo.pop()
        if id(stmt) not in keep:
            keep.add(id(stmt))
            todo.extend(defined[n] for n in _names(stmt) if n in defined)
    if not keep:
        return None
    lines = conftest.splitlines()
    parts = ['"""What the public checks use of the course\'s checks/conftest.py."""']
    for stmt in tree.body:
        if _is_import(stmt) or id(stmt) in keep:
            first = min([stmt.lineno, *(d.lineno for d in getattr(stmt, "decorator_list", []))])
            parts.append("\n".join(lines[first - 1: stmt.end_lineno]))
    return "\n\n".join(parts) + "\n"


def _bound_names(stmt: ast.stmt) -> list[str]:
    """The top-level names STMT defines (a function, a class, an assignment's targets)."""
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [stmt.name]
    targets = stmt.targets if isinstance(stmt, ast.Assign) else (
        [stmt.target] if isinstance(stmt, ast.AnnAssign | ast.AugAssign) else [])
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def _names(node: ast.AST) -> set[str]:
    """Every name NODE mentions: identifiers, parameters (fixtures) and strings
    (`request.getfixturevalue("x")`, `usefixtures("x")`)."""
    found: set[str] = set()
    for item in ast.walk(node):
        if isinstance(item, ast.Name):
            found.add(item.id)
        elif isinstance(item, ast.arg):
            found.add(item.arg)
        elif isinstance(item, ast.Constant) and isinstance(item.value, str):
            found.add(item.value)
    return found


def _autouse(stmt: ast.stmt) -> bool:
    """Whether STMT is a fixture every check uses without naming it."""
    return any("autouse" in ast.unparse(d) for d in getattr(stmt, "decorator_list", []))


def _is_import(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Import | ast.ImportFrom)


def info_text(info: BundleInfo) -> str:
    """bundle.toml for INFO."""
    limits = info.limits
    lines = ["# What `grader check` needs to check the notebook: written by `grader bundle`.",
             f"assignment = {_toml(info.assignment)}", f"title = {_toml(info.title)}",
             f"notebook = {_toml(info.notebook)}", f"public_points = {info.public_points!r}",
             f"hidden_points = {info.hidden_points!r}", f"seed = {info.seed}",
             f"data = [{', '.join(_toml(n) for n in info.data)}]", "", "[limits]"]
    lines += [f"{name} = {getattr(limits, name)!r}" for name in limits.__dataclass_fields__]
    return "\n".join(lines) + "\n"


def _toml(text: str) -> str:
    """TEXT as a TOML basic string."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c >= " " else f"\\u{ord(c):04x}" for c in escaped) + '"'


def readme(info: BundleInfo) -> str:
    """The bundle's README: what to do, how to check, what is graded."""
    total = info.public_points + info.hidden_points
    data = ", ".join(f"`{n}`" for n in info.data) or "none"
    return f"""# {info.title}

Open `{info.notebook}` in Jupyter from this folder and write your code where it says
`raise NotImplementedError()` (and your answers where it says `YOUR ANSWER HERE`). The data it
reads is here beside it: {data}.

## Check your work before you hand it in

With the grader installed (`pip install grader`, as your course says), run in this folder:

```
grader check {info.notebook}
```

or, in a cell of the notebook itself (save the notebook first: the saved file is checked):

```
!grader check {info.notebook}
```

It runs the whole notebook in a fresh kernel, as the grading will (in a sandbox where
bubblewrap is installed; otherwise it says so and runs it without one), then runs the public
checks in `checks/public/` and prints each one with its points and message. Nothing is sent
anywhere and nothing is handed in.

## What is graded

The notebook is worth {total:g} points. The public checks here are worth {info.public_points:g}
of them; {info.hidden_points:g} points come from hidden checks that run only when your hand-in
is graded (on data you do not have), so full public points do not mean full marks. The notebook
must run from top to bottom in a fresh kernel: each cell within {info.limits.cell_seconds:g} s,
the whole notebook within {info.limits.total_seconds:g} s, in {info.limits.memory_mb} MB of
memory. Hand in `{info.notebook}` as your course tells you.
"""


def read_info(folder: Path) -> BundleInfo:
    """The bundle.toml of FOLDER; one AssignmentError line when it is missing or wrong."""
    path = folder / INFO
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AssignmentError(f"{folder} holds no {INFO}: run `grader check` inside the unzipped "
                              "bundle folder, or pass --assignment with that folder") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise AssignmentError(f"{path} cannot be read ({exc}): unzip the bundle again") from None
    info: BundleInfo = from_table(BundleInfo, table, where=str(path), error=AssignmentError)
    return info


@dataclass(frozen=True)
class Bundled:
    """An unzipped bundle as the pipeline grades it: the assignment of its public checks only
    and its data, with an empty stand-in for the hidden data folder."""

    info: BundleInfo
    assignment: Assignment
    prepared: Prepared | None


def open_bundle(folder: Path, hidden_stand_in: Path) -> Bundled:
    """FOLDER (an unzipped bundle) as an assignment whose checks are its public ones; the
    checks' hidden-data folder is HIDDEN_STAND_IN, an empty folder the caller made."""
    folder = folder.resolve()
    info = read_info(folder)
    for name in (info.notebook, *info.data):
        if not (folder / name).exists():
            raise AssignmentError(f"{folder / name} is missing: unzip the whole bundle again")
    if not (folder / "checks" / "public").is_dir():
        raise AssignmentError(f"{folder / 'checks' / 'public'} is missing: unzip the whole bundle again")
    config = AssignmentConfig(title=info.title, notebook=info.notebook,
                              points=info.public_points, seed=info.seed, limits=info.limits,
                              data=Data(student_files=info.data))
    assignment = Assignment(name=info.assignment, root=folder, config=config)
    prepared = Prepared(student_dir=folder, hidden_dir=hidden_stand_in) if info.data else None
    return Bundled(info, assignment, prepared)


def lay_out(files: dict[str, Path | str], folder: Path) -> None:
    """Write the bundle's FILES into FOLDER, as unzipping the bundle would."""
    for name, content in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, target)
        else:
            target.write_text(content, encoding="utf-8")


def check_notebook(bundled: Bundled, notebook: Path, *, sandboxed: bool,
                   device: Device = CPU) -> tuple[Result, list[CollectedCheck]]:
    """Grade NOTEBOOK with the bundle's public checks through the pipeline, as `grader run`
    grades a submission (its preflight's check collection, then grade_submission): no
    gradebook, nothing written but the run's own temporary folders. The result, and the
    checks as collected."""
    checks = preflight_checks(bundled.assignment, sandboxed=sandboxed)
    submission = Submission(student=slug(notebook.stem), path=notebook)
    result = grade_submission(bundled.assignment, submission, prepared=bundled.prepared,
                              device=device, threads=threads_per_kernel(1), sandboxed=sandboxed,
                              key="public checks of a bundle")  # nothing stores it
    return result, checks
