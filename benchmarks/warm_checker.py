"""The trusted checks of one submission, cold (a pytest process of their own, `start_checks`) vs
warm (a child of the worker slot's warm checker, `CheckerSlot`), on an assignment's reference.

    python benchmarks/warm_checker.py [ASSIGNMENT] [ROUNDS]   # assignment01 (Keras), 3 rounds
    python benchmarks/warm_checker.py tiny 5                  # the tests' numpy assignment

The reference notebook runs once in a kernel; then each round runs all of the assignment's
checks against it, cold and warm in turn, each in the checker sandbox as the pipeline runs them. Per
round it prints the wall seconds from starting the checker to its outcomes (a cold checker
imports its libraries in that time; in a batch that overlaps the kernel, but takes the CPU all
the same), Checks.seconds (what the pipeline records as checks_s) and the checker's CPU seconds.
Not a test: timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import nbformat  # noqa: E402

from grader.checker.exchange import Layout  # noqa: E402
from grader.data.prepare import prepare  # noqa: E402
from grader.grading.check import Checks, start_checks  # noqa: E402
from grader.grading.execute import executed  # noqa: E402
from grader.grading.kernelenv import kernel_env  # noqa: E402
from grader.grading.warmcheck import CheckerSlot  # noqa: E402
from grader.isolation import sandbox  # noqa: E402
from grader.model.assignments import Assignment, load_assignment  # noqa: E402
from grader.model.paths import data_home  # noqa: E402
from grader.model.submission import read_notebook  # noqa: E402

CHECKER_UID = 65534
TICK = os.sysconf("SC_CLK_TCK")


class _Meter:
    """CPU seconds of the processes this one starts from now on (a cpuacct cgroup of their
    own, which this process joins; its own CPU is taken out), or of its reaped children only
    where no such cgroup can be made."""

    def __init__(self) -> None:
        self.group: Path | None = None
        own = next((line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().split("\n")
                    if line.split(":")[1:2] == ["cpuacct"] or ":cpuacct," in line or ",cpuacct:" in line), None)
        if own is not None:
            group = Path("/sys/fs/cgroup/cpuacct") / own.lstrip("/") / f"grader-bench-{os.getpid()}"
            try:
                group.mkdir()
                (group / "cgroup.procs").write_text(str(os.getpid()))
                self.group = group
            except OSError:
                pass

    def __call__(self) -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        mine = usage.ru_utime + usage.ru_stime
        if self.group is None:
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            return usage.ru_utime + usage.ru_stime
        return int((self.group / "cpuacct.usage").read_text()) / 1e9 - mine

    def close(self) -> None:
        if self.group is not None:
            (self.group.parent / "cgroup.procs").write_text(str(os.getpid()))
            self.group.rmdir()


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()


def _server_pid(top: int) -> int:
    """The host pid of the warm server under the process TOP (bubblewrap's step)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat(int(entry.name))[1])
            except (OSError, ValueError, IndexError):
                pass
    family, grown = {top}, True
    while grown:
        more = {p for p, parent in parents.items() if parent in family} - family
        family |= more
        grown = bool(more)
    for pid in sorted(family):
        try:
            if (Path(f"/proc/{pid}/comm").read_text().strip() != "bwrap"
                    and b"grader.checker.server" in Path(f"/proc/{pid}/cmdline").read_bytes()):
                return pid
        except OSError:
            pass
    raise RuntimeError("no warm server found")


def _server_cpu(pid: int) -> float:
    """CPU seconds of the server and of the children it reaped."""
    fields = _stat(pid)
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICK


def _workload(name: str) -> tuple[Path, Assignment, nbformat.NotebookNode]:
    """The course, the assignment NAME and its reference notebook."""
    if name == "tiny":
        from tests.conftest import TINY_SOLUTION, notebook

        course = REPO / "tests" / "files" / "course"
        return course, load_assignment(course, "tiny"), notebook(*TINY_SOLUTION)
    assignment = load_assignment(REPO, name)
    nb, _ = read_notebook(assignment.root / "submissions" / "reference.ipynb")
    return REPO, assignment, nb


async def main(name: str, rounds: int) -> None:
    course, assignment, nb = _workload(name)
    prepared = prepare(assignment.config.data.recipe, course=course, data_home=data_home())
    limits = assignment.config.limits
    root = Path(tempfile.mkdtemp(prefix="grader-bench-"))
    slot_dir = root / "slot"
    run_dir = slot_dir / "run"
    work = run_dir / "work"
    work.mkdir(parents=True)
    for name in assignment.config.data.student_files:
        shutil.copy2(prepared.student_dir / name, work / name)
    layout = Layout(run_dir / "shared")
    layout.make(checker=CHECKER_UID if os.geteuid() == 0 else -1)
    env = {**kernel_env(work, threads=1, gpus=""), "GRADER_UMASK": "000"}
    sandboxed = sandbox.bwrap() is not None
    files = assignment.check_files()
    options = dict(public_dir=assignment.public_checks, hidden_dir=prepared.hidden_dir,
                   student_data=prepared.student_dir, limits=limits, sandboxed=sandboxed,
                   uid=CHECKER_UID)
    slot = CheckerSlot(folder=slot_dir, kernel_uids=(), **options)  # type: ignore[arg-type]
    rows: dict[str, list[tuple[float, float, float]]] = {"cold": [], "warm": []}
    async with executed(nb, workdir=work, shared=layout.root, limits=limits, seed=assignment.config.seed,
                        env=env) as ex:
        assert ex.status == "ok", ex.reason
        meter = _Meter()  # the kernel, started before, stays out
        began = time.monotonic()
        await slot.start()
        await slot.expect("ready", 300)
        assert slot.process is not None
        server = _server_pid(slot.process.pid)
        print(f"warm server start: {time.monotonic() - began:.2f} s wall, "
              f"{_server_cpu(server):.2f} s CPU, imported {', '.join(slot.imported)}")
        for _ in range(rounds):
            shutil.rmtree(run_dir / "checks", ignore_errors=True)
            began, cpu = time.monotonic(), meter()
            checker = await start_checks(files, run_dir=run_dir, shared=layout.root, **options)  # type: ignore[arg-type]
            checks = await checker.finish(ex.connection, "no kernel")
            rows["cold"].append(_row(checks, began, meter() - cpu))
            shutil.rmtree(run_dir / "checks", ignore_errors=True)
            began, cpu, served = time.monotonic(), meter(), _server_cpu(server)
            warm = await slot.begin(files, run_dir=run_dir, shared=layout.root, kernel_uid=-1)
            checks = await warm.finish(ex.connection, "no kernel")
            rows["warm"].append(_row(checks, began, meter() - cpu))
            print(f"  warm round: the server and its child used {_server_cpu(server) - served:.2f} s CPU")
    await slot.close()
    meter.close()
    shutil.rmtree(root, ignore_errors=True)
    for kind, values in rows.items():
        walls, checks_s, cpus = zip(*values, strict=True)
        print(f"{kind}: wall {_fmt(walls)} s, checks_s {_fmt(checks_s)} s, CPU {_fmt(cpus)} s "
              f"(median of {len(values)}: {statistics.median(walls):.2f} / "
              f"{statistics.median(checks_s):.2f} / {statistics.median(cpus):.2f})")


def _row(checks: Checks, began: float, cpu: float) -> tuple[float, float, float]:
    assert not checks.problem and checks.outcomes, checks.problem
    assert sum(o.points for o in checks.outcomes) == sum(o.max_points for o in checks.outcomes), \
        [(o.name, o.message) for o in checks.outcomes if o.points < o.max_points]
    return time.monotonic() - began, checks.seconds, cpu


def _fmt(values: tuple[float, ...]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "assignment01",
                     int(sys.argv[2]) if len(sys.argv) > 2 else 3))
