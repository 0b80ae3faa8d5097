"""`grader run` with each slot's warm checker forked from the batch's zygote (as it is by
default, for a root grader on the CPU) against the same command with the checker launched by
itself (importing its libraries in its own process), in interleaved pairs on the same copies of
an assignment's reference submission.

    python benchmarks/forked_checker.py [ASSIGNMENT] [COPIES] [ROUNDS] [WORKERS]
    python benchmarks/forked_checker.py assignment01 6 3 2     # the defaults

Per run it prints seconds per submission and the batch's start (from the closing line); then
the mean of each. Each pair runs the two in turn, its order turned round from pair to pair. Not
a test: timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import nbformat  # noqa: E402
import vs_nbgrader  # noqa: E402

# `grader` with the checker's zygote taken away where told "launched"
ENTRY = """
import sys
how = sys.argv.pop(1)
from grader.grading import local
if how == "launched":
    made = local.Slot._make_checkers
    def make(self):
        made(self)
        if self.checkers is not None:
            self.checkers.zygote = None
    local.Slot._make_checkers = make
from grader.__main__ import main
sys.exit(main())
"""


def run(work: dict, how: str, copies: int, workers: str) -> tuple[float, float]:
    """Seconds per submission and the batch's start of one `grader run`, checker HOW."""
    with tempfile.TemporaryDirectory(prefix="bench-forked-") as tmp:
        subs = Path(tmp) / "submissions"
        subs.mkdir()
        for k in range(copies):
            nbformat.write(work["reference"], subs / f"student{k:03d}.ipynb")
        command = [sys.executable, "-c", ENTRY, how, "run", work["assignment"],
                   "--course", str(work["course"]), "--submissions", str(subs),
                   "--gradebook", str(Path(tmp) / "g.sqlite"), "--reports", str(Path(tmp) / "r"),
                   "--workers", workers]
        began = time.monotonic()
        done = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
        seconds = time.monotonic() - began
        if done.returncode != 0:
            raise SystemExit(f"grader run failed ({done.returncode}):\n{done.stdout[-3000:]}")
        runs = vs_nbgrader._grader_runs(Path(tmp) / "g.sqlite")
        points = float(work["config"]["points"])
        if len(runs) != copies or any(r["status"] != "graded" or r["score"] != points for r in runs):
            raise SystemExit(f"not every copy got full points: {runs}")
        start = re.search(r"first\s+notebook\s+ran:\s+([\d.]+)\s+s", done.stdout)
        return seconds / copies, float(start.group(1)) if start else 0.0


def main() -> None:
    defaults = ["assignment01", "6", "3", "2"]
    name, copies, rounds, workers = [*sys.argv[1:5], *defaults[len(sys.argv[1:5]):]]
    work = vs_nbgrader._workload(name)
    seen: dict[str, list[tuple[float, float]]] = {"forked": [], "launched": []}
    for k in range(int(rounds)):
        for how in (("forked", "launched") if k % 2 == 0 else ("launched", "forked")):
            per, start = run(work, how, int(copies), workers)
            seen[how].append((per, start))
            print(f"pair {k + 1}, {how}: {per:.2f} s per submission, batch's start {start:.2f} s",
                  flush=True)
    for how, figures in seen.items():
        print(f"{name}, {workers} worker(s), checker {how}: {statistics.mean(f[0] for f in figures):.2f} s"
              f" per submission, batch's start {statistics.mean(f[1] for f in figures):.2f} s")


if __name__ == "__main__":
    main()
