"""Run an assignment's checks with pytest in a separate, trusted process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .launch import module_command
from .plugin import Attachment, CheckOutcome


@dataclass
class Checks:
    """The outcome of every check, or why the checks themselves could not run."""

    outcomes: list[CheckOutcome] = field(default_factory=list)
    problem: str = ""  # for the course staff: the checks broke, not the student
    seconds: float = 0.0


def _trusted_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "CUDA_VISIBLE_DEVICES": "",  # checks evaluate on the CPU; the GPUs are the kernels'
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "GRADER_PARENT_PID": str(os.getpid()),
    })
    return env


class Checker:
    """The checks' pytest process, started early: it imports its libraries while the notebook
    runs, then waits to be told which kernel to ask."""

    def __init__(self, process: asyncio.subprocess.Process, results: Path, timeout: float):
        self.process = process
        self.results = results
        self.timeout = timeout

    async def finish(self, connection_file: Path | None, why_no_kernel: str) -> Checks:
        """Let the checks run against CONNECTION_FILE's kernel; return their outcomes."""
        began = time.monotonic()
        go = {"connection": str(connection_file) if connection_file else None,
              "why_no_kernel": why_no_kernel}
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
        checks = Checks(seconds=time.monotonic() - began)
        try:
            raw = json.loads(self.results.read_text(encoding="utf-8"))["checks"]
            checks.outcomes = [_outcome(item) for item in raw]
        except (OSError, ValueError, KeyError, TypeError):
            checks.problem = "the checks did not report"
        if self.process.returncode not in (0, 1) or not checks.outcomes:
            tail = output.decode("utf-8", "replace").strip().splitlines()[-15:]
            checks.problem = (checks.problem or f"pytest exited with {self.process.returncode}") + (
                ": " + " | ".join(tail) if tail else "")
        return checks

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
    exchange_host: Path,
    exchange_kernel: str,
    timeout: float,
) -> Checker:
    """Start pytest on FILES in a trusted process that waits for Checker.finish."""
    folder = run_dir / "checks"
    folder.mkdir(exist_ok=True)
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    results = folder / "results.json"
    args = [
        *map(str, files), "-c", str(folder / "pytest.ini"), "--rootdir", str(folder),
        "--confcutdir", str(public_dir.parent),
        "-p", "grader.plugin", "-p", "no:cacheprovider", "--assert=plain", "-q", "-s",
        "--import-mode=importlib", "--no-header", "-o", "console_output_style=classic",
        "--grader-wait", "--grader-results", str(results), "--grader-public", str(public_dir),
        "--grader-exchange", str(exchange_host), "--grader-exchange-kernel", exchange_kernel,
        "--grader-timeout", str(max(5.0, timeout / 4)),
    ]
    if hidden_dir is not None:
        args += ["--grader-hidden", str(hidden_dir)]
    if student_data is not None:
        args += ["--grader-student-data", str(student_data)]
    process = await asyncio.create_subprocess_exec(
        *module_command("pytest", *args), cwd=folder, env=_trusted_env(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    return Checker(process, results, timeout)


async def run_checks(files: list[Path], *, connection_file: Path | None, why_no_kernel: str,
                     **options: Any) -> Checks:
    """Run FILES against the kernel behind CONNECTION_FILE and return each check's outcome."""
    checker = await start_checks(files, **options)
    return await checker.finish(connection_file, why_no_kernel)


def _outcome(item: dict) -> CheckOutcome:
    attachments = [Attachment(**a) for a in item.pop("attachments", [])]
    return CheckOutcome(**item, attachments=attachments)
