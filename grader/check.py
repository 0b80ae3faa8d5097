"""Run an assignment's checks with pytest in a separate, trusted process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

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


async def run_checks(
    files: list[Path],
    *,
    run_dir: Path,
    public_dir: Path,
    hidden_dir: Path | None,
    student_data: Path | None,
    connection_file: Path | None,
    exchange_host: Path,
    exchange_kernel: str,
    why_no_kernel: str,
    timeout: float,
) -> Checks:
    """Run FILES against the kernel behind CONNECTION_FILE and return each check's outcome."""
    began = time.monotonic()
    folder = run_dir / "checks"
    folder.mkdir(exist_ok=True)
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    results = folder / "results.json"
    args = [
        *map(str, files), "-c", str(folder / "pytest.ini"), "--rootdir", str(folder),
        "--confcutdir", str(public_dir.parent),
        "-p", "grader.plugin", "-p", "no:cacheprovider", "--assert=plain", "-q",
        "--import-mode=importlib", "--no-header", "-o", "console_output_style=classic",
        "--grader-results", str(results), "--grader-public", str(public_dir),
        "--grader-exchange", str(exchange_host), "--grader-exchange-kernel", exchange_kernel,
        "--grader-why-no-kernel", why_no_kernel,
        "--grader-timeout", str(max(5.0, timeout / 4)),
    ]
    if connection_file is not None:
        args += ["--grader-connection", str(connection_file)]
    if hidden_dir is not None:
        args += ["--grader-hidden", str(hidden_dir)]
    if student_data is not None:
        args += ["--grader-student-data", str(student_data)]
    process = await asyncio.create_subprocess_exec(
        *module_command("pytest", *args), cwd=folder, env=_trusted_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return Checks(problem=f"the checks did not finish within {timeout:.0f} s",
                      seconds=time.monotonic() - began)
    checks = Checks(seconds=time.monotonic() - began)
    try:
        raw = json.loads(results.read_text(encoding="utf-8"))["checks"]
        checks.outcomes = [_outcome(item) for item in raw]
    except (OSError, ValueError, KeyError, TypeError):
        checks.problem = "the checks did not report"
    if process.returncode not in (0, 1) or not checks.outcomes:
        tail = output.decode("utf-8", "replace").strip().splitlines()[-15:]
        checks.problem = (checks.problem or f"pytest exited with {process.returncode}") + (
            ": " + " | ".join(tail) if tail else "")
    return checks


def _outcome(item: dict) -> CheckOutcome:
    attachments = [Attachment(**a) for a in item.pop("attachments", [])]
    return CheckOutcome(**item, attachments=attachments)
