"""Before a batch: one sandboxed kernel and one checker process must work, or nobody is graded.

`preflight_checks` collects the assignment's checks in the trusted pytest process, as grading
starts it, while the batch's slots start their first kernels: the first kernel to start is the
batch's kernel probe (grader.grading.local.WorkQueue.probe). Either failing stops the command before
anything is stored, with one line that says what failed. The collected checks also prove, on
every run, that each check declares its points and that they add up to the assignment's points.
`probe_kernel` starts a kernel exactly as a submission's would be started (same sandbox, same
data, same interpreter) on a notebook of one probe cell: `grader doctor` runs it with TensorFlow
imported, to show what a kernel sees.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbformat.v4 import new_code_cell, new_notebook

from grader.data.prepare import Prepared
from grader.grading.check import checker_mounts, pytest_args, trusted_env
from grader.grading.devices import CPU, Device
from grader.grading.execute import ExecutionStatus, executed
from grader.grading.executor import Settings
from grader.grading.kernelenv import kernel_python
from grader.grading.stage import Kernel, tail
from grader.isolation import sandbox, workdirs
from grader.isolation.launch import module_command
from grader.model.assignments import Assignment
from grader.model.config import AssignmentConfig, Limits
from grader.model.errors import GraderError, PreflightFailed

# The probe cell: what the kernel runs on, as one JSON line. FULL also imports TensorFlow.
_PROBE = """\
import json, os, platform, sys
info = {"python": platform.python_version(), "executable": sys.executable, "packages": {}}
for name in ("numpy", "keras", "tensorflow", "matplotlib", "ipykernel"):
    if %(full)s or name in ("numpy", "ipykernel"):
        try:
            info["packages"][name] = __import__(name).__version__
        except Exception as exc:
            info["packages"][name] = "MISSING: " + type(exc).__name__
if %(full)s:
    try:
        import tensorflow as tf
        info["devices"] = [d.name + " (" + d.device_type + ")" for d in tf.config.list_logical_devices()]
        info["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
        info["gpu_caps_mb"] = [c.memory_limit for g in tf.config.list_physical_devices("GPU")
                               for c in tf.config.get_logical_device_configuration(g) or []]
    except Exception as exc:
        info["devices"] = ["TensorFlow failed: " + type(exc).__name__ + ": " + str(exc)[:200]]
        info["gpus"] = []
print("GRADER-PROBE " + json.dumps(info))
"""


@dataclass(frozen=True)
class CollectedCheck:
    """One check as pytest collected it."""

    name: str
    file: str
    public: bool
    points: float
    marked: bool  # has an explicit @pytest.mark.points(n)


def preflight_checks(assignment: Assignment, *, sandboxed: bool) -> list[CollectedCheck]:
    """The checker half of the preflight, for a batch whose first kernel is its kernel probe
    (grade_batch's preflight): collect the checks; PreflightFailed if they cannot be collected,
    a GraderError if their points are wrong."""
    checks = asyncio.run(collect_checks(assignment, sandboxed=sandboxed))
    check_points(assignment, checks)
    return checks


def check_points(assignment: Assignment, checks: list[CollectedCheck]) -> None:
    """Every check declares its points, and they add up to the assignment's points."""
    where = assignment.root / "checks"
    if not checks:
        raise GraderError(f"{where} holds no checks (test_*.py in public/ and hidden/)")
    for check in checks:
        if not check.marked:
            raise GraderError(f"{check.file}: {check.name} has no @pytest.mark.points(n): every "
                              "check must say what it is worth")
    found, config = round(sum(c.points for c in checks), 4), assignment.config
    if found != config.check_points:
        rubric = f" less the rubric's {config.rubric_points:g}" if config.rubric else ""
        raise GraderError(f"the checks in {where} are worth {found:g} points but "
                          f"{assignment.root / 'assignment.toml'} says points = "
                          f"{config.points:g}{rubric}: make them agree")


async def probe_kernel(assignment: Assignment, *, settings: Settings, prepared: Prepared | None,
                       device: Device = CPU, full: bool = False) -> dict[str, Any]:
    """Run the probe cell in a kernel started as a submission's would be; what it printed."""
    folder = workdirs.make(settings.work_root)
    kernel = Kernel(assignment, prepared, folder.path, device, 1, settings.sandboxed,
                    sandbox.user(settings.sandboxed), sandbox.user(settings.sandboxed), folder,
                    kernel_python(settings.python))
    try:
        nb = new_notebook(cells=[new_code_cell(_PROBE % {"full": bool(full)})], metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
        try:
            staged = kernel.stage(nb)
        except (OSError, RuntimeError) as exc:
            raise PreflightFailed(f"a sandboxed kernel cannot be set up here: {exc}; nothing was "
                                  "graded (`grader doctor` shows more)") from None
        limits = assignment.config.limits
        shared = staged.shared
        async with executed(nb, workdir=staged.workdir, shared=shared, limits=limits, seed=0,
                            env=staged.env, command_prefix=staged.command, owner=staged.owner,
                            python=kernel.python, prologue=kernel.prologue) as execution:
            status, reason, ran = execution.status, execution.reason, execution.notebook
        if status != ExecutionStatus.OK:
            log = tail(shared / "kernel.log", 4).replace("\n", " | ")
            raise PreflightFailed(f"a sandboxed kernel cannot run here ({reason}); its stderr: "
                                  f"{log[-600:]}; nothing was graded (`grader doctor` shows more)")
        text = "".join(o.get("text", "") for o in ran.cells[0].get("outputs", []))
        line = next((x for x in text.splitlines() if x.startswith("GRADER-PROBE ")), "")
        try:
            info = dict(json.loads(line.removeprefix("GRADER-PROBE ")))
        except ValueError:
            raise PreflightFailed("a sandboxed kernel started but its probe printed nothing "
                                  "readable; nothing was graded") from None
        info["stderr"] = tail(shared / "kernel.log", 200)  # why CUDA failed: `grader doctor`
        return info
    finally:
        if sandbox.own_users(settings.sandboxed):
            sandbox.reap(kernel.uid)
            sandbox.reap(kernel.checker_uid)
        folder.remove()


async def collect_checks(assignment: Assignment, *, sandboxed: bool = False,
                         timeout: float = 180.0) -> list[CollectedCheck]:
    """Collect the assignment's checks in the trusted pytest process, started as grading starts
    it (SANDBOXED: in bubblewrap, offline, as a user of its own for a root grader)."""
    files = assignment.check_files()
    if not files:
        return []
    limits = assignment.config.limits
    with tempfile.TemporaryDirectory(prefix="grader-collect-") as folder:
        results = Path(folder) / "collected.json"
        args = pytest_args(files, folder=Path(folder), public_dir=assignment.public_checks,
                           results=results, options=["--collect-only"])
        argv, env = module_command("pytest", *args), trusted_env(limits)
        if sandboxed:
            uid = sandbox.user(sandboxed)
            if sandbox.own_users(sandboxed):
                os.chown(folder, uid, uid)
            argv = sandbox.checker_command(argv, readonly=checker_mounts(assignment.public_checks),
                                           writable=[Path(folder)],
                                           workdir=Path(folder), uid=uid)
            env["GRADER_SANDBOXED"] = "1"
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=folder, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        try:
            output, _ = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            raise PreflightFailed(f"the checker did not collect the checks within {timeout:.0f} s;"
                                  " nothing was graded") from None
        try:
            listed = json.loads(results.read_text(encoding="utf-8"))["collected"]
        except (OSError, ValueError, KeyError):
            listed = None
        if listed is None or process.returncode not in (0, 5):
            lines = [x for x in output.decode("utf-8", "replace").splitlines() if x.strip()]
            cause = " | ".join(lines[-4:])[-600:] or f"pytest exited with {process.returncode}"
            raise PreflightFailed(f"the checker cannot collect the checks of {assignment.name}: "
                                  f"{cause}; nothing was graded")
    return [CollectedCheck(**item) for item in listed]


def probe_assignment(limits: Limits | None = None) -> Assignment:
    """A stand-in assignment for probing a kernel outside any course (`grader doctor`)."""
    config = AssignmentConfig(title="probe", notebook="probe.ipynb", points=1.0,
                              limits=limits or Limits())
    return Assignment(name="probe", root=Path(tempfile.gettempdir()), config=config)

