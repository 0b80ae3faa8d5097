"""`grader doctor`: what grading needs on this machine, checked the way grading uses it."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from grader.grading import devices
from grader.isolation import sandbox, workdirs
from grader.model.assignments import grading_code
from grader.model.errors import GraderError
from grader.model.paths import course_root, data_home

_CUDA = re.compile(r"cuda|cuInit|gpu|nvidia|dlopen", re.IGNORECASE)  # stderr lines on the GPU


@dataclass(frozen=True)
class Row:
    """One line of the doctor's table."""

    name: str
    status: str  # ok | warn | FAIL
    detail: str


def diagnose(*, course: str | None, data_home_dir: str | None, gradebook: str, gpus: str,
             per_gpu: int = 1) -> list[Row]:
    """Every check, in the order a batch needs them."""
    rows = [_bubblewrap(), _user_namespaces(), _cgroups()]
    try:
        slots = devices.slots(devices.choose(gpus), per_gpu)
    except GraderError as exc:
        rows.append(Row("GPUs", "FAIL", str(exc)))
        slots = [devices.CPU]
    else:
        rows.append(_gpus(slots, per_gpu, asked=gpus))
    rows += _kernel(slots[0], sandboxed=sandbox.bwrap() is not None)
    rows += [_course(course), _data(course, data_home_dir), _gradebook(gradebook),
             _graders(gradebook), _chromium()]
    return rows


def _graders(target: str) -> Row:
    """Which grader this is, and which graded the gradebook's results."""
    mine = grading_code()
    if "://" not in target and not Path(target).exists():
        return Row("grader", "ok", f"grades with {mine}")
    from grader.store.gradebook import Gradebook

    try:
        counts = Gradebook(target).graders()
    except GraderError as exc:
        return Row("grader", "warn", f"grades with {mine}; the gradebook cannot be read: {exc}")
    others = {g or "(not recorded)": n for g, n in counts.items() if g != mine}
    if not others:
        return Row("grader", "ok", f"grades with {mine}, as every result of the gradebook was")
    told = ", ".join(f"{n} by {g}" for g, n in sorted(others.items()))
    return Row("grader", "warn", f"grades with {mine}; the gradebook's latest results: "
               f"{counts.get(mine, 0)} by it, {told} (`grader run ASSIGNMENT --regrade-new-grader`"
               " grades those again)")


def _gpus(slots: list[devices.Device], per_gpu: int, *, asked: str,
          uvm: str = "/dev/nvidia-uvm") -> Row:
    """The GPUs, their slots and each kernel's memory cap, as grading would use them."""
    if not slots[0].gpu:
        line = devices.describe(slots, per_gpu, asked=asked).removeprefix("grading on ")
        return Row("GPUs (nvidia-smi)", "ok", f"none: kernels run on {line}")
    gpus = slots[: len(slots) // per_gpu]
    each = "; ".join(
        f"{g.label}: {g.memory_mb} MB, TensorFlow capped at {g.memory_limit_mb} MB per kernel"
        if g.memory_limit_mb else f"{g.label}: memory unknown, no cap" for g in gpus)
    count = f"{len(slots)} slot{'s' if len(slots) != 1 else ''}"
    if not os.path.exists(uvm):  # made on the host by the first CUDA program; a sandbox cannot
        return Row("GPUs (nvidia-smi)", "warn", f"{count} ({per_gpu} per GPU): {each}; but {uvm} "
                   "is missing, and kernels cannot make it: run `nvidia-modprobe -u -c=0` as root")
    return Row("GPUs (nvidia-smi)", "ok", f"{count} ({per_gpu} per GPU): {each}")


def _bubblewrap() -> Row:
    path = shutil.which("bwrap")
    if path is None:
        return Row("bubblewrap", "FAIL", "not installed: apt-get install bubblewrap")
    version = _run([path, "--version"])
    if sandbox.bwrap() is None:
        return Row("bubblewrap", "FAIL", f"{version} cannot make a sandbox here (namespaces refused)")
    return Row("bubblewrap", "ok", f"{version} at {path}")


def _user_namespaces() -> Row:
    limit = _read("/proc/sys/user/max_user_namespaces")
    if sandbox.own_users(sandboxed=True):
        return Row("user namespaces", "ok", f"not needed as root (max_user_namespaces {limit})")
    if limit in ("", "0"):
        return Row("user namespaces", "FAIL", "disabled: a non-root grader needs them")
    return Row("user namespaces", "ok", f"max_user_namespaces {limit}")


def _cgroups() -> Row:
    """What each run's cgroups limit here: memory, processes, and its share of the CPU time."""
    held = workdirs.held_limits() if sandbox.own_users(sandboxed=True) else []
    missing = [c for c in ("memory", "pids", "cpu") if c not in held]
    if not missing:
        return Row("cgroups", "ok", "each run's memory, processes and CPU share are held")
    without = {"memory": "memory no process maps (memfd, shm) is not counted",
               "pids": "only RLIMIT_NPROC limits processes",
               "cpu": "a notebook's busy processes can slow the one graded beside it"}
    why = "a non-root grader makes none" if not held else f"no {', '.join(missing)} controller"
    return Row("cgroups", "warn", f"{why}: " + "; ".join(without[c] for c in missing))


def _kernel(device: devices.Device, *, sandboxed: bool) -> list[Row]:
    from grader.grading.executor import Settings
    from grader.grading.preflight import probe_assignment, probe_kernel

    where = "inside the sandbox" if sandboxed else "WITHOUT a sandbox"
    settings = Settings(sandboxed=sandboxed, devices=(device,))
    try:
        info = asyncio.run(probe_kernel(probe_assignment(), settings=settings, prepared=None,
                                        device=device, full=True))
    except GraderError as exc:
        return [Row(f"kernel {where}", "FAIL", str(exc))]
    packages = info.get("packages", {})
    missing = [name for name, version in packages.items() if str(version).startswith("MISSING")]
    rows = [
        Row(f"kernel {where}", "ok" if sandboxed else "warn",
            f"Python {info.get('python')} ({info.get('executable')}) on {device.label}"),
        Row("packages in the kernel", "FAIL" if missing else "ok",
            ", ".join(f"{name} {version}" for name, version in packages.items())),
    ]
    listed = ", ".join(info.get("devices", [])) or "none"
    failed = listed.startswith("TensorFlow failed")
    if info.get("gpu_caps_mb"):
        listed += f"; GPU memory capped at {', '.join(map(str, info['gpu_caps_mb']))} MB"
    unused = device.gpu and not info.get("gpus")
    if unused and not failed:
        lines = str(info.get("stderr", "")).splitlines()
        said = " | ".join(([x for x in lines if _CUDA.search(x)] or lines)[-3:])[-600:]
        listed += f"; no GPU, although {device.label} was assigned; the kernel's stderr: {said}"
    status = "FAIL" if failed or unused else "ok"
    rows.append(Row(f"TensorFlow {packages.get('tensorflow', '?')} devices", status, listed))
    return rows


def _course(course: str | None) -> Row:
    try:
        root = course_root(course)
    except GraderError as exc:
        return Row("course", "warn", str(exc))
    names = sorted(p.name for p in (root / "assignments").iterdir() if (p / "assignment.toml").is_file())
    return Row("course", "ok", f"{root}: {len(names)} assignments ({', '.join(names)})")


def _data(course: str | None, data_home_dir: str | None) -> Row:
    from grader.data.cache import cached_path
    from grader.data.prepare import course_registry

    home = data_home(data_home_dir)
    try:
        registry = course_registry(course_root(course))
    except GraderError:
        from grader.data.registry import load_registry

        registry = load_registry(None)
    raw = [e for e in registry.entries if e.kind != "generated"]
    present = [e.name for e in raw if cached_path(e, home).exists()]
    missing = [e.name for e in raw if e.name not in present]
    detail = f"{home}: {len(present)} of {len(raw)} datasets present"
    if missing:
        detail += f"; missing {', '.join(missing)} (`grader data fetch NAME` or `grader data import DIR`)"
    return Row("data cache", "ok" if not missing else "warn", detail + "; `grader data list` verifies hashes")


def _gradebook(target: str) -> Row:
    if "://" in target:
        from grader.store.gradebook import Gradebook

        try:
            Gradebook(target)
        except GraderError as exc:
            return Row("gradebook", "FAIL", str(exc))
        return Row("gradebook", "ok", f"{target.split('://')[0]} opens")
    path = Path(target).resolve()
    if path.exists():
        ok = os.access(path, os.W_OK)
        return Row("gradebook", "ok" if ok else "FAIL", f"{path} ({'writable' if ok else 'read-only'})")
    folder = path.parent
    ok = folder.is_dir() and os.access(folder, os.W_OK)
    return Row("gradebook", "ok" if ok else "FAIL",
               f"{path} will be made on the first run" if ok else f"cannot write in {folder}")


def _chromium() -> Row:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return Row("Chromium (page tests)", "ok", _run([path, "--version"]) or path)
    return Row("Chromium (page tests)", "warn", "missing: only the tests need it (apt-get install chromium)")


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""
