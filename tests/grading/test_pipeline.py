"""A batch through the whole pipeline on the tests' tiny assignment."""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from grader.data.prepare import prepare
from grader.grading import check, devices, local, warmcheck
from grader.grading.batch import grade_batch
from grader.grading.check import Checks
from grader.grading.executor import Settings
from grader.model.assignments import load_assignment
from grader.model.errors import PreflightFailed
from grader.model.result import Result
from grader.model.submission import Submission, discover
from grader.store.gradebook import Gradebook
from tests.conftest import TINY_SOLUTION, processes_of


def tiny(course: Path, data_home: Path):
    assignment = load_assignment(course, "tiny")
    return assignment, prepare("tiny", course=course, data_home=data_home)


@pytest.mark.slow  # grades real notebooks in kernels
def test_one_bad_submission_never_sinks_the_batch(course, data_home, tmp_path, write_notebook):
    folder = tmp_path / "subs"
    write_notebook(folder, "good", *TINY_SOLUTION)
    write_notebook(folder, "raises", "raise RuntimeError('nope')")
    write_notebook(folder, "dies", "import os\nos._exit(3)")
    (folder / "broken.ipynb").write_text("{")
    (folder / "empty_folder").mkdir()
    assignment, prepared = tiny(course, data_home)
    book = Gradebook(tmp_path / "g.sqlite")
    batch = grade_batch(assignment, discover(folder, notebook_name="tiny.ipynb"), gradebook=book,
                        prepared=prepared, settings=Settings(workers=2, reports=tmp_path / "r"))
    stored = {r.student: r for r in book.latest("tiny")}
    assert len(batch.graded) == 5 and set(stored) == {"good", "raises", "dies", "broken", "empty_folder"}
    assert stored["good"].score == 6 and stored["good"].status == "graded", stored["good"]
    assert stored["raises"].status == "cell_error" and stored["raises"].score == 0
    assert stored["dies"].status == "kernel_died"
    assert stored["broken"].status == "invalid" and "not JSON" in stored["broken"].reason
    assert stored["empty_folder"].status == "invalid" and "no .ipynb" in stored["empty_folder"].reason
    assert all((tmp_path / "r" / f"{name}.html").exists() for name in stored)
    assert stored["good"].execution_s > 0 and stored["good"].checks_s > 0
    # the batch's start ends when its first notebook begins: before the last result is stored
    first = min(r.queue_s + r.kernel_start_s + r.warmup_s for r in batch.graded if r.execution_s)
    assert first <= batch.start_s < batch.seconds - stored["good"].execution_s
    # when each slot that gave results (two at most) gave its last is inside the batch
    assert 1 <= len(batch.slot_ends) <= 2
    assert all(0 < end <= batch.seconds for end in batch.slot_ends)
    # no kernel client's heartbeat thread outlives its kernel (a zmq context collected later
    # would wait for it forever, hanging the batch)
    assert [t for t in threading.enumerate() if type(t).__name__ == "HBChannel"] == []


@pytest.mark.slow  # grades real notebooks in kernels
def test_rerun_skips_what_is_graded_unless_forced_or_changed(course, data_home, tmp_path,
                                                              write_notebook):
    folder = tmp_path / "subs"
    write_notebook(folder, "good", *TINY_SOLUTION)
    assignment, prepared = tiny(course, data_home)
    book = Gradebook(tmp_path / "g.sqlite")
    subs = discover(folder, notebook_name="tiny.ipynb")
    assert len(grade_batch(assignment, subs, gradebook=book, prepared=prepared).graded) == 1
    again = grade_batch(assignment, subs, gradebook=book, prepared=prepared)
    assert again.graded == [] and again.skipped == ["good"]
    forced = grade_batch(assignment, subs, gradebook=book, prepared=prepared,
                         settings=Settings(force=True))
    assert len(forced.graded) == 1
    write_notebook(folder, "good", *TINY_SOLUTION, "# edited")
    assert len(grade_batch(assignment, subs, gradebook=book, prepared=prepared).graded) == 1
    check = course / "assignments" / "tiny" / "checks" / "public" / "test_public.py"
    check.write_text(check.read_text() + "\n# a changed check regrades\n")
    assignment = load_assignment(course, "tiny")
    assert len(grade_batch(assignment, subs, gradebook=book, prepared=prepared).graded) == 1
    assert book.count_runs("tiny") == {"good": 4}


def _command_of(pid: int) -> str:
    """PID's command line, for a message."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:300].decode()
    except OSError:
        return f"{pid} (gone)"


@pytest.mark.slow  # grades real notebooks in kernels
def test_a_killed_grader_loses_only_what_was_in_flight(course, tmp_path, write_notebook):
    folder = tmp_path / "subs"
    for name in ("a", "b", "c", "d"):
        write_notebook(folder, name, *TINY_SOLUTION)
    write_notebook(folder, "slow", *TINY_SOLUTION, "import time\ntime.sleep(6)")
    book = tmp_path / "g.sqlite"
    command = [sys.executable, "-m", "grader", "run", "tiny", "--course", str(course),
               "--submissions", str(folder), "--gradebook", str(book), "--reports", str(tmp_path / "r")]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    stored = 0
    while time.monotonic() < deadline and stored < 1:
        time.sleep(0.3)
        if book.exists():
            try:
                with sqlite3.connect(book) as db:
                    stored = db.execute("select count(*) from grading_runs").fetchone()[0]
            except sqlite3.OperationalError:
                pass
    assert stored >= 1, "the grader stored nothing within 2 minutes"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    for _ in range(50):  # kernels and checks die with the grader
        if not processes_of(process.pid):
            break
        time.sleep(0.2)
    assert processes_of(process.pid) == [], [_command_of(p) for p in processes_of(process.pid)]
    left = Gradebook(book).claims("tiny")  # what was in flight: claimed by the killed grader
    assert left and set(left.values()) == {f"{socket.gethostname()}:{process.pid}"}
    subprocess.run(command, cwd=tmp_path, check=True, capture_output=True)
    assert Gradebook(book).count_runs("tiny") == {n: 1 for n in ("a", "b", "c", "d", "slow")}
    assert Gradebook(book).claims("tiny") == {}  # taken over, graded and released


GPUS = (devices.Device("GPU 0 (Test GPU)", "GPU-aaaa", index="0", minor=0, memory_mb=16000),
        devices.Device("GPU 1 (Test GPU)", "GPU-bbbb", index="1", minor=3, memory_mb=16000))


def test_slots_are_k_per_gpu_and_workers_only_cap_them():
    assert [d.index for d in Settings(devices=GPUS, per_gpu=2).slots()] == ["0", "1", "0", "1"]
    assert [d.index for d in Settings(devices=GPUS, per_gpu=2, workers=3).slots()] == ["0", "1", "0"]
    assert len(Settings(devices=GPUS, per_gpu=2, workers=9).slots()) == 4  # never past K per GPU
    assert Settings(workers=3).slots() == [devices.CPU] * 3 and Settings(workers=1).slots() == [devices.CPU]


def test_with_k_2_no_gpu_ever_runs_more_than_2_kernels(course, tmp_path, monkeypatch):
    """Eight submissions on two fake GPUs, K=2: four kernels at once, never three on one GPU."""
    import asyncio
    import threading

    running: dict[str, int] = {}
    most: dict[str, int] = {}
    together = []
    lock = threading.Lock()

    async def grade(slot, turn, gate=None):
        device = slot.device
        with lock:
            running[device.index] = running.get(device.index, 0) + 1
            most[device.index] = max(most.get(device.index, 0), running[device.index])
            together.append(sum(running.values()))
        await asyncio.sleep(0.3)
        with lock:
            running[device.index] -= 1
        turn.result.status, turn.result.device = "graded", device.label
        return turn.result

    monkeypatch.setattr(local.Slot, "grade", grade)
    subs = [Submission(student=f"s{i}", path=None) for i in range(8)]
    settings = Settings(devices=GPUS, per_gpu=2, sandboxed=False)
    batch = grade_batch(load_assignment(course, "tiny"), subs, gradebook=Gradebook(tmp_path / "b.sqlite"),
                        prepared=None, settings=settings)
    assert len(batch.graded) == 8 and most == {"0": 2, "1": 2} and max(together) == 4


def _staged_gpu_kernel(course, tmp_path, *, sandboxed: bool):
    """The kernel of the first slot of GPU 1 at --per-gpu 2, staged for a notebook, and its env."""
    from grader.grading.stage import Kernel
    from grader.isolation import workdirs
    from tests.conftest import notebook

    slot = Settings(devices=GPUS[1:], per_gpu=2).slots()[0]
    folder = workdirs.make(tmp_path / "runs")
    kernel = Kernel(load_assignment(course, "tiny"), None, folder.path, slot, 1, sandboxed,
                     65534, 65534, folder)
    try:
        env = kernel.stage(notebook("x = 1")).env
    finally:
        folder.remove()
    return kernel, env


@pytest.mark.skipif(os.geteuid() != 0, reason="the run's cgroups need a root grader")
def test_a_gpu_kernel_sees_only_its_gpu_and_has_no_address_space_limit(course, tmp_path,
                                                                        monkeypatch):
    import json

    from grader.grading.stage import Kernel
    from grader.isolation import sandbox

    asked = []
    monkeypatch.setattr(sandbox, "gpu_binds", lambda minors: asked.append(minors) or [])
    kernel, env = _staged_gpu_kernel(course, tmp_path, sandboxed=True)
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-bbbb" and env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    limits = json.loads(env["GRADER_RLIMITS"])
    assert "AS" not in limits and "DATA" not in limits  # the run's memory cgroup holds it
    assert "memory_limit=7488" in kernel.prologue
    assert asked == [(3,)]  # the sandbox lets in /dev/nvidia3, its GPU's node (minor 3, index 1)
    cpu = Kernel(load_assignment(course, "tiny"), None, tmp_path, devices.CPU, 1, False, 65534,
                  65534, kernel.folder)
    assert cpu.prologue == ""


@pytest.mark.slow  # one sandboxed kernel, with TensorFlow imported by the GPU prologue
def test_a_gpu_slot_runs_the_prologue_before_the_first_cell_without_an_address_space_limit(
        course, data_home, tmp_path):
    import json

    import nbformat

    from grader.grading.local import grade_submission
    from tests.conftest import notebook

    probe = ("import json, os, resource, sys\ntf = sys.modules.get('tensorflow')\n"
             "print('PROBE ' + json.dumps({'as': resource.getrlimit(resource.RLIMIT_AS)[0],"
             " 'cuda': os.environ['CUDA_VISIBLE_DEVICES'],"
             " 'growth': os.environ.get('TF_FORCE_GPU_ALLOW_GROWTH'),"
             " 'patched': tf is not None and tf.config.experimental.set_memory_growth.__module__"
             " is None}))")
    path = tmp_path / "alice.ipynb"
    nbformat.write(notebook(probe, *TINY_SOLUTION), path)
    assignment, prepared = tiny(course, data_home)
    slot = Settings(devices=GPUS[:1], per_gpu=2).slots()[0]
    result = grade_submission(assignment, Submission("alice", path), prepared=prepared, device=slot)
    assert result.status == "graded" and result.score == result.max_score, result.staff_detail
    ran = nbformat.reads(result.executed_notebook, as_version=4)
    text = ran.cells[0].outputs[0]["text"]
    seen = json.loads(text.split("PROBE ", 1)[1])
    assert seen == {"as": -1, "cuda": "GPU-aaaa", "growth": "true", "patched": True}
    # no GPU here: TensorFlow ran on the CPU, and the report says so
    assert result.device == "CPU (GPU 0 (Test GPU) was assigned but TensorFlow did not use it)"


def test_a_jax_gpu_kernel_gets_its_share_from_the_environment_and_no_prologue(course, tmp_path,
                                                                              monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    kernel, env = _staged_gpu_kernel(course, tmp_path, sandboxed=False)
    assert env["KERAS_BACKEND"] == "jax" and env["CUDA_VISIBLE_DEVICES"] == "GPU-bbbb"
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.468"  # (16000 / 2 - 512) / 16000
    assert kernel.prologue == ""  # TensorFlow's prologue would import TensorFlow


LEAKER = ("import os, json, numpy\nnumpy.leak = 1\nos.environ['GRADER_LEAK'] = '1'\n"
          "open('leak.txt', 'w').write('x')\njson.dumps = lambda *a, **k: 'patched'\nleaked = 1")
PROBE = ("import os, json, numpy\nprint('PROBE', hasattr(numpy, 'leak'), 'GRADER_LEAK' in os.environ,"
         " os.path.exists('leak.txt'), json.dumps(1), 'leaked' in dir())")


def printed(result: Result, cell: int) -> str:
    """What code cell CELL (from 0) of RESULT's executed notebook printed."""
    import nbformat

    ran = nbformat.reads(result.executed_notebook, as_version=4)
    return "".join(o.get("text", "") for o in ran.cells[cell].outputs)


def graded_in_turn(course: Path, data_home: Path, tmp_path: Path, write_notebook,
                   first: str, second: str) -> tuple[Result, Result]:
    """The results of a notebook with the code cell FIRST, then one with SECOND (each followed
    by the tiny solution), graded one after the other on one slot."""
    folder = tmp_path / "subs"
    write_notebook(folder, "a_first", first, *TINY_SOLUTION)
    write_notebook(folder, "b_second", second, *TINY_SOLUTION)
    assignment, prepared = tiny(course, data_home)
    batch = grade_batch(assignment, discover(folder, notebook_name="tiny.ipynb"),
                        gradebook=Gradebook(tmp_path / "g.sqlite"), prepared=prepared,
                        settings=Settings(workers=1))
    earlier, later = sorted(batch.graded, key=lambda r: r.student)
    return earlier, later


@pytest.mark.slow  # two kernels, the second started ahead while the first runs
def test_what_a_student_leaves_is_not_seen_by_the_next_on_the_same_slot(course, data_home,
                                                                         tmp_path, write_notebook):
    first, second = graded_in_turn(course, data_home, tmp_path, write_notebook, LEAKER, PROBE)
    assert second.status == "graded" and second.score == 6, second.staff_detail
    assert printed(second, 0) == "PROBE False False False 1 False\n"
    assert second.warmup_s > 0 and second.queue_s > first.queue_s  # taken, and warmed, ahead


@pytest.mark.slow  # two kernels of one notebook: one warmed up, one cold
def test_the_warm_up_leaves_nothing_a_student_can_see(course, data_home, tmp_path):
    import nbformat

    from grader.grading.local import grade_submission
    from tests.conftest import notebook

    cells = ("print(sorted(dir()))",
             "import random, numpy, keras, tensorflow as tf\nimport matplotlib.pyplot as plt\n"
             "print(random.random(), numpy.random.rand(2).tolist(),"
             " keras.ops.convert_to_numpy(keras.random.uniform((2,))).tolist(),"
             " tf.random.uniform((2,)).numpy().tolist(), plt.get_backend())", *TINY_SOLUTION)
    path = tmp_path / "alice.ipynb"
    nbformat.write(notebook(*cells), path)
    assignment, prepared = tiny(course, data_home)
    warm, cold = (grade_submission(assignment, Submission("alice", path), prepared=prepared,
                                   warm_kernel=on) for on in (True, False))
    assert warm.warmup_s > 0 and cold.warmup_s == 0
    assert warm.score == cold.score == 6, warm.staff_detail
    assert printed(warm, 0) == printed(cold, 0) and "'In'" in printed(warm, 0)
    assert printed(warm, 1) == printed(cold, 1) and "inline" in printed(warm, 1)


@pytest.mark.slow  # kernels started for a batch that stops
def test_a_kernel_started_ahead_for_a_submission_a_stopped_batch_leaves_is_killed(
        course, data_home, tmp_path, write_notebook, monkeypatch, short_root):
    runs_root = short_root / "runs"
    folder = tmp_path / "subs"
    for name in ("a", "b", "c", "d"):
        write_notebook(folder, name, *TINY_SOLUTION)
    started = []
    start = local.StudentKernel.start

    async def counted(self, **kwargs):
        started.append(self)
        await start(self, **kwargs)

    async def broken(self, connection, why):
        return Checks(problem="the checks broke here")

    monkeypatch.setattr(local.StudentKernel, "start", counted)
    monkeypatch.setattr(check.Checker, "finish", broken)  # every result is a grader fault
    monkeypatch.setattr(warmcheck.WarmChecker, "finish", broken)
    assignment, prepared = tiny(course, data_home)
    batch = grade_batch(assignment, discover(folder, notebook_name="tiny.ipynb"),
                        gradebook=Gradebook(tmp_path / "g.sqlite"), prepared=prepared,
                        settings=Settings(workers=1, stop_after=1, work_root=runs_root))
    assert batch.stopped and all(r.status == "error" for r in batch.graded)
    assert "the checks broke here" in batch.stopped
    assert len(batch.graded) < len(started)  # a kernel was started for one never graded
    for _ in range(50):
        if not processes_of(os.getpid()):
            break
        time.sleep(0.2)
    assert processes_of(os.getpid()) == []  # kernels and checkers, graded or started ahead
    assert list(runs_root.iterdir()) == []  # every run folder went, the unused one too


def test_an_idle_slot_takes_over_what_another_holds_ahead_but_never_what_it_began():
    from grader.grading.local import WorkQueue

    a, b, c = (Submission(student=name, path=None) for name in "abc")
    work = WorkQueue([a, b, c], time.monotonic())
    assert work.take(0)[0] is a and work.begin(0, a)
    assert work.take(1)[0] is b and work.begin(1, b)
    assert work.take(0, ahead=True)[0] is c  # slot 0 holds c ahead while a runs
    assert work.take(1, ahead=True) is None  # taking ahead never takes over
    assert work.take(1)[0] is c  # slot 1 has nothing to do: it takes c over
    assert not work.begin(0, c) and work.begin(1, c)
    assert work.take(0) is None  # c is begun: nobody takes it over again
    work.stop.set()
    assert work.take(0) is None and not work.begin(0, a)


def test_a_long_notebook_holds_up_nothing_queued_behind_it(course, tmp_path, monkeypatch):
    import asyncio

    graded_by: dict[str, int] = {}

    async def grade(slot, turn, gate=None):
        await asyncio.sleep(2.0 if turn.result.student == "s0" else 0.1)
        graded_by[turn.result.student] = id(slot)
        turn.result.status = "graded"
        return turn.result

    monkeypatch.setattr(local.Slot, "grade", grade)
    subs = [Submission(student=f"s{i}", path=None) for i in range(4)]
    batch = grade_batch(load_assignment(course, "tiny"), subs, gradebook=Gradebook(tmp_path / "b.sqlite"),
                        prepared=None, settings=Settings(workers=2, sandboxed=False))
    assert sorted(r.student for r in batch.graded) == ["s0", "s1", "s2", "s3"]
    long_one = graded_by.pop("s0")  # its slot graded nothing else: the other took over its next
    assert len(set(graded_by.values())) == 1 and long_one not in graded_by.values()


def test_a_slot_passes_over_what_another_grader_claimed():
    from grader.grading.local import WorkQueue

    a, b, c = (Submission(student=name, path=None) for name in "abc")
    asked: list[str] = []

    def claim(submission):
        asked.append(submission.student)
        return submission.student != "b"  # another grader process holds b

    work = WorkQueue([a, b, c], time.monotonic(), claim=claim)
    assert work.take(0)[0] is a and work.begin(0, a)
    assert work.take(0, ahead=True)[0] is c  # b passed over
    assert work.take(1, ahead=True) is None and asked == ["a", "b", "c"]


def _claimer_for(course, tmp_path, **settings):
    from grader.grading.batch import _claimer
    from grader.grading.executor import Batch

    assignment = load_assignment(course, "tiny")
    book, batch = Gradebook(tmp_path / "g.sqlite"), Batch()
    return assignment, book, batch, _claimer(assignment, book, Settings(**settings), "k1", batch, None)


def test_a_submission_another_grader_holds_or_graded_meanwhile_is_not_graded_again(
        course, tmp_path, write_notebook):
    from grader.model.result import file_digest

    _, book, batch, claim = _claimer_for(course, tmp_path)
    subs = {name: Submission(student=name, path=write_notebook(tmp_path / "subs", name, f"x = '{name}'"))
            for name in ("ann", "bob", "eve")}
    elsewhere = Gradebook(tmp_path / "g.sqlite")
    elsewhere.owner = "grading-server-2:4242"  # another grader, at work on bob's notebook
    assert elsewhere.claim("bob", "tiny", file_digest(subs["bob"].path), "k1", lease_s=600)
    graded = Result(student="eve", assignment="tiny", notebook="eve.ipynb",
                    sha256=file_digest(subs["eve"].path), checks_sha256="k1", status="graded", reason="",
                    score=6, max_score=6)
    elsewhere.store(graded)  # and has just stored eve's
    assert [claim(subs[name]) for name in ("ann", "bob", "eve")] == [True, False, False]
    assert (batch.elsewhere, batch.skipped) == (["bob"], ["eve"])
    assert book.claims("tiny") == {"ann": book.owner, "bob": "grading-server-2:4242"}


def test_force_regrades_but_never_what_another_grader_holds(course, tmp_path, write_notebook):
    from grader.model.result import file_digest

    _, book, batch, claim = _claimer_for(course, tmp_path, force=True)
    ann, bob = (Submission(student=name, path=write_notebook(tmp_path / "subs", name, "x = 1"))
                for name in ("ann", "bob"))
    book.store(Result(student="ann", assignment="tiny", notebook="ann.ipynb", sha256=file_digest(ann.path),
                      checks_sha256="k1", status="graded", reason="", score=6, max_score=6))
    other = Gradebook(tmp_path / "g.sqlite")
    other.owner = "grading-server-2:4242"
    assert other.claim("bob", "tiny", file_digest(bob.path), "k1", lease_s=600)
    assert claim(ann) and not claim(bob)
    assert (batch.elsewhere, batch.skipped) == (["bob"], [])


def test_a_batch_leaves_no_claim_of_its_own_behind(course, tmp_path, monkeypatch):
    import asyncio

    async def grade(slot, turn, gate=None):
        await asyncio.sleep(0.05)
        turn.result.status = "graded"
        return turn.result

    monkeypatch.setattr(local.Slot, "grade", grade)
    book = Gradebook(tmp_path / "b.sqlite")
    other = Gradebook(tmp_path / "b.sqlite")
    other.owner = "grading-server-2:4242"
    assert other.claim("s1", "tiny", "-", load_assignment(course, "tiny").grading_key(""), lease_s=600)
    subs = [Submission(student=f"s{i}", path=None) for i in range(4)]
    batch = grade_batch(load_assignment(course, "tiny"), subs, gradebook=book,
                        prepared=None, settings=Settings(workers=2, sandboxed=False))
    assert sorted(r.student for r in batch.graded) == ["s0", "s2", "s3"]
    assert batch.elsewhere == ["s1"]
    assert book.claims("tiny") == {"s1": "grading-server-2:4242"}


def test_a_work_root_too_deep_for_the_kernels_sockets_is_one_error_before_anything_runs(
        course, data_home, tmp_path, write_notebook):
    from grader.model.errors import WorkRootTooDeep

    deep = tmp_path / ("d" * 60)
    write_notebook(tmp_path / "subs", "a", *TINY_SOLUTION)
    assignment, prepared = tiny(course, data_home)
    book = Gradebook(tmp_path / "g.sqlite")
    with pytest.raises(WorkRootTooDeep, match=r"would not fit in a Unix socket's path.*TMPDIR"):
        grade_batch(assignment, discover(tmp_path / "subs", notebook_name="tiny.ipynb"), gradebook=book,
                    prepared=prepared, settings=Settings(workers=1, work_root=deep))
    assert book.latest("tiny") == [] and not deep.exists()


@pytest.mark.slow  # grades a real notebook in a kernel
def test_a_notebook_runs_beside_the_preflight_but_is_checked_and_stored_only_after_it(
        course, data_home, tmp_path, write_notebook, monkeypatch):
    # the preflight (collecting the checks) gates the checks and the store, not the notebook:
    # a batch whose notebooks need a few libraries (numpy) need not wait for pytest's collection
    folder = tmp_path / "subs"
    write_notebook(folder, "good", *TINY_SOLUTION)
    assignment, prepared = tiny(course, data_home)
    subs = discover(folder, notebook_name="tiny.ipynb")
    ran, checked = threading.Event(), []
    real_running = local.WorkQueue.running

    def running(self):
        real_running(self)
        ran.set()

    monkeypatch.setattr(local.WorkQueue, "running", running)
    for kind in (check.Checker, warmcheck.WarmChecker):
        def finish(self, *args, _real=kind.finish, **kwargs):
            checked.append(time.monotonic())
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(kind, "finish", finish)
    passed = []

    def preflight(fails: bool = False) -> None:
        assert ran.wait(60), "no notebook began while the preflight ran"
        time.sleep(0.5)  # long enough for a notebook as short as this one to end
        passed.append(time.monotonic())
        if fails:
            raise PreflightFailed("the checks cannot be collected; nothing was graded")

    # a failed preflight: nothing checked or stored, and a notebook still running is stopped
    write_notebook(tmp_path / "sleeper", "sleeps", "import time\ntime.sleep(600)")
    book = Gradebook(tmp_path / "g.sqlite")
    began = time.monotonic()
    with pytest.raises(PreflightFailed, match="nothing was graded"):
        grade_batch(assignment, discover(tmp_path / "sleeper", notebook_name="tiny.ipynb"),
                    gradebook=book, prepared=prepared, preflight=lambda: preflight(fails=True))
    assert time.monotonic() - began < 300
    assert book.latest("tiny") == [] and checked == []
    ran.clear()
    stored = []
    batch = grade_batch(assignment, subs, gradebook=book, prepared=prepared, preflight=preflight,
                        on_result=lambda result: stored.append(time.monotonic()))
    [result] = batch.graded
    assert result.status == "graded" and result.score == 6, result.reason
    assert min(checked) >= passed[-1] and min(stored) >= passed[-1]
    assert 0 < batch.start_s < batch.seconds


# Sixty busy processes for eight seconds, each in a session of its own (so that no autogroup of
# the scheduler holds them together: each would count as much as a whole other kernel).
CPU_HOG = ("import os, time\nbegan = time.monotonic()\nfor _ in range(60):\n    if os.fork() == 0:\n"
           "        os.setsid()\n        while time.monotonic() - began < 8:\n            pass\n"
           "        os._exit(0)\nfor _ in range(60):\n    os.wait()")
# Waits until the machine runs twenty processes at once (the hog beside it), then spins for a
# second and says what share of a core it got meanwhile.
BESIDE_THE_HOG = (
    "import time\nbegan = time.monotonic()\ndef running():\n    for line in open('/proc/stat'):\n"
    "        if line.startswith('procs_running'):\n            return int(line.split()[1])\n"
    "beside = False\nwhile not beside and time.monotonic() - began < 8:\n"
    "    beside = running() >= 20\n    time.sleep(0.005)\n"
    "wall, cpu = time.monotonic(), time.process_time()\nwhile time.monotonic() - wall < 1:\n    pass\n"
    "print('SHARE', beside, round((time.process_time() - cpu) / (time.monotonic() - wall), 2))")


@pytest.mark.slow  # two kernels at once, one of them sixty busy processes
@pytest.mark.skipif(os.geteuid() != 0, reason="the run's cgroups need a root grader")
def test_a_notebook_beside_a_cpu_hog_keeps_its_share_of_the_cores_and_its_marks(
        course, data_home, tmp_path, write_notebook):
    folder = tmp_path / "subs"
    write_notebook(folder, "a_hog", CPU_HOG)
    write_notebook(folder, "b_innocent", BESIDE_THE_HOG, *TINY_SOLUTION)
    assignment, prepared = tiny(course, data_home)
    batch = grade_batch(assignment, discover(folder, notebook_name="tiny.ipynb"),
                        gradebook=Gradebook(tmp_path / "g.sqlite"), prepared=prepared,
                        settings=Settings(workers=2))
    innocent = {r.student: r for r in batch.graded}["b_innocent"]
    assert innocent.status == "graded" and innocent.score == 6, innocent.staff_detail
    said = printed(innocent, 0).split()
    assert said[:2] == ["SHARE", "True"], said  # it ran while the hog did
    # the hog is held to its slot's share (a core of two); unheld, its sixty sessions leave
    # the innocent notebook a thirtieth of a core
    assert float(said[2]) >= 0.2, said
