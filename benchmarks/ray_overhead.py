"""What `grader run --executor ray` costs beyond grading, measured without a kernel.

  .venv/bin/python benchmarks/ray_overhead.py --assignment assignment01 --repeat 3

Prints, as JSON: the seconds to start and stop a local Ray instance as `grader run` starts it
(ray.init with 2 CPUs, a 200 MB object store, no dashboard); the round trip of an empty task
and of a task that unpacks the assignment's files (pack, ray.put once, unpack in the task), each
the median over 20 tasks after a warm-up; and the size of that tar. The kernel, the checks and
the reports are the same with either executor (docs/scaling.md puts the figures together).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import ray

from grader.data.prepare import prepare
from grader.grading.ray_executor import LOCAL_STORE_MB, pack, unpack
from grader.model.assignments import load_assignment
from grader.model.paths import course_root, data_home

QUIET = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)


def noop() -> int:
    return 0


def unpacked(blob: bytes, name: str, key: str | None) -> int:
    with tempfile.TemporaryDirectory(prefix="grader-ray-bench-") as folder:
        unpack(blob, Path(folder), name=name, data_key=key)
    return len(blob)


def round_trips(task: ray.remote_function.RemoteFunction, *args: object, count: int = 20) -> float:
    """The median seconds from sending TASK to having its result, one task at a time."""
    ray.get(task.remote(*args))  # a worker started and the function imported
    times = []
    for _ in range(count):
        started = time.perf_counter()
        ray.get(task.remote(*args))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assignment", default="assignment01")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    assignment = load_assignment(course_root(None), args.assignment)
    recipe = assignment.config.data.recipe
    prepared = prepare(recipe, course=course_root(None), data_home=data_home(None)) if recipe else None
    started = time.perf_counter()
    blob = pack(assignment, prepared)
    pack_s = time.perf_counter() - started
    inits, empties, unpacks = [], [], []
    for _ in range(args.repeat):
        started = time.perf_counter()
        ray.init(num_cpus=2, object_store_memory=LOCAL_STORE_MB << 20, **QUIET)
        inits.append(time.perf_counter() - started)
        try:
            empties.append(round_trips(ray.remote(noop).options(num_cpus=1)))
            ref = ray.put(blob)
            unpacks.append(round_trips(ray.remote(unpacked).options(num_cpus=1), ref,
                                       assignment.name, prepared.key if prepared else None))
        finally:
            started = time.perf_counter()
            ray.shutdown()
            inits[-1] += time.perf_counter() - started
    print(json.dumps({
        "assignment": assignment.name, "tar_bytes": len(blob), "pack_s": round(pack_s, 4),
        "init_and_shutdown_s": [round(s, 2) for s in inits],
        "empty_task_s": [round(s, 4) for s in empties],
        "unpack_task_s": [round(s, 4) for s in unpacks],
    }, indent=1))


if __name__ == "__main__":
    main()
