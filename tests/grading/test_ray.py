"""`grader run --executor ray`: the tiny course graded through real local Ray clusters (one
that `grader run` starts itself, one of two worker CPUs started by `ray start --head` for
--address), the same grades as the local slots, and workers killed in the middle of a batch."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from grader.data.prepare import prepare
from grader.model.assignments import load_assignment
from grader.model.result import FAULT_REASON
from grader.store.gradebook import Gradebook
from tests.conftest import TINY_SOLUTION
from tests.examples import assert_check_points, assert_scores, grade_examples
from tests.test_assignments import ASSIGNMENTS

RAY = Path(sys.executable).with_name("ray")  # the ray extra's command (pip install -e '.[ray]')
SLEEPY = (*TINY_SOLUTION, "import time\ntime.sleep(5)")  # a kernel that runs long enough to be hit


def grader(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "grader", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A Ray head of 2 CPUs (two worker processes at once), in a temporary folder; its address.
    `ray start --block` stops every process it started when it is terminated."""
    folder = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit
    # token authentication, as Ray (2.59 on) does by default for `ray start`; a driver connecting
    # to it must say so: every grader this module runs with --address inherits it
    os.environ["RAY_AUTH_MODE"] = "token"
    process = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", "--num-cpus", "2", "--temp-dir", folder,
         "--include-dashboard=false", "--object-store-memory", str(200 << 20), "--port", "0",
         "--disable-usage-stats"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    address = Path(folder) / "ray_current_cluster"
    try:
        deadline = time.monotonic() + 60
        while not address.is_file() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert address.is_file(), "`ray start --head` did not come up within a minute"
        yield address.read_text().strip()
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        del os.environ["RAY_AUTH_MODE"]
        shutil.rmtree(folder, ignore_errors=True)


def _stored(book: Path) -> dict[str, tuple[str, float, list[tuple[str, float]]]]:
    """Each student's status, score and points per check, as stored."""
    return {r.student: (r.status, r.score, sorted((c.name, c.points) for c in r.checks))
            for r in Gradebook(book).latest("tiny")}


@pytest.mark.slow  # grades real notebooks in kernels, on Ray and on the local slots
def test_ray_grades_as_the_local_slots_do_and_leaves_no_ray_process(course, tmp_path, write_notebook):
    subs = tmp_path / "subs"
    write_notebook(subs, "good", *TINY_SOLUTION)
    write_notebook(subs, "partial", *TINY_SOLUTION[:2])
    write_notebook(subs, "raises", "raise RuntimeError('nope')")
    (subs / "broken.ipynb").write_text("{")
    before = _ray_daemons()
    runs = {}
    for executor in ("local", "ray"):
        run = grader("run", "tiny", "--course", course, "--submissions", subs, "--gradebook",
                     tmp_path / f"{executor}.sqlite", "--reports", tmp_path / executor,
                     "--executor", executor, cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "4 graded" in run.stdout
        runs[executor] = _stored(tmp_path / f"{executor}.sqlite")
    assert runs["ray"] == runs["local"]
    assert runs["ray"]["good"][:2] == ("graded", 6) and runs["ray"]["raises"][0] == "cell_error"
    assert runs["ray"]["broken"][0] == "invalid" and 0 < runs["ray"]["partial"][1] < 6
    assert "local Ray instance" in run.stdout
    assert (tmp_path / "ray" / "good.html").is_file() and (tmp_path / "ray" / "index.html").is_file()
    stored = Gradebook(tmp_path / "ray.sqlite").latest("tiny")
    assert {r.notebook for r in stored if r.student != "broken"} == {
        str(subs / f"{n}.ipynb") for n in ("good", "partial", "raises")}  # the driver's paths
    assert all(r.sandboxed for r in stored)
    assert _ray_daemons() == before  # the local instance stopped with the command


def _ray_daemons() -> set[int]:
    """The raylets and GCS servers running now."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and any(name in (entry / "cmdline").read_bytes().split(b"\0")[0]
                                            for name in (b"raylet/raylet", b"gcs/gcs_server")):
                found.add(int(entry.name))
        except OSError:
            pass
    return found


def _grading_workers() -> set[int]:
    """The Ray worker processes whose submission's kernel is running now: the processes named
    in a kernel's GRADER_PARENT_PID that are Ray workers (`ray::...`)."""
    parents = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                for item in (entry / "environ").read_bytes().split(b"\0"):
                    if item.startswith(b"GRADER_PARENT_PID="):
                        parents.add(int(item.split(b"=", 1)[1]))
        except (OSError, ValueError):
            pass
    workers = set()
    for pid in parents:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::"):
                workers.add(pid)
        except OSError:
            pass
    return workers


def _kill_workers(process: subprocess.Popen[str], times: int) -> list[int]:
    """Kill a Ray worker in the middle of grading TIMES times, a new one each time, while
    PROCESS (the batch) runs; the pids killed."""
    killed: list[int] = []
    deadline = time.monotonic() + 120
    while len(killed) < times and process.poll() is None and time.monotonic() < deadline:
        hit = sorted(_grading_workers() - set(killed))
        if hit:
            os.kill(hit[0], signal.SIGKILL)
            killed.append(hit[0])
        time.sleep(0.2)
    return killed


def _run_on(cluster: str, course: Path, subs: Path, book: Path, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "grader", "run", "tiny", "--course", str(course), "--submissions",
         str(subs), "--gradebook", str(book), "--reports", str(cwd / "r"), "--executor", "ray",
         "--address", cluster], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # grades real notebooks in kernels on a Ray cluster
def test_a_worker_killed_mid_batch_is_retried_and_each_submission_stored_once(
        cluster, course, tmp_path, write_notebook):
    subs = tmp_path / "subs"
    for name in ("a", "b", "c"):
        write_notebook(subs, name, *SLEEPY)
    book = tmp_path / "g.sqlite"
    process = _run_on(cluster, course, subs, book, tmp_path)
    killed = _kill_workers(process, times=1)
    out, err = process.communicate(timeout=300)
    assert len(killed) == 1, f"no worker was seen grading: {err[-2000:]}"
    assert process.returncode == 0, [r.staff_detail for r in Gradebook(book).latest("tiny")]
    assert "Ray cluster at " + cluster in out
    assert Gradebook(book).count_runs("tiny") == {"a": 1, "b": 1, "c": 1}
    assert {s: v[:2] for s, v in _stored(book).items()} == {n: ("graded", 6) for n in "abc"}


@pytest.mark.slow  # grades a real notebook in kernels on a Ray cluster, twice
def test_a_submission_whose_worker_dies_twice_is_a_grader_fault_that_the_next_run_grades(
        cluster, course, tmp_path, write_notebook):
    subs = tmp_path / "subs"
    write_notebook(subs, "a", *SLEEPY)
    book = tmp_path / "g.sqlite"
    process = _run_on(cluster, course, subs, book, tmp_path)
    killed = _kill_workers(process, times=2)
    _, err = process.communicate(timeout=300)
    assert len(killed) == 2, f"the retry was not seen grading: {err[-2000:]}"
    assert process.returncode == 1 and "grader problem" in err and "Traceback" not in err
    [fault] = Gradebook(book).latest("tiny")
    assert fault.status == "error" and fault.reason == FAULT_REASON
    assert "died, and again when the task was retried once elsewhere" in fault.staff_detail
    rerun = _run_on(cluster, course, subs, book, tmp_path)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-3000:]
    assert Gradebook(book).count_runs("tiny") == {"a": 2}
    assert _stored(book)["a"][:2] == ("graded", 6)


@pytest.mark.slow  # grades real notebooks in kernels on a Ray cluster
def test_ray_sends_no_task_for_what_another_grader_run_holds(cluster, course, data_home, tmp_path,
                                                            write_notebook):
    from grader.model.result import file_digest as _digest

    subs = tmp_path / "subs"
    paths = {name: write_notebook(subs, name, *TINY_SOLUTION) for name in ("a", "b", "c")}
    book = tmp_path / "g.sqlite"
    other = Gradebook(book)
    other.owner = "grading-server-2:4242"  # another grader run, at work on b's notebook
    key = load_assignment(course, "tiny").grading_key(prepare("tiny", course=course, data_home=data_home).key)
    assert other.claim("b", "tiny", _digest(paths["b"]), key, lease_s=600)
    process = _run_on(cluster, course, subs, book, tmp_path)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    said = " ".join(out.split())  # the closing line, however the console wrapped it
    assert "2 graded" in said and "1 being graded by another grader run" in said, out
    assert Gradebook(book).count_runs("tiny") == {"a": 1, "c": 1}
    assert Gradebook(book).claims("tiny") == {"b": "grading-server-2:4242"}  # its own released


def test_without_ray_the_ray_executor_is_one_line_saying_what_to_install(course, tmp_path):
    code = ("import sys; sys.modules['ray'] = None  # as if Ray were not installed\n"
            "from grader.cli.main import main; sys.exit(main(sys.argv[1:]))")
    run = subprocess.run([sys.executable, "-c", code, "run", "tiny", "--course", str(course),
                          "--submissions", str(tmp_path), "--executor", "ray"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr == "error: --executor ray needs Ray, an optional extra: pip install 'grader[ray]'\n"
    assert not (tmp_path / "gradebook.sqlite").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--address", "127.0.0.1:6379"], "--address names a Ray cluster: pass it with --executor ray"),
    (["--executor", "ray", "--gpus", "0"], "--executor ray takes --gpus auto or none"),
])
def test_ray_options_that_cannot_work_are_one_line(course, tmp_path, args, message):
    run = grader("run", "tiny", "--course", course, "--submissions", tmp_path, *args, cwd=tmp_path)
    assert run.returncode == 2 and run.stderr.startswith(f"error: {message}")
    assert run.stderr.count("\n") == 1


def test_what_travels_to_a_worker_is_the_config_the_checks_and_the_data_never_a_notebook(
        course, data_home, tmp_path):
    from grader.grading.ray_executor import pack, unpack

    assignment = load_assignment(course, "tiny")
    prepared = prepare("tiny", course=course, data_home=data_home)
    blob = pack(assignment, prepared)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        files = sorted(m.name for m in tar.getmembers() if m.isfile())
    # neither the solution nor the starter notebook: only what grading reads
    assert files == ["assignment/assignment.toml", "assignment/checks/hidden/test_hidden.py",
                     "assignment/checks/public/test_public.py", "data/hidden/tiny_hidden.npz",
                     "data/student/tiny.npz"]
    there, data = unpack(blob, tmp_path / "worker", name="tiny", data_key=prepared.key)
    assert there.config == assignment.config and data is not None
    assert [p.relative_to(there.root) for p in there.check_files()] == [
        p.relative_to(assignment.root) for p in assignment.check_files()]
    assert there.grading_key(data.key) == assignment.grading_key(prepared.key)
    assert sorted(p.name for p in data.hidden_dir.iterdir()) == sorted(
        p.name for p in prepared.hidden_dir.iterdir())


def test_a_result_crosses_as_json_and_comes_back_equal():
    import json

    from grader.model.outcomes import Attachment, CheckOutcome
    from grader.model.result import Result, result_from_dict, result_to_dict

    result = Result("ann", "tiny", "/subs/ann.ipynb", "ab", "cd", "graded", "", 4.5, 6,
                    checks=[CheckOutcome("t", "d", True, 6, 4.5, "partial", "m",
                                         [Attachment("text", "x", "y")])],
                    failed_cell={"index": 1, "traceback": ["a"]}, execution_s=1.5)
    assert result_from_dict(json.loads(json.dumps(result_to_dict(result)))) == result



def _refused(cluster: str, course: Path, tmp_path: Path, write_notebook, limit: str) -> str:
    """What `grader run --executor ray` says on the cluster when the tiny assignment's
    [limits] has LIMIT (a line of TOML), having graded nothing."""
    config = course / "assignments" / "tiny" / "assignment.toml"
    config.write_text(config.read_text().replace("[limits]", f"[limits]\n{limit}"))
    write_notebook(tmp_path / "subs", "a", *TINY_SOLUTION)
    run = grader("run", "tiny", "--course", course, "--submissions", tmp_path / "subs",
                 "--executor", "ray", "--address", cluster, cwd=tmp_path)
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert Gradebook(tmp_path / "gradebook.sqlite").count_runs("tiny") == {}
    return run.stderr


def test_a_task_no_node_can_hold_is_one_line_not_a_batch_that_waits_forever(cluster, course, tmp_path,
                                                                            write_notebook):
    said = _refused(cluster, course, tmp_path, write_notebook, "memory_mb = 100000000")
    assert said.startswith(f"error: no node of the Ray cluster at {cluster} can run one "
                           "submission's task (1 CPU, 97657.2 GB of memory")


def test_a_task_asks_the_cluster_for_the_cores_its_assignment_toml_names(cluster, course, tmp_path,
                                                                         write_notebook):
    said = _refused(cluster, course, tmp_path, write_notebook, "cpus = 3")  # the head has 2
    assert said.startswith(f"error: no node of the Ray cluster at {cluster} can run one "
                           "submission's task (3 CPU, ")
    assert "the largest has 2 CPU" in said


@pytest.mark.slow  # grades four of assignment01's examples (Keras) through a local Ray instance
def test_assignment01_examples_get_through_ray_the_scores_and_points_the_local_pool_gives(
        data_home, tmp_path):
    chosen = ("reference", "partial", "fit-fails", "invalid")  # full, partial, a cell error, invalid
    # the limits, scores and points that test_assignments.py asserts of the local pool's batch
    assignment01 = ASSIGNMENTS["assignment01"]
    examples = grade_examples("assignment01", data_home, tmp_path, limits=assignment01.limits,
                              students=chosen, executor="ray")
    assert_scores(examples, {s: assignment01.expected[s] for s in chosen})
    assert_check_points(examples, {s: assignment01.checks[s] for s in chosen
                                   if s in assignment01.checks})
    assert all(r.sandboxed for r in examples.results.values())
