"""The warm checker of a worker slot: one server per slot, a fresh child per submission, nothing
of one student seen by the next, and nothing left behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grader.checker.exchange import Layout
from grader.grading import check, warmcheck
from grader.grading.check import Checks
from grader.grading.warmcheck import CheckerSlot, WarmChecker
from grader.isolation import workdirs
from grader.isolation.sandbox import bwrap
from grader.model.config import Limits
from tests.conftest import REPO, processes_of, running

NOBODY = 65534
ROOT = os.geteuid() == 0


def make_slot(tmp_path: Path, limits: Limits | None = None) -> CheckerSlot:
    """A sandboxed slot whose checks are the files later written to tmp_path/course/checks."""
    assert bwrap() is not None, "bubblewrap cannot make a sandbox here: apt-get install bubblewrap"
    checks = tmp_path / "course" / "checks"
    (checks / "public").mkdir(parents=True, exist_ok=True)
    (checks / "hidden").mkdir(exist_ok=True)
    return CheckerSlot(folder=tmp_path / "slot", public_dir=checks / "public", hidden_dir=None,
                       student_data=None, limits=limits or Limits(check_seconds=60),
                       sandboxed=True, uid=NOBODY,
                       kernel_uids=())


def check_file(slot: CheckerSlot, name: str, source: str) -> Path:
    path = slot.public_dir.parent / "hidden" / name
    path.write_text(source)
    return path


async def grade(slot: CheckerSlot, files: list[Path], *,
                before_go=None) -> tuple[Checks, type, workdirs.RunFolder]:
    """One submission without a kernel, as the pipeline makes it: a run folder in the slot's,
    its shared folder mounted (a tmpfs for a root grader) after the server started."""
    run = workdirs.make(slot.folder)
    try:
        shared = run.share(disk_mb=8)
        Layout(shared).make()
        (shared / "marker").write_text(run.path.name)
        checker = await slot.begin(files, run_dir=run.path, shared=shared, kernel_uid=-1)
        if before_go is not None:
            await before_go(run)
        try:
            checks = await checker.finish(None, "nothing to check: no kernel")
        finally:
            checker.kill()
        return checks, type(checker), run
    finally:
        run.remove()


def outcomes(checks: Checks) -> dict[str, tuple[str, str]]:
    assert checks.problem == "", checks.problem
    return {o.name: (o.outcome, o.message) for o in checks.outcomes}


LEAVE = '''
import math, os, sys, tempfile
import numpy as np
import grader.checks


def test_nothing_of_the_last_student(submission):
    """a module attribute, a sys.modules entry, a monkeypatch, a global, a file, a variable"""
    found = [hasattr(np, "left_over"), "left_over_module" in sys.modules,
             math.prod([2, 3]) != 6, hasattr(grader.checks, "LEFT_OVER"),
             os.listdir(tempfile.gettempdir()) != [], "LEFT_OVER" in os.environ]
    np.left_over = 1
    sys.modules["left_over_module"] = np
    math.prod = lambda *args, **kwargs: 0
    grader.checks.LEFT_OVER = 1
    open(os.path.join(tempfile.gettempdir(), "left_over"), "w").write("x")
    os.environ["LEFT_OVER"] = "1"
    assert not any(found), f"left over by the last submission: {found}"


def test_what_the_checks_need_only():
    loaded = {"sqlalchemy", "nbclient", "jinja2", "nbformat", "grader.store.gradebook",
              "grader.grading.batch", "grader.reports.pages"} & set(sys.modules)
    assert not loaded, f"the checker imported {sorted(loaded)}"
'''


def test_nothing_one_submission_leaves_reaches_the_next_on_one_server(tmp_path):
    slot = make_slot(tmp_path)

    async def go():
        await slot.start()
        files = [check_file(slot, "test_leave.py", LEAVE)]
        first, kind, _ = await grade(slot, files)
        server = slot.process.pid
        second, again, _ = await grade(slot, files)
        assert slot.process.pid == server  # the same warm server served both
        await slot.close()
        return first, second, kind, again

    first, second, kind, again = asyncio.run(go())
    assert kind is again is WarmChecker
    expected = {"test_nothing_of_the_last_student": ("passed", ""),
                "test_what_the_checks_need_only": ("passed", "")}
    assert outcomes(first) == outcomes(second) == expected


SEES = '''
import os
from pathlib import Path


def test_sees(request):
    shared = Path(request.config.getoption("--grader-shared"))
    run = shared.parent
    assert (shared / "marker").read_text() == run.name, "the run's shared tmpfs is not there"
    try:
        os.listdir(run.parent)
        raise AssertionError("the checker lists the slot's folder")
    except PermissionError:
        pass
    other = Path(os.environ["OTHER_RUN"])
    assert not os.access(other / "secret", os.F_OK), "the checker reaches another run folder"
    assert not os.path.exists(os.environ["GRADEBOOK"]), "the checker sees the gradebook"
'''


@pytest.mark.skipif(not ROOT, reason="mounts and users of their own need a root grader")
def test_a_later_host_mount_reaches_the_warm_checker_and_no_other_run_does(tmp_path, monkeypatch):
    """The shared tmpfs is mounted after the server's sandbox is made; another submission's run
    folder in the same slot (a kernel started early) stays out of reach, as does the gradebook."""
    gradebook = tmp_path / "gradebook.sqlite"
    gradebook.write_text("")
    slot = make_slot(tmp_path)
    monkeypatch.setenv("GRADEBOOK", str(gradebook))

    async def go():
        other = workdirs.make(slot.folder)
        (other.path / "secret").write_text("the next student's")
        monkeypatch.setenv("OTHER_RUN", str(other.path))
        await slot.start()
        await slot.expect("ready", 240)  # its sandbox is made: what follows is mounted later
        try:
            checks, kind, _ = await grade(slot, [check_file(slot, "test_sees.py", SEES)])
        finally:
            other.remove()
            await slot.close()
        return checks, kind

    probe_env = _with("OTHER_RUN", "GRADEBOOK")
    monkeypatch.setattr(check, "trusted_env", probe_env)
    monkeypatch.setattr(warmcheck, "trusted_env", probe_env)
    checks, kind = asyncio.run(go())
    assert kind is WarmChecker
    assert outcomes(checks) == {"test_sees": ("passed", "")}
    assert not workdirs.is_mount(slot.folder)  # close undid the slot's shared mount


def _with(*names: str):
    """check.trusted_env plus the variables NAMES of this process (for a test's probe)."""
    real = check.trusted_env

    def env(limits):
        return {**real(limits), **{n: os.environ[n] for n in names}}
    return env


SLOW = "import time\n\ndef test_slow():\n    time.sleep(120)\n"
QUICK = "def test_quick():\n    assert 1 + 1 == 2\n"


def test_a_timeout_kills_the_child_and_the_next_submission_grades(tmp_path):
    slot = make_slot(tmp_path, Limits(check_seconds=4))

    async def go():
        await slot.start()
        slow, quick = check_file(slot, "test_slow.py", SLOW), check_file(slot, "test_quick.py", QUICK)
        await grade(slot, [quick])  # the server is warm
        idle = len(processes_of(os.getpid()))
        server = slot.process.pid
        seen = []

        async def count(run):
            await asyncio.sleep(1)
            seen.append(len(processes_of(os.getpid())))

        late, _, _ = await grade(slot, [slow], before_go=count)
        after = len(processes_of(os.getpid()))
        next_one, kind, _ = await grade(slot, [quick])
        same = slot.process.pid == server
        await slot.close()
        return late, idle, seen, after, next_one, kind, same

    late, idle, seen, after, next_one, kind, same = asyncio.run(go())
    assert late.problem == "the checks did not finish within 4 s" and not late.outcomes
    assert seen == [idle + 1] and after == idle, (idle, seen, after)  # the child, then gone
    assert same and kind is WarmChecker
    assert outcomes(next_one) == {"test_quick": ("passed", "")}


DIES = "import os, signal\n\ndef test_dies():\n    os.kill(os.getppid(), signal.SIGKILL)\n"


def test_a_server_dying_under_the_checks_is_a_grader_fault_and_the_next_grades(tmp_path):
    slot = make_slot(tmp_path)

    async def go():
        await slot.start()
        dies, quick = check_file(slot, "test_dies.py", DIES), check_file(slot, "test_quick.py", QUICK)
        broken, _, _ = await grade(slot, [dies])
        next_one, kind, _ = await grade(slot, [quick])
        await slot.close()
        return broken, next_one, kind

    broken, next_one, kind = asyncio.run(go())
    assert broken.problem.startswith("the checks broke off: the warm checker exited")
    assert kind is WarmChecker and outcomes(next_one) == {"test_quick": ("passed", "")}


def test_a_server_that_cannot_start_leaves_the_submission_to_a_cold_checker(tmp_path, monkeypatch):
    real = warmcheck.module_command

    def broken(module, *args, **kwargs):
        if module == "grader.checker.server":
            return real("grader.no_such_server")
        return real(module, *args, **kwargs)

    monkeypatch.setattr(warmcheck, "module_command", broken)
    slot = make_slot(tmp_path)

    async def go():
        await slot.start()
        checks, _, _ = await grade(slot, [check_file(slot, "test_quick.py", QUICK)])
        await slot.close()
        return checks

    checks = asyncio.run(go())
    assert outcomes(checks) == {"test_quick": ("passed", "")}  # graded, cold
    assert "could not take this submission" in slot.why_cold
    assert "No module named grader.no_such_server" in slot.why_cold


KEEP = """
import asyncio, sys
import psutil
from pathlib import Path
from grader.isolation import workdirs
from grader.grading.warmcheck import CheckerSlot
from grader.model.config import Limits
from grader.checker.exchange import Layout

tmp = Path(sys.argv[1])

async def main():
    checks = tmp / "course" / "checks"
    slot = CheckerSlot(folder=tmp / "slot", public_dir=checks / "public", hidden_dir=None,
                       student_data=None, limits=Limits(), sandboxed=True, uid=65534, kernel_uids=())
    await slot.start()
    run = workdirs.make(slot.folder)
    shared = run.share(disk_mb=8)
    Layout(shared).make()
    await slot.begin([checks / "hidden" / "test_quick.py"], run_dir=run.path, shared=shared,
                     kernel_uid=-1)
    await slot.expect("begun", 240)
    print("waiting", flush=True)
    print(" ".join(str(p.pid) for p in psutil.Process().children(recursive=True)), flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def test_a_killed_grader_leaves_no_warm_checker_behind(tmp_path):
    slot = make_slot(tmp_path)
    check_file(slot, "test_quick.py", QUICK)
    grader = subprocess.Popen([sys.executable, "-c", KEEP, str(tmp_path)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert grader.stdout.readline() == "waiting\n", grader.stderr.read()[-2000:]
        # bubblewrap's step, bubblewrap, its init, and the server and the child waiting for
        # its kernel
        started = [int(pid) for pid in grader.stdout.readline().split()]
        assert len(processes_of(grader.pid)) >= 3 and len(started) >= 4, started
    finally:
        grader.send_signal(signal.SIGKILL)
        grader.wait()
    deadline = time.monotonic() + 10
    while (processes_of(grader.pid) or any(map(running, started))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_of(grader.pid) == []
    assert [pid for pid in started if running(pid)] == []
    workdirs.remove_stale(slot.folder)  # what a later grader does with what this one left
    if workdirs.is_mount(slot.folder):
        workdirs._umount(slot.folder)
    assert not workdirs.is_mount(slot.folder)


def test_warm_imports_follow_what_the_checks_mention(tmp_path):
    plain = tmp_path / "test_plain.py"
    plain.write_text("def test_a(submission):\n    assert submission.number('a') == 1\n")
    assert warmcheck.warm_imports([plain], tmp_path) == []
    model = tmp_path / "test_model.py"
    model.write_text("def test_m(submission, feedback):\n    m = submission.model('m')\n")
    assert warmcheck.warm_imports([model], tmp_path) == ["matplotlib.pyplot", "keras"]


def test_checks_left_unfinished_are_killed_and_the_next_submission_grades(tmp_path):
    """The pipeline kills a checker whose submission went wrong before `finish`: the child
    waiting for its kernel goes (the server with it, restarted for the next submission)."""
    slot = make_slot(tmp_path)

    async def go():
        await slot.start()
        quick = check_file(slot, "test_quick.py", QUICK)
        run = workdirs.make(slot.folder)
        shared = run.share(disk_mb=8)
        Layout(shared).make()
        checker = await slot.begin([quick], run_dir=run.path, shared=shared, kernel_uid=-1)
        await slot.expect("begun", 240)
        waiting = len(processes_of(os.getpid()))
        checker.kill()
        for _ in range(100):
            if len(processes_of(os.getpid())) == 0:
                break
            await asyncio.sleep(0.1)
        left = len(processes_of(os.getpid()))
        run.remove()
        next_one, kind, _ = await grade(slot, [quick])
        await slot.close()
        return waiting, left, next_one, kind

    waiting, left, next_one, kind = asyncio.run(go())
    assert waiting >= 3 and left == 0
    assert kind is WarmChecker and outcomes(next_one) == {"test_quick": ("passed", "")}


KERAS = '''
import sys

import keras


def test_keras_starts_afresh(submission):
    """Keras's global state: the float type, layer names, the session"""
    found = [keras.config.floatx(), keras.layers.Dense(1).name]
    keras.config.set_floatx("float16")
    keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)]).predict(
        keras.ops.ones((1, 2)), verbose=0)
    assert found == ["float32", "dense"], f"left over by the last submission: {found}"
    loaded = {"sqlalchemy", "nbclient", "jinja2", "grader.store.gradebook"} & set(sys.modules)
    assert not loaded, f"the checker imported {sorted(loaded)}"
'''


@pytest.mark.slow  # imports TensorFlow and runs it
def test_keras_state_of_one_submission_does_not_reach_the_next(tmp_path):
    slot = make_slot(tmp_path)

    async def go():
        files = [check_file(slot, "test_keras.py", KERAS)]
        await slot.start()  # reads which libraries the checks use
        first, _, _ = await grade(slot, files)
        second, kind, _ = await grade(slot, files)
        await slot.close()
        return first, second, kind

    first, second, kind = asyncio.run(go())
    assert kind is WarmChecker and "keras" in slot.imported  # warm: imported once, by the server
    assert outcomes(first) == outcomes(second) == {"test_keras_starts_afresh": ("passed", "")}


WORLD = '''
import ctypes, json, os, socket, sys


def test_world():
    """what a check can tell of its world"""
    status = dict(l.split(":\\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\\t" in l)
    import matplotlib, numpy
    threads = []
    for path in sorted({l.split()[-1] for l in open("/proc/self/maps") if "openblas" in l.lower()}):
        lib = ctypes.CDLL(path)
        for getter in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads"):
            if hasattr(lib, getter):
                threads.append(getattr(lib, getter)())
    world = {k: status[k].strip() for k in ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff",
                                            "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")}
    world.update(env=dict(os.environ), host=socket.gethostname(), cwd=os.getcwd(),
                 backend=matplotlib.get_backend(), blas=threads, pid1=open("/proc/1/comm").read(),
                 mounts=sorted(l.split()[4] for l in open("/proc/self/mountinfo")))
    import pytest
    pytest.fail("WORLD " + json.dumps(world, sort_keys=True))
'''


@pytest.mark.slow  # the server imports Keras
@pytest.mark.skipif(not ROOT, reason="only a root grader runs checks as users of their own")
def test_a_warm_checker_checks_as_its_own_user_in_the_kernels_group_and_nothing_more(tmp_path):
    slot = make_slot(tmp_path)
    slot.kernel_uids = (NOBODY - 1,)

    async def go():
        files = [check_file(slot, "test_world.py", WORLD + "\nimport keras\n"),
                 check_file(slot, "test_leave.py", LEAVE)]
        await slot.start(files)
        first, kind, _ = await grade(slot, files)
        second, _, _ = await grade(slot, files)
        await slot.close()
        return first, second, kind

    first, second, kind = asyncio.run(go())
    assert kind is WarmChecker
    seen = [outcomes(checks) for checks in (first, second)]
    assert [o["test_nothing_of_the_last_student"] for o in seen] == [("passed", "")] * 2, seen
    outcome, message = seen[0]["test_world"]
    assert outcome == "failed" and message.startswith("WORLD "), message
    world = json.loads(message.removeprefix("WORLD "))
    assert world["Uid"].split() == [str(NOBODY)] * 4 and world["Groups"] == str(NOBODY - 1)
    assert world["CapEff"] == world["CapBnd"] == "0000000000000000" and world["NoNewPrivs"] == "1"
    assert world["backend"] == "Agg" and world["blas"] == [1] and world["host"] == "checker"
    assert world["env"]["CUDA_VISIBLE_DEVICES"] == "" and "OPENBLAS_NUM_THREADS" not in world["env"]
