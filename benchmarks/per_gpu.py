"""How many kernels one GPU grades at once: throughput per --per-gpu K (issue 11, point 5).

    KERAS_BACKEND=jax python benchmarks/per_gpu.py --per-gpu 1,2,4,8 --json out.json

For each K and each assignment, grades ROUNDS*K copies of the assignment's reference with
`grader run --per-gpu K --force` (the grader's own command, in a fresh gradebook), sandboxed
where bubblewrap works (`--sandbox auto`, the default; `on` requires it, `off` passes
--no-sandbox),
then reads the results back with `grader export`: every copy must get full points, or the line
says FAIL (a benchmark that times failures is worthless). One CPU-only line per assignment
(`--gpus none`, CUDA_VISIBLE_DEVICES="", --workers the largest K, CPU_ROUNDS*K copies) comes
last, as the baseline. A time budget skips what would not finish in time, from the seconds a
round took before.

Not a test: timings depend on the machine, and on a shared one on its other load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Line:
    """One batch: an assignment graded N times on a GPU with K kernels at once, or on the CPU."""

    assignment: str
    device: str  # "gpu" or "cpu"
    kernels: int  # kernels at once
    submissions: int
    sandboxed: bool = False  # in the grader's bubblewrap sandbox, or --no-sandbox
    seconds: float = 0.0
    per_minute: float = 0.0
    devices: dict[str, int] = field(default_factory=dict)  # what each result says it ran on
    scores: list[float] = field(default_factory=list)
    full: bool = False  # every copy graded with full points
    problem: str = ""  # why the line is not a figure: failed, timed out, skipped

    def text(self) -> str:
        """The line as printed."""
        where = f"GPU --per-gpu {self.kernels}" if self.device == "gpu" else f"CPU --workers {self.kernels}"
        head = (f"{self.assignment:13} {where:18} {'sandboxed' if self.sandboxed else 'unsandboxed':11} "
                f"{self.submissions:3} submissions")
        if self.problem:
            return f"{head}: {self.problem}"
        ran = "; ".join(f"{n}x {d}" for d, n in self.devices.items())
        return (f"{head}, {self.kernels} kernels at once: {self.seconds:6.1f} s, "
                f"{self.per_minute:5.1f} submissions/min, ran on {ran}; scores "
                f"{min(self.scores):g}..{max(self.scores):g} {'OK' if self.full else 'FAIL'}")


def grader(*args: str, env: dict[str, str], timeout: float, log: Path) -> int:
    """Run `python -m grader ARGS`, its output appended to LOG; kill its whole group at TIMEOUT."""
    with open(log, "a") as out:
        out.write(f"\n$ grader {' '.join(args)}\n")
        out.flush()
        proc = subprocess.Popen([sys.executable, "-m", "grader", *args], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise


def bubblewrap() -> str | None:
    """The bubblewrap binary the grader itself would sandbox kernels with, None where it cannot."""
    try:
        from grader.isolation import sandbox
    except ImportError:  # the grader is not installed: use this checkout's
        sys.path.insert(0, str(REPO))
        from grader.isolation import sandbox
    return sandbox.bwrap()


def sandboxing(asked: str) -> tuple[bool, str]:
    """Whether the batches run sandboxed (ASKED: auto, on or off), and why, for the header."""
    if asked == "off":
        return False, "off (--sandbox off)"
    found = bubblewrap()
    if found is None and asked == "on":
        raise SystemExit("--sandbox on: bubblewrap is missing or cannot make a sandbox here")
    if found is None:
        return False, "off (no working bubblewrap: --no-sandbox)"
    return True, f"on (bubblewrap {found})"


def batch(assignment: str, device: str, kernels: int, copies: int, *, env: dict[str, str],
          timeout: float, log: Path, sandboxed: bool = False) -> Line:
    """Grade COPIES copies of ASSIGNMENT's reference with KERNELS at once; read back every score."""
    line = Line(assignment, device, kernels, copies, sandboxed)
    work = Path(tempfile.mkdtemp(prefix=f"per-gpu-{assignment}-"))
    try:
        reference = REPO / "assignments" / assignment / "submissions" / "reference.ipynb"
        folder = work / "submissions"
        folder.mkdir()
        for i in range(copies):
            shutil.copy(reference, folder / f"s{i:02d}.ipynb")
        gradebook = str(work / "gradebook.sqlite")
        where = (["--gpus", "auto", "--per-gpu", str(kernels)] if device == "gpu"
                 else ["--gpus", "none", "--workers", str(kernels)])
        run_env = env if device == "gpu" else {**env, "CUDA_VISIBLE_DEVICES": ""}
        began = time.monotonic()
        try:
            rc = grader("run", assignment, "--submissions", str(folder), "--gradebook", gradebook,
                        "--reports", str(work / "reports"), "--force", *where,
                        *([] if sandboxed else ["--no-sandbox"]),
                        env=run_env, timeout=timeout, log=log)
        except subprocess.TimeoutExpired:
            line.problem = f"timed out after {timeout:.0f} s (see the log)"
            return line
        line.seconds = time.monotonic() - began
        line.per_minute = 60 * copies / line.seconds
        exported = work / "export.json"
        grader("export", assignment, "--format", "json", "--gradebook", gradebook,
               "-o", str(exported), env=env, timeout=120, log=log)
        rows = json.loads(exported.read_text()) if exported.exists() else []
        for row in rows:
            line.devices[row["device"]] = line.devices.get(row["device"], 0) + 1
        line.scores = [row["score"] if row["score"] is not None else -1.0 for row in rows]
        line.full = (rc == 0 and len(rows) == copies
                     and all(r["status"] == "graded" and r["score"] == r["max_score"] for r in rows))
        if not line.full:
            reasons = sorted({f"{r['status']}: {r['reason'][:160]}" for r in rows
                              if r["score"] != r["max_score"]})
            line.problem = (f"FAIL (exit {rc}, {len(rows)} of {copies} stored"
                            + (f"; {' | '.join(reasons)[:600]}" if reasons else "") + ")")
            _staff_detail(Path(gradebook), log)
        return line
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _staff_detail(gradebook: Path, log: Path) -> None:
    """Append to LOG what staff see of the batch's first result short of full points: its
    failed cell and staff detail (the kernel's stderr for a kernel that died)."""
    import sqlite3

    try:
        with sqlite3.connect(gradebook) as db:
            row = db.execute("SELECT status, failed_cell, staff_detail FROM grading_runs"
                             " WHERE score IS NULL OR score < max_score ORDER BY id LIMIT 1").fetchone()
    except sqlite3.Error as exc:
        row = ("?", None, f"the gradebook could not be read: {exc}")
    if row:
        with open(log, "a") as out:
            out.write(f"\n--- staff detail of the first result short of full points ({row[0]}):\n"
                      f"failed cell: {(row[1] or '')[:3000]}\n{(row[2] or '')[-6000:]}\n")


def plan(ks: list[int], cpu: bool) -> list[tuple[str, int]]:
    """The batches in order: each K on the GPU, then the CPU baseline with the largest K."""
    return [("gpu", k) for k in ks] + ([("cpu", max(ks))] if cpu else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assignments", default="assignment01,assignment03")
    parser.add_argument("--per-gpu", default="1,2,4,8", help="the values of K, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="copies per batch: ROUNDS*K")
    parser.add_argument("--budget", type=float, default=300.0,
                        help="seconds for everything; a batch that would not fit is skipped")
    parser.add_argument("--cpu-rounds", type=int, default=1,
                        help="the CPU baseline's copies: CPU_ROUNDS times the largest K")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU baseline")
    parser.add_argument("--sandbox", choices=("auto", "on", "off"), default="auto",
                        help="grade in the grader's bubblewrap sandbox: auto (where bubblewrap "
                             "works, else --no-sandbox; the default), on (required) or off")
    parser.add_argument("--json", type=Path, help="write the lines here as JSON")
    parser.add_argument("--log", type=Path, default=Path("per_gpu.log"),
                        help="the grader's own output (default per_gpu.log)")
    args = parser.parse_args(argv)
    ks = [int(k) for k in args.per_gpu.split(",") if k.strip()]
    assignments = [a.strip() for a in args.assignments.split(",") if a.strip()]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    sandboxed, how = sandboxing(args.sandbox)
    print(f"KERAS_BACKEND={env.get('KERAS_BACKEND', '(unset: tensorflow)')}, "
          f"GRADER_DATA_HOME={env.get('GRADER_DATA_HOME', '(unset)')}, sandbox {how}, "
          f"budget {args.budget:.0f} s", flush=True)
    began = time.monotonic()
    per_round: dict[tuple[str, str], float] = {}  # seconds one round of kernels took
    lines: list[Line] = []
    for device, k in plan(ks, cpu=not args.no_cpu):
        rounds = args.rounds if device == "gpu" else args.cpu_rounds
        for assignment in assignments:
            copies = rounds * k
            left = args.budget - (time.monotonic() - began)
            one = per_round.get((assignment, device), per_round.get((assignment, "gpu"), 0.0))
            if left < 10 or rounds * one * 1.5 > left:
                line = Line(assignment, device, k, copies, sandboxed,
                            problem=f"skipped: {left:.0f} s of the budget left, a round took {one:.0f} s")
            else:
                line = batch(assignment, device, k, copies, env=env, timeout=left, log=args.log,
                             sandboxed=sandboxed)
                if line.seconds:
                    per_round[(assignment, device)] = line.seconds / rounds
            lines.append(line)
            print(line.text(), flush=True)
            if args.json:
                args.json.write_text(json.dumps([asdict(x) for x in lines], indent=2) + "\n")
    failed = [x for x in lines if x.problem and not x.problem.startswith("skipped")]
    print(f"{len(lines) - len(failed)} of {len(lines)} batches gave a figure or were skipped; "
          f"{time.monotonic() - began:.0f} s in all", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
