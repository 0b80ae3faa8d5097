"""Benchmarks of the grader's own overhead, each against a peer run side by side.

    python benchmarks/overhead.py sandbox   # kernel start with and without the sandbox
    python benchmarks/overhead.py peer      # grading the assignment01 reference vs plain nbclient
    python benchmarks/overhead.py workers   # the six assignment01 examples, --workers 1 vs 2

Not a test: timings depend on the machine. Results print as one line each.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from grader.data.prepare import prepare  # noqa: E402
from grader.grading.execute import executed  # noqa: E402
from grader.grading.kernelenv import kernel_env  # noqa: E402
from grader.grading.local import grade_submission  # noqa: E402
from grader.isolation import sandbox  # noqa: E402
from grader.model.assignments import load_assignment  # noqa: E402
from grader.model.config import Limits  # noqa: E402
from grader.model.paths import data_home  # noqa: E402
from grader.model.submission import Submission  # noqa: E402


def _kernel_start(sandboxed: bool) -> float:
    """Seconds from asking for a kernel to its first answer, for a notebook of one cell."""
    run = Path(tempfile.mkdtemp(prefix="grader-bench-"))
    shared = run / "shared"
    shared.mkdir()
    limits = Limits()
    env = kernel_env(run, threads=1, gpus="")
    prefix: list[str] = []
    owner = -1
    if sandboxed:
        if os.geteuid() == 0:
            owner = 61999
            os.chown(shared, owner, owner)
        env.update(HOME=sandbox.HOME, GRADER_SANDBOXED="1")
        prefix = sandbox.command([], sandbox.Spec(files={}, shared=shared, limits=limits, uid=61999))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])

    async def go() -> float:
        async with executed(nb, workdir=run, shared=shared, limits=limits, seed=0, env=env,
                            command_prefix=prefix, owner=owner) as ex:
            assert ex.status == "ok", ex.reason
            return ex.kernel_start_s

    try:
        return asyncio.run(go())
    finally:
        if sandboxed and os.geteuid() == 0:
            sandbox.reap(61999)
        shutil.rmtree(run, ignore_errors=True)


def bench_sandbox(rounds: int = 8) -> None:
    plain, boxed = [], []
    for _ in range(rounds):  # interleaved, so both see the same machine
        plain.append(_kernel_start(False))
        boxed.append(_kernel_start(True))
    p, b = statistics.median(plain), statistics.median(boxed)
    print(f"kernel start, median of {rounds}: without sandbox {p:.3f} s, with sandbox {b:.3f} s,"
          f" sandbox adds {b - p:+.3f} s ({b / p:.2f}x)")


def bench_peer(rounds: int = 3) -> None:
    assignment = load_assignment(REPO, "assignment01")
    prepared = prepare("grading", course=REPO, data_home=data_home())
    reference = REPO / "assignments" / "assignment01" / "submissions" / "reference.ipynb"
    peer, graded = [], []
    for _ in range(rounds):
        work = Path(tempfile.mkdtemp(prefix="grader-peer-"))
        shutil.copy(prepared.student_dir / "grading.npz", work)
        nb = nbformat.read(reference, as_version=4)
        began = time.monotonic()
        NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(work)}}).execute()
        peer.append(time.monotonic() - began)
        shutil.rmtree(work, ignore_errors=True)
        began = time.monotonic()
        result = grade_submission(assignment, Submission("reference", reference), prepared=prepared,
                                  threads=os.cpu_count() or 1)
        assert result.score == result.max_score, result.reason
        graded.append(time.monotonic() - began)
    p, g = statistics.median(peer), statistics.median(graded)
    print(f"assignment01 reference, median of {rounds}: plain nbclient {p:.2f} s, grader {g:.2f} s"
          f" (sandbox, seeding, checks) = {g / p:.2f}x the peer")


def bench_workers() -> None:
    subs = REPO / "assignments" / "assignment01" / "submissions"
    times = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            began = time.monotonic()
            subprocess.run([sys.executable, "-m", "grader", "run", "assignment01", "--course", str(REPO),
                            "--submissions", str(subs), "--workers", str(workers)],
                           cwd=tmp, check=True, capture_output=True)
            times[workers] = time.monotonic() - began
    print(f"six assignment01 examples: --workers 1 {times[1]:.1f} s, --workers 2 {times[2]:.1f} s"
          f" ({times[1] / times[2]:.2f}x faster)")


if __name__ == "__main__":
    {"sandbox": bench_sandbox, "peer": bench_peer, "workers": bench_workers}[sys.argv[1]]()
