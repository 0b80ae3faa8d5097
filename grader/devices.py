"""Which device each kernel gets: a GPU of its own where the machine has them, else the CPU."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from .errors import GraderError


@dataclass(frozen=True)
class Device:
    """What one kernel runs on."""

    label: str  # for reports: "CPU" or "GPU 0 (NVIDIA H100 80GB HBM3)"
    cuda_visible_devices: str  # the kernel's CUDA_VISIBLE_DEVICES ("" hides every GPU)


CPU = Device("CPU", "")


def detect_gpus() -> list[Device]:
    """The machine's NVIDIA GPUs, as nvidia-smi lists them; none where it is missing."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    devices = []
    for line in out.strip().splitlines():
        index, _, name = line.partition(",")
        if index.strip().isdigit():
            devices.append(Device(f"GPU {index.strip()} ({name.strip()})", index.strip()))
    return devices


def choose(spec: str) -> list[Device]:
    """Devices for a batch from --gpus: 'auto' (every GPU, else the CPU), 'none', or '0,2'."""
    if spec == "none":
        return [CPU]
    found = detect_gpus()
    if spec == "auto":
        return found or [CPU]
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    if not wanted or not all(w.isdigit() for w in wanted):
        raise GraderError(f"--gpus {spec!r} is not auto, none or GPU indices like 0,1")
    missing = [w for w in wanted if w not in {d.cuda_visible_devices for d in found}]
    if missing:
        listed = ", ".join(d.label for d in found) or "no GPU (nvidia-smi lists none)"
        raise GraderError(f"--gpus {spec}: this machine has no GPU {', '.join(missing)}; it has "
                          f"{listed}. Pass indices it has, auto, or none")
    return [d for d in found if d.cuda_visible_devices in wanted]


def threads_per_kernel(workers: int) -> int:
    """CPU threads for each kernel so that WORKERS kernels share the cores without thrashing."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, workers))
