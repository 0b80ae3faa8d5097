"""The seam between a batch and what grades its submissions: the batch hands an executor a Job
and an Outbox; the executor grades the submissions (on this machine's slots, grading.local, or
as Ray tasks, grading.ray_executor) and gives each result to the Outbox, where the batch stores
and reports it (grading.batch)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from grader.grading.devices import CPU, Device, cpu_workers
from grader.grading.devices import slots as device_slots

if TYPE_CHECKING:  # annotations only: grader.cli.early reads Settings, and the data's modules import NumPy
    from grader.data.prepare import Prepared
    from grader.model.assignments import Assignment
    from grader.model.late import LatePolicy
    from grader.model.result import Result
    from grader.model.submission import Submission


@dataclass(frozen=True)
class Settings:
    """How a batch is graded; the CLI reads its defaults from here."""

    workers: int | None = None  # kernels at once, at most; None: auto (every GPU slot, or from
    # the CPU's cores and memory: devices.auto_workers)
    force: bool = False
    reports: Path | None = None  # feedback pages go here when set
    notebook_html: bool = True  # also write each executed notebook as HTML
    devices: tuple[Device, ...] = (CPU,)  # the GPUs chosen (devices.choose), or the CPU
    per_gpu: int = 1  # kernels each GPU runs at once; each may use 1/PER_GPU of its memory
    sandboxed: bool = True  # run each kernel in the bubblewrap sandbox
    work_root: Path | None = None  # where each submission's private folder is made
    python: str = ""  # the kernels' interpreter; "" is the grader's own ($GRADER_KERNEL_PYTHON)
    stop_after: int = 6  # stop the batch if more than half of its first results are grader faults
    # grade again what another grader (an older grading code) graded; else keep its results
    regrade_new_grader: bool = False
    warm_kernels: bool = True  # start each slot's next kernel, its libraries imported, ahead
    warm_checks: bool = True  # one checker per slot imports the check libraries once
    late: LatePolicy | None = None  # the deadline each result's late penalty is worked out by
    executor: str = "local"  # "local": this machine's slots; "ray": one Ray task per submission
    address: str | None = None  # ray: the cluster to connect to; None: a local instance for the batch
    cluster_gpus: bool = True  # ray: each task asks for 1/PER_GPU of a GPU where the cluster has any

    def slots(self, kernel_memory_mb: int = 0) -> list[Device]:
        """The device of each kernel that runs at once: PER_GPU per GPU, as many as WORKERS
        allows, or the CPU WORKERS times, by default as many as the cores and the memory hold
        at KERNEL_MEMORY_MB a kernel (GraderError if a GPU's share is too small)."""
        per_device = device_slots(list(self.devices), self.per_gpu)
        if not per_device[0].gpu:
            return per_device * cpu_workers(self.workers, kernel_memory_mb)
        return per_device[: max(1, self.workers or len(per_device))]


@dataclass
class Batch:
    """What a batch did."""

    graded: list[Result] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # graded before (by this run or another)
    elsewhere: list[str] = field(default_factory=list)  # being graded by another grader run now
    # graded before by another grader (grading code), kept: --regrade-new-grader grades them
    older: list[str] = field(default_factory=list)
    seconds: float = 0.0
    unstored: list[tuple[str, str]] = field(default_factory=list)  # (student, why) not stored
    stopped: str = ""  # why the batch stopped before grading everyone, if it did
    workers: int = 0  # Ray: the tasks sent at once (0: the local slots, Settings.slots)
    # seconds from the batch's start until its first notebook began to run (the zygote's
    # imports, the preflight, the first kernel's start); 0 where none ran here (or on Ray)
    start_s: float = 0.0
    # the seconds from the batch's start at which each slot gave its last result (a slot left
    # idle at the batch's tail is not busy); empty where not measured (Ray)
    slot_ends: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Job:
    """What an executor needs to grade a batch's submissions."""

    assignment: Assignment
    prepared: Prepared | None
    settings: Settings
    key: str  # the grading key every result is stored under
    began: float  # time.monotonic() when the batch began
    # collects the checks; runs while the first kernels start, and gates every check and result
    preflight: Callable[[], object] | None = None
    # whether this grader may grade a submission now (its claim in the gradebook taken)
    claim: Callable[[Submission], bool] | None = None


class Outbox:
    """Where an executor's workers give their results, and the batch takes them: store, stop
    rule, pages (COLLECT, on the executor's calling thread). STOP is set when the batch stops:
    an executor then takes and sends nothing more."""

    def __init__(self, batch: Batch, collect: Callable[[Outbox, int], None]):
        self.batch = batch
        self.stop = threading.Event()
        self.results: queue.SimpleQueue[Result | None] = queue.SimpleQueue()
        self._collect = collect

    def give(self, result: Result) -> None:
        """A worker's result."""
        self.results.put(result)

    def done(self) -> None:
        """A worker has no more results."""
        self.results.put(None)

    def collect(self, workers: int) -> None:
        """Store and report each result until each of WORKERS has said done."""
        self._collect(self, workers)


class Executor(Protocol):
    """Grades a batch's submissions: grading.local.LocalExecutor, grading.ray_executor.RayExecutor."""

    def run(self, job: Job, todo: list[Submission], outbox: Outbox) -> None:
        """Grade TODO (each one JOB.claim takes), giving each result to OUTBOX, whose collect
        runs on this thread; raise what JOB.preflight raised, with nothing given."""
