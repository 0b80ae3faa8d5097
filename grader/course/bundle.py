"""The student bundle (`grader bundle`) and the students' own check of it (`grader check`).

A bundle is a zip of one folder: the starter notebook, the student-visible data beside it (as
`grader run` puts it in a kernel's working directory), the public checks with the part of
checks/conftest.py they use, `bundle.toml` (what `grader check` needs: the notebook's name, the
seed, the limits, the points of the public checks and how many are hidden) and a README. Nothing
hidden goes in: no solution, no hidden check or helper only hidden checks use, no hidden data,
no data recipe. A public check that would show a solution line (through a reference
implementation it compares with, say) is withheld: its points count with the hidden ones, and
bundle.toml names it. `grader check` reads the unzipped folder as an assignment whose checks are the
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

from grader.course.release import read_source, solution_lines
from grader.data.prepare import Prepared
from grader.grading.devices import CPU, Device, threads_per_kernel
from grader.grading.local import grade_submission
from grader.grading.preflight import CollectedCheck, collect_checks, preflight_checks
from grader.grading.stage import student_data_files
from grader.model.assignments import Assignment
from grader.model.config import FILE_NAMES, NOTEBOOK, SEED, AssignmentConfig, Data, Limits
from grader.model.errors import AssignmentError
from grader.model.result import Result
from grader.model.schema import NOT_EMPTY, PLAIN_NAME, from_table, setting
from grader.model.submission import Submission, slug

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
    written_points: float = setting(0.0)  # the written answers, graded by the staff (the rubric)
    seed: int = setting(0, SEED)
    data: tuple[str, ...] = setting((), FILE_NAMES)  # student-visible files beside the notebook
    withheld: tuple[str, ...] = setting(())  # public checks left out: they would show a solution
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
    checks, withheld = public_checks(assignment)
    files.update(checks)
    leaks = sorted(_lines(*(c for c in files.values() if isinstance(c, str)))
                   & solution_lines(read_source(assignment)))
    if leaks:
        raise AssignmentError(f"the bundle of {assignment.name} would show the solution line "
                              f"{leaks[0]!r}: move it out of the public checks")
    collected = _public_checks_collected(assignment)
    public_points = round(sum(c.points for c in collected if _base(c.name) not in withheld), 4)
    info = BundleInfo(assignment=assignment.name, title=config.title, notebook=config.notebook,
                      public_points=public_points,
                      hidden_points=round(config.check_points - public_points, 4),
                      written_points=config.rubric_points, seed=config.seed,
                      data=tuple(data), withheld=tuple(withheld), limits=config.limits)
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


def _public_checks_collected(assignment: Assignment) -> list[CollectedCheck]:
    """The public checks as pytest collects them in the trusted process, each with its points."""
    checks = [c for c in asyncio.run(collect_checks(assignment, sandboxed=False)) if c.public]
    unmarked = [c for c in checks if not c.marked]
    if unmarked:
        raise AssignmentError(f"{unmarked[0].file}: {unmarked[0].name} has no "
                              "@pytest.mark.points(n): every check must say what it is worth")
    return checks


def _base(name: str) -> str:
    """A check's function name, without pytest's parameters."""
    return name.split("[", 1)[0]


def public_checks(assignment: Assignment) -> tuple[dict[str, Path | str], list[str]]:
    """The public checks' files for the bundle (by path in it) with what they use of
    checks/conftest.py, and the names of the public checks left out because they, or the
    helpers they use, hold a line of the solution (they count with the hidden points)."""
    solution = solution_lines(read_source(assignment))
    path = assignment.root / "checks" / CONFTEST
    conftest = _Source(path.read_text(encoding="utf-8") if path.is_file() else "")
    files: dict[str, Path | str] = {}
    withheld: list[str] = []
    used: set[str] = set()
    for check_file in sorted(p for p in assignment.public_checks.rglob("*")
                             if p.is_file() and "__pycache__" not in p.parts):
        where = f"checks/public/{check_file.relative_to(assignment.public_checks)}"
        if check_file.suffix != ".py":
            files[where] = check_file
            continue
        module = _Source(check_file.read_text(encoding="utf-8"))
        kept: list[ast.stmt] = []
        for test in module.tests():
            mine = module.closure({test.name})
            theirs = conftest.closure(set().union(*map(_names, mine)))
            if _lines(module.text_of(mine), conftest.text_of(theirs)) & solution:
                withheld.append(test.name)
            else:
                kept += mine
                used |= set().union(*map(_names, mine))
        if kept or not module.tests():
            files[where] = module.text_of(module.others() + kept)
    if not files or all(not Path(w).name.startswith("test_") for w in files):
        raise AssignmentError(f"{assignment.public_checks} holds no public check that can go to "
                              "students (test_*.py, without solution lines): a bundle without "
                              "them checks nothing")
    helpers = conftest.closure(used) + conftest.autouse()
    if helpers:
        files[f"checks/{CONFTEST}"] = conftest.text_of(
            [*conftest.imports(), *helpers],
            header='"""What the public checks use of the course\'s checks/conftest.py."""')
    return files, withheld


def public_conftest(conftest: str, public_sources: list[str]) -> str | None:
    """The part of a checks/conftest.py that the public checks of PUBLIC_SOURCES use: the
    imports, the fixtures and helpers they name (and what those name in turn), autouse
    fixtures; None when they use none of it. What only hidden checks use stays out."""
    source = _Source(conftest)
    used = set().union(*(_names(ast.parse(text)) for text in public_sources))
    helpers = source.closure(used) + source.autouse()
    if not helpers:
        return None
    return source.text_of([*source.imports(), *helpers],
                          header='"""What the public checks use of the course\'s checks/conftest.py."""')


class _Source:
    """A Python file's top-level statements: what each defines, and what each one uses."""

    def __init__(self, text: str):
        self.tree = ast.parse(text)
        self.lines = text.splitlines()
        self.defined = {name: stmt for stmt in self.tree.body for name in _bound_names(stmt)}

    def tests(self) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
        """The check functions (test_*)."""
        return [s for s in self.tree.body if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef)
                and s.name.startswith("test_")]

    def imports(self) -> list[ast.stmt]:
        return [s for s in self.tree.body if isinstance(s, ast.Import | ast.ImportFrom)]

    def others(self) -> list[ast.stmt]:
        """The statements that define nothing (imports, the docstring, pytestmark, ...)."""
        return [s for s in self.tree.body if not _bound_names(s)
                or any(n == "pytestmark" for n in _bound_names(s))]

    def autouse(self) -> list[ast.stmt]:
        """Fixtures every check uses without naming them."""
        return [s for s in self.tree.body
                if any("autouse" in ast.unparse(d) for d in getattr(s, "decorator_list", []))]

    def closure(self, names: set[str]) -> list[ast.stmt]:
        """The statements defining NAMES, and those defining what they use in turn."""
        kept: dict[int, ast.stmt] = {}
        todo = [self.defined[n] for n in names if n in self.defined]
        while todo:
            stmt = todo.pop()
            if id(stmt) not in kept:
                kept[id(stmt)] = stmt
                todo.extend(self.defined[n] for n in _names(stmt) if n in self.defined)
        return list(kept.values())

    def text_of(self, stmts: list[ast.stmt], header: str = "") -> str:
        """The source of STMTS (decorators included), in file order, after HEADER."""
        wanted = {id(s) for s in stmts}
        parts = [header] if header else []
        for stmt in self.tree.body:
            if id(stmt) in wanted:
                decorators = getattr(stmt, "decorator_list", [])
                first = min([stmt.lineno, *(d.lineno for d in decorators)])
                parts.append("\n".join(self.lines[first - 1: stmt.end_lineno]))
        return "\n\n".join(parts) + "\n" if parts else ""


def _lines(*texts: str) -> set[str]:
    """The stripped lines of TEXTS."""
    return {line.strip() for text in texts for line in text.splitlines()}


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


def info_text(info: BundleInfo) -> str:
    """bundle.toml for INFO."""
    limits = info.limits
    lines = ["# What `grader check` needs to check the notebook: written by `grader bundle`.",
             f"assignment = {_toml(info.assignment)}", f"title = {_toml(info.title)}",
             f"notebook = {_toml(info.notebook)}", f"public_points = {info.public_points!r}",
             f"hidden_points = {info.hidden_points!r}",
             f"written_points = {info.written_points!r}", f"seed = {info.seed}",
             f"data = [{', '.join(_toml(n) for n in info.data)}]",
             f"withheld = [{', '.join(_toml(n) for n in info.withheld)}]", "", "[limits]"]
    lines += [f"{name} = {getattr(limits, name)!r}" for name in limits.__dataclass_fields__]
    return "\n".join(lines) + "\n"


def _toml(text: str) -> str:
    """TEXT as a TOML basic string."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c >= " " else f"\\u{ord(c):04x}" for c in escaped) + '"'


def readme(info: BundleInfo) -> str:
    """The bundle's README: what to do, how to check, what is graded."""
    total = info.public_points + info.hidden_points + info.written_points
    written = (f" The staff grade your written answers: {info.written_points:g} of the points."
               if info.written_points else "")
    data = ", ".join(f"`{n}`" for n in info.data) or "none"
    withheld = (f"; and the public checks {', '.join(f'`{n}`' for n in info.withheld)}, left out"
                " of this folder because their code would show part of the solution"
                if info.withheld else "")
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
of them; {info.hidden_points:g} points come from checks that run only when your hand-in is
graded (hidden checks, on data you do not have{withheld}), so full public points do not mean full
marks.{written} The notebook
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
