"""Fixtures shared by the tests: the repository, a copy of the tests' tiny course, notebooks."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tests import postgres as postgres_server

REPO = Path(__file__).resolve().parents[1]
FILES = Path(__file__).resolve().parent / "files"
# Real copies of every dataset: ../shared/datasets beside the checkout, or $GRADER_TEST_DATASETS.
SHARED_DATASETS = Path(os.environ.get("GRADER_TEST_DATASETS") or REPO.parent / "shared" / "datasets")


# Under `pytest -n 2` (pytest-xdist, the README's test command), the tests that share an expensive
# fixture run on one worker, so that it is made once: each assignment's batches and its
# reference's training (test_assignments.py, by assignment), and the module-scoped batches,
# clusters and caches of ONE_WORKER_MODULES; the rest go to whichever worker is free. The longest
# groups, the references that train for minutes, are handed out first. (xdist's own
# --dist loadgroup does not group under pytest 9, whose node ids it can no longer suffix.)
ONE_WORKER_MODULES = {"test_adversarial.py", "test_bundle.py", "test_data_real.py", "test_check.py",
                      "test_execute.py", "test_grading_key.py", "test_ray.py"}
# The assignments whose test_validate trains the reference in a `grader validate` of its own:
# that test needs none of the assignment's other batches, so it is a group by itself.
VALIDATE_ALONE = ("assignment04", "assignment05", "assignment06")
# Handed out first, in this order. xdist gives each worker two groups at the start: the first
# worker gets the longest training and one short test ("filler"), the second the next training
# and assignment04's other batches, so that these do not wait behind the longest training.
FIRST = ("assignment04-validate", "assignment05-validate", "filler", "assignment04", "assignment05")


def worker_group(nodeid: str) -> str:
    """The group of the test NODEID: its assignment's validate or other batches, its module, or
    itself alone."""
    module, _, name = nodeid.partition("::")
    if module.endswith("/test_assignments.py"):
        found = re.search(r"assignment\d\d", name)
        if found is None:
            return module
        alone = name.startswith("test_validate[") and found.group(0) in VALIDATE_ALONE
        return found.group(0) + ("-validate" if alone else "")
    return module if module.rsplit("/", 1)[-1] in ONE_WORKER_MODULES else nodeid


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest groups first, as FIRST says (the same order on every worker)."""
    first = {group: rank for rank, group in enumerate(FIRST)}
    filler = next((item.nodeid for item in items if worker_group(item.nodeid) == item.nodeid), None)

    def rank(item: pytest.Item) -> int:
        group = "filler" if item.nodeid == filler else worker_group(item.nodeid)
        return first.get(group, len(first))

    items.sort(key=rank)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """xdist's scope scheduler, its scopes our worker groups, in collection order."""
    from xdist.scheduler import LoadScopeScheduling

    class Grouped(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_group(nodeid)

    config.option.loadscopereorder = False
    return Grouped(config, log)


_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "site", "*.egg-info",
                                     "__pycache__", ".*_cache", "submissions")


def copy_source(target: Path) -> Path:
    """A copy of this checkout at TARGET, as a fresh clone has it: without the venv, the caches,
    the example submissions, and (at its top only) what a run here left: reports/ and the
    gradebook. (grader/reports/ is source.)"""

    def ignored(folder: str, names: list[str]) -> set[str]:
        left = {n for n in names if n == "reports" or n.startswith("gradebook.sqlite")}
        return set(_NOT_SOURCE(folder, names)) | (left if Path(folder) == REPO else set())

    shutil.copytree(REPO, target, ignore=ignored)
    return target


def require_real_datasets() -> Path:
    """The folder of real datasets; fails loudly (never skips) when it is missing."""
    if not (SHARED_DATASETS / "MANIFEST.md").is_file() and not SHARED_DATASETS.is_dir():
        pytest.fail(
            f"these tests need the real datasets, and {SHARED_DATASETS} does not exist: put the "
            "course's shared/datasets folder beside the checkout (../shared/datasets) or point "
            "GRADER_TEST_DATASETS at a copy (see README.md, Development)", pytrace=False)
    return SHARED_DATASETS


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private dataset cache, also for grader subprocesses."""
    home = tmp_path / "data-home"
    monkeypatch.setenv("GRADER_DATA_HOME", str(home))
    return home


@pytest.fixture
def course(tmp_path: Path, data_home: Path) -> Path:
    """A writable copy of the tests' course with the tiny assignment."""
    target = tmp_path / "course"
    shutil.copytree(FILES / "course", target)
    return target


@pytest.fixture
def short_root() -> Iterator[Path]:
    """A new folder right under /tmp, for run folders: tmp_path is too deep for the kernels'
    sockets (grader.isolation.workdirs.check_room)."""
    folder = Path(tempfile.mkdtemp(prefix="g-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def before_migrations(db: sqlite3.Connection) -> None:
    """Make the SQLite gradebook open in DB look as a grader before migrations left it (no
    alembic_version, no claims, no grader of each run), for tests that then take away what an
    older one lacked."""
    db.execute("DROP TABLE alembic_version")
    db.execute("DROP TABLE claims")
    db.execute("ALTER TABLE grading_runs DROP COLUMN grader")
    db.execute("ALTER TABLE submissions DROP COLUMN seen_key")


def running(pid: int) -> bool:
    """Whether PID is a process that has not ended (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def processes_of(pid: int) -> list[int]:
    """The processes started for the grader PID: kernels, checkers, their servers (they carry
    GRADER_PARENT_PID=PID in their environment)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"GRADER_PARENT_PID={pid}\0".encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def notebook(*sources: str) -> nbformat.NotebookNode:
    """A notebook whose code cells hold SOURCES."""
    return new_notebook(
        cells=[new_code_cell(s) for s in sources],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )


@pytest.fixture
def write_notebook(tmp_path: Path) -> Callable[..., Path]:
    """Write a notebook of code cells to DIR/NAME.ipynb and return its path."""

    def write(folder: Path, name: str, *sources: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.ipynb"
        nbformat.write(notebook(*sources), path)
        return path

    return write


TINY_SOLUTION = (
    'import numpy as np\nwith np.load("tiny.npz") as data:\n    x = data["x"]',
    "total = float(x.sum())\nsquares = x ** 2",
    "def double(values):\n    return 2 * np.asarray(values)",
    "guess = 99.5",
)


@pytest.fixture(scope="session")
def postgres() -> Iterator[postgres_server.Server]:
    """A PostgreSQL server of the tests' own, on a socket in a temporary folder (see
    tests/postgres.py); fails, never skips, where PostgreSQL is not installed."""
    server = postgres_server.start()
    try:
        yield server
    finally:
        postgres_server.stop(server)


@pytest.fixture
def postgres_url(postgres: postgres_server.Server) -> str:
    """A new empty database on the tests' PostgreSQL server."""
    return postgres.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def gradebook_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's gradebook lives: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "g.sqlite")
    return request.getfixturevalue("postgres_url")
