"""Which device each kernel gets: a GPU slot of its own where the machine has GPUs, else the CPU.

Each chosen GPU offers PER_GPU slots (kernels at once). A GPU kernel sees that GPU alone (its
UUID in CUDA_VISIBLE_DEVICES, its /dev/nvidiaN in the sandbox) and TensorFlow in it may take at
most the GPU's memory divided by PER_GPU, less what CUDA itself keeps per process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from grader.model.errors import GraderError

# What a CUDA process holds outside TensorFlow's allocator (its context, the kernels it loads):
# taken from each kernel's share so that PER_GPU kernels at their caps still fit on the GPU.
CUDA_RESERVE_MB = 512
MIN_SHARE_MB = 1024  # below this a kernel's share is too small to train anything
_PROC_GPUS = "/proc/driver/nvidia/gpus"
_QUERY = "index,uuid,pci.bus_id,memory.total,name"


@dataclass(frozen=True)
class Device:
    """What one kernel runs on."""

    label: str  # for reports: "CPU" or "GPU 0 (NVIDIA H100 80GB HBM3)"
    cuda_visible_devices: str  # the kernel's CUDA_VISIBLE_DEVICES: the GPU's UUID; "" hides all
    index: str = ""  # nvidia-smi's index, what --gpus names
    minor: int | None = None  # N of its device node /dev/nvidiaN (not always the index)
    memory_mb: int = 0  # the GPU's memory (nvidia-smi memory.total); 0: unknown
    memory_limit_mb: int = 0  # TensorFlow's cap for one kernel in this slot; 0: none
    kernels: int = 1  # kernels sharing this GPU at once (--per-gpu)

    @property
    def gpu(self) -> bool:
        """Whether a kernel on this device gets a GPU."""
        return self.cuda_visible_devices != ""

    @property
    def memory_fraction(self) -> float:
        """The share of the GPU's memory one kernel in this slot may take (JAX's cap): its
        TensorFlow cap over the GPU's memory, else 1/KERNELS where the memory is unknown."""
        if self.memory_mb > 0 and self.memory_limit_mb > 0:
            return self.memory_limit_mb / self.memory_mb
        return 1 / max(1, self.kernels)


CPU = Device("CPU", "")


def detect_gpus(proc_gpus: str = _PROC_GPUS) -> list[Device]:
    """The machine's NVIDIA GPUs, as nvidia-smi lists them; none where it is missing."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, f"--query-gpu={_QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [d for d in (_parse(line, proc_gpus) for line in out.strip().splitlines()) if d]


def _parse(line: str, proc_gpus: str) -> Device | None:
    """One line of nvidia-smi's CSV as a Device; None for a line that is not a GPU."""
    fields = [f.strip() for f in line.split(",", 4)]
    if len(fields) != 5 or not fields[0].isdigit():
        return None
    index, uuid, bus_id, memory, name = fields
    return Device(f"GPU {index} ({name})", uuid or index, index=index,
                  minor=device_minor(bus_id, proc_gpus, default=int(index)),
                  memory_mb=int(memory) if memory.isdigit() else 0)


def device_minor(bus_id: str, proc_gpus: str = _PROC_GPUS, *, default: int) -> int:
    """The N of /dev/nvidiaN for the GPU at BUS_ID ("00000000:3B:00.0"), from the driver's
    /proc/driver/nvidia/gpus/0000:3b:00.0/information; DEFAULT where that cannot be read."""
    parts = bus_id.lower().split(":")
    if len(parts) != 3:
        return default
    folder = Path(proc_gpus) / f"{parts[0][-4:]}:{parts[1]}:{parts[2]}"
    try:
        text = (folder / "information").read_text()
    except OSError:
        return default
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Device Minor" and value.strip().isdigit():
            return int(value.strip())
    return default


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
    missing = [w for w in wanted if w not in {d.index for d in found}]
    if missing:
        listed = ", ".join(d.label for d in found) or "no GPU (nvidia-smi lists none)"
        raise GraderError(f"--gpus {spec}: this machine has no GPU {', '.join(missing)}; it has "
                          f"{listed}. Pass indices it has, auto, or none")
    return [d for d in found if d.index in wanted]


def per_gpu(text: str | int) -> int:
    """The value of --per-gpu as a number of kernels, or a one-line GraderError."""
    value = str(text).strip()
    if not value.isdigit() or int(value) < 1:
        raise GraderError(f"--per-gpu must be a whole number of kernels per GPU, 1 or more; "
                          f"found {text!r}")
    return int(value)


def memory_cap(memory_mb: int, kernels: int) -> int:
    """TensorFlow's memory cap in MB for each of KERNELS kernels sharing a GPU of MEMORY_MB;
    0 (no cap) where the GPU's memory is unknown."""
    if memory_mb <= 0:
        return 0
    return memory_mb // kernels - CUDA_RESERVE_MB


def slots(chosen: list[Device], kernels: int) -> list[Device]:
    """The device of every kernel that may run at once: each GPU KERNELS times, with its memory
    cap, taking the GPUs in turn (so fewer workers still spread over them); or the CPU once."""
    gpus = [d for d in chosen if d.gpu]
    if not gpus:
        return [CPU]
    for gpu in gpus:
        cap = memory_cap(gpu.memory_mb, kernels)
        if gpu.memory_mb and cap < MIN_SHARE_MB:
            raise GraderError(f"--per-gpu {kernels} leaves {cap} MB of {gpu.label}'s "
                              f"{gpu.memory_mb} MB to each kernel, under {MIN_SHARE_MB} MB: "
                              "pass a smaller --per-gpu")
    return [replace(gpu, memory_limit_mb=memory_cap(gpu.memory_mb, kernels), kernels=kernels)
            for _ in range(kernels) for gpu in gpus]


def describe(chosen: list[Device], kernels: int, *, asked: str) -> str:
    """One line for a run's output: which devices grade, or that it is the CPU and why."""
    gpus = [d for d in chosen if d.gpu]
    if not gpus:
        why = ("no GPU found: nvidia-smi is missing or lists none" if asked == "auto"
               else f"--gpus {asked}")
        return f"grading on the CPU ({why})"
    caps = sorted({memory_cap(g.memory_mb, kernels) for g in gpus})
    cap = (f"TensorFlow may use {', '.join(map(str, caps))} MB of GPU memory per kernel"
           if all(caps) else "no memory cap where nvidia-smi gave no memory size")
    return (f"grading on {', '.join(g.label for g in gpus)}: {kernels} kernel(s) per GPU, "
            f"{len(gpus) * kernels} at once; {cap}")


# What a CPU slot holds beside its kernel's memory limit: the next kernel, started and warmed up
# (TensorFlow imported: about 0.5 GB), and two checkers with their libraries (about 1 GB each:
# the current submission's, and the next one's, started ahead).
SLOT_EXTRA_MB = 2560


def cores() -> int:
    """The CPU cores this process may run on."""
    found = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, found or 1)


def memory_mb() -> int:
    """The machine's memory in MB; 0 where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    except (ValueError, OSError, AttributeError):
        return 0


def cpu_workers(workers: int | None, kernel_memory_mb: int = 0) -> int:
    """How many kernels a CPU grades at once: WORKERS (--workers), else `auto_workers`."""
    return max(1, workers or auto_workers(kernel_memory_mb))


def auto_workers(kernel_memory_mb: int = 0) -> int:
    """How many kernels a CPU grades at once: one per core, and no more than the memory holds
    at KERNEL_MEMORY_MB (the assignment's limit) plus SLOT_EXTRA_MB for each."""
    memory = memory_mb()
    if kernel_memory_mb <= 0 or memory <= 0:
        return cores()
    return max(1, min(cores(), memory // (kernel_memory_mb + SLOT_EXTRA_MB)))


def describe_workers(workers: int, *, auto: bool, kernel_memory_mb: int = 0) -> str:
    """Why a CPU batch runs WORKERS kernels at once, for a run's first line."""
    if not auto:
        return f"{workers} kernel(s) at once (--workers), {threads_per_kernel(workers)} thread(s) each"
    memory = (f", {memory_mb() / 1024:.1f} GB of memory / {(kernel_memory_mb + SLOT_EXTRA_MB) / 1024:.1f} GB"
              " per kernel and checker" if kernel_memory_mb > 0 else "")
    return (f"{workers} kernel(s) at once (--workers auto: {cores()} core(s){memory}), "
            f"{threads_per_kernel(workers)} thread(s) each")


def threads_per_kernel(workers: int) -> int:
    """CPU threads for each kernel so that WORKERS kernels share the cores without thrashing."""
    return max(1, cores() // max(1, workers))


def cpu_share(workers: int) -> float:
    """The cores each of WORKERS kernels may use at most (its run's CPU quota): an equal share
    of the machine's, one core at least, so that no notebook's processes slow the others'."""
    return max(1.0, cores() / max(1, workers))
