"""Grade a batch on a Ray cluster: `grader run ASSIGNMENT --executor ray [--address ADDR]`.

Each submission to grade is one Ray task that runs the same sandboxed `grade_submission` as a
local slot, on whichever worker machine the cluster picks, and returns its Result as JSON. The
driver (this process) gives each result to the batch's Outbox as it arrives, as the local slots
do (grader.grading.executor), so the gradebook, the pages and the closing line are the
same. Workers need only the grader installed: the assignment's config, checks and prepared data
travel once per batch through Ray's object store as a tar, unpacked by each task into a private
folder under the worker's /tmp, which no sandboxed kernel sees (its /tmp is a tmpfs of its own);
the student data reaches the kernel only as it does locally, staged into its working directory.

A worker that dies mid-task is retried once elsewhere (Ray's max_retries); a second death is
stored as a grader fault (status `error`), which the next `grader run` grades again. Ray is an
optional extra, imported here only, when a batch runs on it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from grader.data.prepare import Prepared
from grader.grading.devices import CPU, Device, cores, detect_gpus
from grader.grading.devices import slots as device_slots
from grader.grading.executor import Job, Outbox, Settings
from grader.grading.local import grade_submission
from grader.isolation import sandbox
from grader.model.assignments import Assignment, grading_code
from grader.model.config import load_config
from grader.model.errors import GraderError, gist
from grader.model.result import Result, mark_fault, new_result, result_from_dict, result_to_dict, submitted_at
from grader.model.submission import Submission

MISSING = "--executor ray needs Ray, an optional extra: pip install 'grader[ray]'"
CHECKER_MB = 1024  # a task's checker with its libraries, beside the kernel's memory limit
LOCAL_STORE_MB = 200  # the object store of a local instance, at least (it holds one tar)


class RayError(GraderError):
    """Ray is missing, or the cluster cannot run a task."""


def require_ray() -> ModuleType:
    """The ray module, or RayError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise RayError(MISSING) from exc
    return ray


# --- the assignment's files, packed once per batch and unpacked by each task -----------------

def pack(assignment: Assignment, prepared: Prepared | None) -> bytes:
    """A tar of what a worker needs to grade ASSIGNMENT: assignment.toml, checks/ (conftest and
    helpers included) and the prepared student and hidden data."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(assignment.root / "assignment.toml", "assignment/assignment.toml")
        checks = assignment.root / "checks"
        if checks.is_dir():
            tar.add(checks, "assignment/checks", filter=_no_cache)
        if prepared is not None:
            tar.add(prepared.student_dir, "data/student", filter=_no_cache)
            tar.add(prepared.hidden_dir, "data/hidden", filter=_no_cache)
    return buffer.getvalue()


def _no_cache(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if "__pycache__" in info.name.split("/") else info


def unpack(blob: bytes, folder: Path, *, name: str, data_key: str | None) -> tuple[Assignment, Prepared | None]:
    """The assignment NAME and its prepared data (where DATA_KEY is not None), from pack's BLOB
    unpacked into FOLDER."""
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4 on; the tar is the driver's own
            tar.extractall(folder, filter="data")
        else:
            tar.extractall(folder)
    root = folder / "assignment"
    assignment = Assignment(name=name, root=root, config=load_config(root / "assignment.toml"))
    prepared = None if data_key is None else Prepared(
        student_dir=folder / "data" / "student", hidden_dir=folder / "data" / "hidden", key=data_key)
    return assignment, prepared


# --- on a worker ------------------------------------------------------------------------------

_USERS: list[int] = []  # this worker process's kernel and checker users, claimed once


def grade_task(blob: bytes, job: dict[str, Any]) -> str:
    """Grade one submission on a Ray worker (JOB as _job made it); its Result as JSON."""
    began = time.time()
    folder = Path(tempfile.mkdtemp(prefix="grader-ray-"))
    os.chmod(folder, 0o755)  # kernels and checks may run as users of their own
    try:
        assignment, prepared = unpack(blob, folder, name=job["assignment"], data_key=job["data_key"])
        submission = _submission(job, folder)
        if job["fingerprint"] != grading_code():
            result = new_result(assignment, submission, job["key"], CPU.label, job["sandboxed"])
            mark_fault(result, f"this Ray worker runs grader {grading_code()}, the driver "
                       f"{job['fingerprint']}: install the same grader on every worker")
        else:
            uid, checker_uid = _users(job["sandboxed"])
            result = grade_submission(
                assignment, submission, prepared=prepared, device=_task_device(job["per_gpu"]),
                threads=job["threads"], sandboxed=job["sandboxed"], uid=uid,
                checker_uid=checker_uid, key=job["key"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result.queue_s = max(0.0, began - job["began"])
    return json.dumps(result_to_dict(result))


def _submission(job: dict[str, Any], folder: Path) -> Submission:
    """JOB's submission, its notebook written into FOLDER."""
    path = None
    if job["notebook"] is not None:
        path = folder / "submission.ipynb"
        path.write_bytes(job["notebook"])
    moment = datetime.fromisoformat(job["submitted_at"]) if job["submitted_at"] else None
    return Submission(job["student"], path, job["problem"], moment)


def _users(sandboxed: bool) -> tuple[int, int]:
    """The kernel's and the checker's users of this worker process: claimed once (a claim lasts
    as long as the process), reaped after each submission by grade_submission."""
    if not sandbox.own_users(sandboxed):
        return sandbox.NOBODY, sandbox.NOBODY
    if not _USERS:
        _USERS.extend(sandbox.claim_user() for _ in range(2))
    return _USERS[0], _USERS[1]


def _task_device(per_gpu: int) -> Device:
    """The GPU slot Ray gave this task (its share of one GPU), else the CPU."""
    import ray

    given = {str(i) for i in ray.get_gpu_ids()}  # nvidia-smi's indices, or UUIDs where the
    # node's CUDA_VISIBLE_DEVICES named its GPUs by UUID
    gpus = [d for d in detect_gpus() if d.index in given or d.cuda_visible_devices in given]
    return device_slots(gpus[:1], per_gpu)[0] if gpus else CPU


# --- on the driver ----------------------------------------------------------------------------

class RayExecutor:
    """Each submission one Ray task (grade_batch's executor for --executor ray)."""

    def run(self, job: Job, todo: list[Submission], outbox: Outbox) -> None:
        """Grade TODO as Ray tasks, giving each result to OUTBOX as it arrives (see
        Executor.run). JOB.preflight (collecting the checks) runs while Ray starts, and before
        any task is sent; a local Ray instance lives as long as this call. JOB.claim is asked
        just before each task is sent: a submission it refuses (another grader run holds it, or
        stored it meanwhile) is not sent."""
        ray = require_ray()
        blob = pack(job.assignment, job.prepared)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="grader-preflight") as pool:
            checked = pool.submit(job.preflight) if job.preflight is not None else None  # while Ray starts
            with _connected(ray, job.settings, len(blob)):
                if checked is not None:
                    checked.result()
                if todo:
                    _grade_on_ray(ray, blob, job, todo, outbox)


def _grade_on_ray(ray: ModuleType, blob: bytes, job: Job, todo: list[Submission], outbox: Outbox) -> None:
    """Send TODO to the connected cluster, a few tasks at a time (each claimed as it is sent),
    and collect their results."""
    assignment, settings, batch = job.assignment, job.settings, outbox.batch
    options = task_options(assignment, settings, ray.cluster_resources())
    _check_fits(ray, options, settings.address)
    in_flight = min(len(todo), settings.workers or _capacity(ray, options))
    batch.workers = in_flight
    jobs = (_job(assignment, s, job.prepared, settings, job.key, job.began)
            for s in todo if job.claim is None or job.claim(s))
    broke: list[str] = []  # why the cluster stopped answering, if it did
    sender = threading.Thread(target=_send, name="grader-ray", daemon=True, args=(
        ray, ray.put(blob), jobs, options, in_flight, outbox, broke, (assignment, job.key, settings)))
    sender.start()
    try:
        outbox.collect(1)
    finally:
        outbox.stop.set()  # an interrupted batch (Ctrl-C) cancels what has not come back
        sender.join()
    if broke:
        batch.stopped = batch.stopped or (f"stopped: the Ray cluster failed ({broke[0]}); what was"
                                          " not graded is graded by the next run")


class _connected:
    """Ray, connected to SETTINGS.address, or a local instance started for the batch (the size
    of the local object store from BLOB_BYTES); disconnected, or stopped, on leaving."""

    def __init__(self, ray: ModuleType, settings: Settings, blob_bytes: int):
        self.ray, self.settings, self.blob_bytes = ray, settings, blob_bytes

    def __enter__(self) -> None:
        quiet: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                     logging_level=logging.ERROR, configure_logging=True)
        try:
            if self.settings.address:
                self.ray.init(address=self.settings.address, **quiet)
            else:
                store = max(LOCAL_STORE_MB << 20, 3 * self.blob_bytes)
                # "local": a new instance, even where RAY_ADDRESS names a cluster
                self.ray.init(address="local", num_cpus=self.settings.workers or cores(),
                              object_store_memory=store, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            address = self.settings.address
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            hint = (" (a cluster with token authentication, the default of `ray start` since Ray"
                    " 2.59, needs RAY_AUTH_MODE=token here and its token in ~/.ray/auth_token or"
                    " $RAY_AUTH_TOKEN)" if address and os.environ.get("RAY_AUTH_MODE") != "token" else "")
            raise RayError(f"cannot connect to {where}: {gist(str(exc))}{hint}") from exc

    def __exit__(self, *_: object) -> None:
        self.ray.shutdown()


def task_options(assignment: Assignment, settings: Settings, resources: dict[str, float]) -> dict[str, Any]:
    """Ray's options for one submission's task: limits.cpus cores, the kernel's memory limit and
    a checker's, 1/PER_GPU of a GPU where the cluster has GPUs (and --gpus is not none), one retry."""
    limits = assignment.config.limits
    options: dict[str, Any] = dict(
        num_cpus=limits.cpus, memory=(limits.memory_mb + CHECKER_MB) << 20, max_retries=1)
    if settings.cluster_gpus and resources.get("GPU", 0) > 0:
        options["num_gpus"] = 1 / settings.per_gpu
    return options


def _nodes(ray: ModuleType) -> Iterator[dict[str, float]]:
    """The resources of each live node of the cluster."""
    for node in ray.nodes():
        if node.get("Alive"):
            yield node.get("Resources", {})


def _check_fits(ray: ModuleType, options: dict[str, Any], address: str | None) -> None:
    """RayError unless some node of the cluster can run one task with OPTIONS: Ray would wait
    for one forever."""
    wanted = {"CPU": options["num_cpus"], "memory": options["memory"], "GPU": options.get("num_gpus", 0)}
    if any(all(node.get(k, 0) >= v for k, v in wanted.items() if v) for node in _nodes(ray)):
        return
    where = f"the Ray cluster at {address}" if address else "the local Ray instance"
    largest = max(_nodes(ray), key=lambda n: n.get("memory", 0), default={})
    raise RayError(
        f"no node of {where} can run one submission's task ({wanted['CPU']:g} CPU, "
        f"{wanted['memory'] / 2**30:.1f} GB of memory: limits.cpus, the kernel's limits.memory_mb and a "
        f"checker{', a GPU share' if wanted['GPU'] else ''}); the largest has "
        f"{largest.get('CPU', 0):g} CPU, {largest.get('memory', 0) / 2**30:.1f} GB: add a larger "
        "node, or lower limits.cpus or limits.memory_mb")


def _capacity(ray: ModuleType, options: dict[str, Any]) -> int:
    """How many tasks with OPTIONS the cluster runs at once (at least 1)."""
    total = 0
    for node in _nodes(ray):
        fits = [node.get("CPU", 0) // options["num_cpus"], node.get("memory", 0) // options["memory"]]
        if options.get("num_gpus"):
            fits.append(node.get("GPU", 0) // options["num_gpus"])
        total += int(min(fits))
    return max(1, total)


def _job(assignment: Assignment, submission: Submission, prepared: Prepared | None,
         settings: Settings, key: str, began: float) -> dict[str, Any]:
    """What a task needs to grade SUBMISSION, as plain data: its notebook's bytes, never a path."""
    problem, notebook = submission.problem, None
    if submission.path is not None:
        try:
            notebook = submission.path.read_bytes()
        except OSError as exc:
            problem = f"the notebook could not be read: {exc.strerror}"
    moment = submitted_at(submission)
    return dict(assignment=assignment.name, student=submission.student, notebook=notebook,
                problem=problem, submitted_at=moment.isoformat() if moment else None,
                data_key=prepared.key if prepared else None, key=key,
                fingerprint=grading_code(), sandboxed=settings.sandboxed,
                per_gpu=settings.per_gpu, threads=1,
                began=time.time() - (time.monotonic() - began), path=str(submission.path or ""))


def _send(ray: ModuleType, blob: Any, jobs: Iterator[dict[str, Any]], options: dict[str, Any],
          in_flight: int, outbox: Outbox, broke: list[str],
          batch: tuple[Assignment, str, Settings]) -> None:
    """Keep IN_FLIGHT tasks running from JOBS; give each result to OUTBOX as it comes, then say
    done. Once OUTBOX.stop is set, send nothing more and cancel what has not come back; where
    Ray itself fails, say why in BROKE."""
    stop = outbox.stop
    task = ray.remote(grade_task).options(**options)
    pending: dict[Any, dict[str, Any]] = {}
    try:
        while True:
            while len(pending) < in_flight and not stop.is_set() and (job := next(jobs, None)):
                pending[task.remote(blob, job)] = job
            if not pending or stop.is_set():
                break
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in ready:
                outbox.give(_received(ray, ref, pending.pop(ref), *batch))
    except Exception as exc:  # noqa: BLE001 - the cluster went away: stop, never hang
        broke.append(f"{type(exc).__name__}: {gist(str(exc))}")
        stop.set()
    finally:
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already done, or the cluster is gone
                pass
        outbox.done()


def _received(ray: ModuleType, ref: Any, job: dict[str, Any], assignment: Assignment, key: str,
              settings: Settings) -> Result:
    """The Result of REF's task; a grader fault (graded again by the next run) where its worker
    died twice or the task failed on the grader's side."""
    try:
        result = result_from_dict(json.loads(ray.get(ref)))
    except ray.exceptions.RayError as exc:
        path = Path(job["path"]) if job["path"] else None
        moment = datetime.fromisoformat(job["submitted_at"]) if job["submitted_at"] else None
        result = new_result(assignment, Submission(job["student"], path, job["problem"], moment),
                            key, CPU.label, settings.sandboxed)
        died = isinstance(exc, ray.exceptions.WorkerCrashedError | ray.exceptions.NodeDiedError)
        mark_fault(result, (
            "the Ray worker grading it died, and again when the task was retried once elsewhere"
            if died else "the Ray task grading it failed") + f": {type(exc).__name__}: "
            f"{gist(str(exc))}; `grader run` grades it again")
    result.notebook = job["path"]  # where the driver read it, not the worker's copy
    return result
