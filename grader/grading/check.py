"""Run an assignment's checks with pytest in a separate, trusted process: a cold checker of its
own for a submission (the warm one of a worker slot is grader.grading.warmcheck)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.isolation import sandbox
from grader.isolation.launch import module_command
from grader.model import paths
from grader.model.config import Limits
from grader.model.outcomes import Attachment, CheckOutcome

# Address space the checker needs beyond twice the kernel's: TensorFlow reserves about 2 GB.
CHECKER_EXTRA_MB = 4096


@dataclass
class Checks:
    """The outcome of every check, or why the checks themselves could not run."""

    outcomes: list[CheckOutcome] = field(default_factory=list)
    problem: str = ""  # for the course staff: the checks broke, not the student
    seconds: float = 0.0
    weights: dict[str, str] = field(default_factory=dict)  # sha256 of each model's weights, by name


def checker_mounts(public_dir: Path, hidden_dir: Path | None = None,
                   student_data: Path | None = None) -> list[Path]:
    """What a checker's sandbox sees read-only: the assignment's checks/ (PUBLIC_DIR's folder),
    grader itself (checks import its helpers), and the hidden and student data where given."""
    return [public_dir.parent, paths.PACKAGE, *(p for p in (hidden_dir, student_data) if p)]


def trusted_env(limits: Limits) -> dict[str, str]:
    """The checker's whole environment: the grader's own (a database URL, say) stays out."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "LC_ALL", "KERAS_BACKEND",
                                               "GRADER_DATA_HOME") if name in os.environ}
    env.update({
        "CUDA_VISIBLE_DEVICES": "",  # checks evaluate on the CPU; the GPUs are the kernels'
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "GRADER_PARENT_PID": str(os.getpid()),
        "GRADER_RLIMITS": json.dumps({
            "AS": (2 * limits.memory_mb + CHECKER_EXTRA_MB) * 1024 * 1024, "CORE": 0}),
    })
    return env


class Checker:
    """The checks' pytest process, started early: it imports its libraries while the notebook
    runs, then waits to be told which kernel to ask."""

    def __init__(self, process: asyncio.subprocess.Process, results: Path, timeout: float):
        self.process = process
        self.results = results
        self.timeout = timeout

    async def finish(self, connection: dict[str, Any] | None, why_no_kernel: str) -> Checks:
        """Let the checks run against the kernel of CONNECTION (its connection info, handed over
        in memory: the kernel can rewrite its connection file); return their outcomes."""
        began = time.monotonic()
        go = {"connection": connection, "why_no_kernel": why_no_kernel}
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(go).encode() + b"\n")
            await self.process.stdin.drain()
            self.process.stdin.close()
            output, _ = await asyncio.wait_for(self.process.communicate(), self.timeout)
        except TimeoutError:
            self.kill()
            await self.process.wait()
            return Checks(problem=f"the checks did not finish within {self.timeout:.0f} s",
                          seconds=time.monotonic() - began)
        except (BrokenPipeError, ConnectionResetError):
            output, _ = await self.process.communicate()
        return read_results(self.results, self.process.returncode, output.decode("utf-8", "replace"),
                             time.monotonic() - began)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()


async def start_checks(
    files: list[Path],
    *,
    run_dir: Path,
    public_dir: Path,
    hidden_dir: Path | None,
    student_data: Path | None,
    shared: Path,
    limits: Limits,
    sandboxed: bool = True,
    uid: int = sandbox.NOBODY,
    kernel_uid: int = -1,
    cgroups: tuple[Path, ...] = (),
) -> Checker:
    """Start pytest on FILES in a trusted process that waits for Checker.finish.

    SANDBOXED, it runs in bubblewrap without network, and for a root grader as user UID (in the
    kernel's group, to reach its sockets); it sees the checks, the data, SHARED and its own
    folder in RUN_DIR, nothing else of the machine."""
    folder, args = prepare_checks(files, run_dir=run_dir, public_dir=public_dir, hidden_dir=hidden_dir,
                                  student_data=student_data, shared=shared, limits=limits,
                                  owner=uid if sandbox.own_users(sandboxed) else -1)
    argv = module_command("pytest", *args)
    env = trusted_env(limits)
    if sandboxed:
        readonly = checker_mounts(public_dir, hidden_dir, student_data)
        groups = (kernel_uid,) if kernel_uid >= 0 else ()
        argv = sandbox.checker_command(argv, readonly=readonly, writable=[folder, shared],
                                       workdir=folder, uid=uid, groups=groups, cgroups=cgroups)
        env["GRADER_SANDBOXED"] = "1"  # its parent is bubblewrap, which dies with the grader
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=folder, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    return Checker(process, folder / "results.json", limits.check_seconds)


def prepare_checks(files: list[Path], *, run_dir: Path, public_dir: Path, hidden_dir: Path | None,
                   student_data: Path | None, shared: Path, limits: Limits,
                   owner: int) -> tuple[Path, list[str]]:
    """Make RUN_DIR/checks (OWNER's, where that is a user) and return it with pytest's arguments."""
    folder = run_dir / "checks"
    folder.mkdir(exist_ok=True)
    if owner >= 0:
        os.chown(folder, owner, owner)
    # unraisableexception collects the garbage 5 times over at the end: seconds of CPU where
    # checks made Keras models, for warnings nobody reads
    running = ["-p", "no:unraisableexception", "--assert=plain", "-s", "--no-header",
               "-o", "console_output_style=classic", "--grader-wait", "--grader-shared", str(shared),
               "--grader-timeout", str(max(5.0, limits.check_seconds / 4))]
    if hidden_dir is not None:
        running += ["--grader-hidden", str(hidden_dir)]
    if student_data is not None:
        running += ["--grader-student-data", str(student_data)]
    return folder, pytest_args(files, folder=folder, public_dir=public_dir,
                               results=folder / "results.json", options=running)


def pytest_args(files: list[Path], *, folder: Path, public_dir: Path, results: Path,
                options: list[str]) -> list[str]:
    """pytest's arguments for the checker plugin on FILES, with OPTIONS, in FOLDER (its
    pytest.ini written there): what the checker and the preflight's collection both pass."""
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    return [*map(str, files), "-c", str(folder / "pytest.ini"), "--rootdir", str(folder),
            "--confcutdir", str(public_dir.parent),
            "-p", "grader.checker.plugin", "-p", "no:cacheprovider", "-q", "--import-mode=importlib",
            *options, "--grader-results", str(results), "--grader-public", str(public_dir)]


async def run_checks(files: list[Path], *, connection: dict[str, Any] | None, why_no_kernel: str,
                     **options: Any) -> Checks:
    """Run FILES against the kernel of CONNECTION and return each check's outcome."""
    checker = await start_checks(files, **options)
    return await checker.finish(connection, why_no_kernel)


def read_results(results: Path, returncode: int | None, output: str, seconds: float) -> Checks:
    """The outcomes pytest wrote to RESULTS; a problem where it exited badly or wrote none."""
    checks = Checks(seconds=seconds)
    try:
        data = json.loads(results.read_text(encoding="utf-8"))
        checks.outcomes = [_outcome(item) for item in data["checks"]]
        checks.weights = _digests(data.get("weights"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        checks.problem = "the checks did not report"
    if returncode not in (0, 1) or not checks.outcomes:
        tail = output.strip().splitlines()[-15:]
        checks.problem = (checks.problem or f"pytest exited with {returncode}") + (
            ": " + " | ".join(tail) if tail else "")
    return checks


def _digests(value: Any) -> dict[str, str]:
    """The weights' digests the checker wrote: model names to sha256 hex digests, nothing else."""
    if not isinstance(value, dict):
        return {}
    return {str(name)[:200]: digest for name, digest in list(value.items())[:20]
            if isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)}


def _outcome(item: dict) -> CheckOutcome:
    attachments = [Attachment(**a) for a in item.pop("attachments", [])]
    return CheckOutcome(**item, attachments=attachments)
