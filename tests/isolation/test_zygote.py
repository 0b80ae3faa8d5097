"""Kernels forked from the slot's zygote (grader.isolation.zygote): the same sandbox, user, limits and
world as a kernel started cold, nothing of one student in the next, and a cold start, never a
student's loss, wherever the zygote cannot help."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel

from grader.grading import local, warmcheck
from grader.grading import stage as staging
from grader.grading.local import grade_submission
from grader.isolation import zygote
from grader.model.assignments import load_assignment
from grader.model.submission import Submission
from tests.conftest import TINY_SOLUTION, notebook, running
from tests.grading.test_pipeline import graded_in_turn, printed, tiny

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only a root grader forks kernels")

# What a kernel can tell of its world. PPID tells how it began: bubblewrap's init (1) is the
# parent of a kernel started cold; a forked kernel's parent is outside its PID namespace (0).
WORLD = r'''
import json, os, resource, socket, sys
import keras
status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
world = {k: status[k].strip() for k in ("Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                                        "NoNewPrivs", "Seccomp", "Seccomp_filters")}
uid = os.getresuid()
world.update(
    user=uid[0] == uid[1] == uid[2] == os.getgid() != 0,
    cwd=os.getcwd(), home=sorted(os.listdir(os.path.expanduser("~"))), tmp=os.listdir("/tmp"),
    env={k: v for k, v in os.environ.items() if not k.startswith("JPY")},
    host=socket.gethostname(), ppid=os.getppid(),
    limits={n: resource.getrlimit(getattr(resource, n)) for n in dir(resource) if n.startswith("RLIMIT_")},
    umask=os.umask(0o22), cgroup=open("/proc/self/cgroup").read(),
    mounts=sorted(line.split()[4] for line in open("/proc/self/mountinfo")),
    path=sys.path, keras_home=keras.src.backend.config.keras_home(),
    maps=os.access("/proc/self/maps", os.R_OK), names=sorted(k for k in dir() if not k.startswith("_")),
)
print("WORLD " + json.dumps(world, sort_keys=True))
'''


def _world(result) -> dict:
    text = printed(result, 0)
    assert "WORLD " in text, result.staff_detail or text
    world = json.loads(text.split("WORLD ", 1)[1])
    run = re.compile(r"/grader-[^/]+/grader-[^/]+/")  # each run's own folder
    world["mounts"] = [run.sub("/RUN/", m) for m in world["mounts"]]
    world["tmp"] = [re.sub(r"^grader-.*", "RUN", name) for name in world["tmp"]]
    world["env"].pop("GRADER_PARENT_PID", None)  # each run's grader process
    return world


@pytest.mark.slow  # a zygote, a forked kernel and a cold one
def test_a_forked_kernel_sees_the_world_a_cold_kernel_sees(course, data_home, tmp_path):
    path = tmp_path / "alice.ipynb"
    nbformat.write(notebook(WORLD, *TINY_SOLUTION), path)
    assignment, prepared = tiny(course, data_home)
    forked, cold = (grade_submission(assignment, Submission("alice", path), prepared=prepared,
                                     warm_kernel=on) for on in (True, False))
    assert forked.score == cold.score == 6, forked.staff_detail
    seen, expected = _world(forked), _world(cold)
    assert (seen.pop("ppid"), expected.pop("ppid")) == (0, 1)  # forked, and cold
    assert seen == expected
    assert seen["CapEff"] == seen["CapBnd"] == "0000000000000000" and seen["Seccomp"] == "2"
    assert seen["user"] and seen["maps"] and ".keras" in seen["home"]


@pytest.mark.slow  # two forked kernels on one slot
def test_what_a_student_leaves_is_not_seen_by_the_next_forked_kernel(course, data_home, tmp_path,
                                                                     write_notebook):
    leaker = ("import os, json, subprocess, numpy\nnumpy.leak = 1\nos.environ['GRADER_LEAK'] = '1'\n"
              "json.decoder.leak = 1\nleaked = 1\n"
              "for where in ('/tmp/leak', os.path.expanduser('~/leak'), '/dev/shm/leak'):\n"
              "    open(where, 'w').write('x')\n"
              "subprocess.Popen(['sleep', '600'], start_new_session=True)")
    probe = ("import os, json, numpy\nprint('PROBE', hasattr(numpy, 'leak'), 'GRADER_LEAK' in os.environ,"
             " hasattr(json.decoder, 'leak'), 'leaked' in dir(), os.path.exists('/tmp/leak'),"
             " os.path.exists(os.path.expanduser('~/leak')), os.path.exists('/dev/shm/leak'),"
             " sorted(open(f'/proc/{p}/comm').read().strip() for p in os.listdir('/proc') if p.isdigit()),"
             " os.getppid())")
    first, second = graded_in_turn(course, data_home, tmp_path, write_notebook, leaker, probe)
    assert first.status == "graded" and second.score == 6, second.staff_detail
    assert printed(second, 0) == ("PROBE False False False False False False False"
                                  " ['bwrap', 'cat', 'python'] 0\n")


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def _ancestors(pid: int) -> list[int]:
    """The processes above PID, up to the host's init."""
    chain = []
    while pid > 1:
        pid = _parent(pid)
        chain.append(pid)
    return chain


def _checker_server(slot) -> int:
    """The pid of SLOT's warm checker server: the topmost process below its bubblewrap that
    runs grader.checker.server."""
    import psutil

    assert slot.process is not None
    found = []
    for process in psutil.Process(slot.process.pid).children(recursive=True):
        line = process.cmdline()
        if line and not line[0].endswith("bwrap") and "grader.checker.server" in line:
            found.append(process.pid)
    tops = [pid for pid in found if _parent(pid) not in found]
    assert len(tops) == 1, found
    return tops[0]


def _memory_limit(pid: int) -> int:
    """The memory limit in bytes of PID's memory cgroup (v1, else v2); 0 where it has none."""
    lines = [line.split(":", 2) for line in open(f"/proc/{pid}/cgroup").read().splitlines()]
    for _, controllers, path in lines:
        if "memory" in controllers.split(","):
            return int(open(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes").read())
    for number, _, path in lines:
        if number == "0":
            held = open(f"/sys/fs/cgroup{path}/memory.max").read().strip()
            return 0 if held == "max" else int(held)
    return 0


KERNEL_LAYOUT = ("import os\nprint('PPID', os.getppid())\n"
                 "print('LIBC', [l.split('-')[0] for l in open('/proc/self/maps') if '/libc.so' in l][0])")


@pytest.mark.slow  # two forked kernels of one batch
def test_a_batch_starts_one_zygote_for_its_first_notebook_with_its_kernels_environment(
        course, data_home, tmp_path, write_notebook, monkeypatch):
    # the first slot asks for it before it stages its first notebook, the kernel after: one key
    started, staged, zygotes = [], [], []
    real_start, real_stage = zygote.Zygote.start, staging.Kernel.stage

    def start(self, *args, **kwargs):
        started.append((self.env, self.modules))
        zygotes.append(self)
        return real_start(self, *args, **kwargs)

    def stage(self, nb):
        layout = real_stage(self, nb)
        staged.append(layout.env)
        return layout

    checkers, real_close = [], warmcheck.CheckerSlot.close

    async def close(self):
        server = _checker_server(self)
        libc = [line.split("-")[0] for line in open(f"/proc/{server}/maps") if "/libc.so" in line]
        made = zygotes[0].process if zygotes else None  # the batch's zygote, still running
        checkers.append((self.ready, made and made.pid, _ancestors(server), libc[0],
                         _memory_limit(server)))
        await real_close(self)

    monkeypatch.setattr(zygote.Zygote, "start", start)
    monkeypatch.setattr(staging.Kernel, "stage", stage)
    monkeypatch.setattr(warmcheck.CheckerSlot, "close", close)
    first, second = graded_in_turn(course, data_home, tmp_path, write_notebook, KERNEL_LAYOUT,
                                   KERNEL_LAYOUT)
    said = [printed(r, 0).split() for r in (first, second)]
    assert [words[:2] for words in said] == [["PPID", "0"]] * 2, said  # both forked
    assert (first.score, second.score) == (6, 6), first.staff_detail or second.staff_detail
    # the slot's warm checker served, started by exec: no fork of the zygote, whose memory
    # layout the kernels share, and held to a memory limit of its own
    kernels_libc = {words[3] for words in said}
    (ready, made, above, libc, memory), = checkers
    assert ready and made and made not in above, (made, above)
    assert len(kernels_libc) == 1 and libc not in kernels_libc, (libc, kernels_libc)
    assert memory == warmcheck.checker_memory_mb(load_assignment(course, "tiny").config.limits) << 20
    (env, modules), = started
    assert env == {k: v for k, v in staged[0].items() if not k.startswith("GRADER_")}
    assert "numpy" in modules  # the first notebook's libraries


def test_a_forked_kernels_sandbox_ends_when_the_grader_lets_go_without_bubblewraps_help(tmp_path):
    """The placeholder reads the grader's lifeline: closed (as when the grader is killed, even
    before bubblewrap's init has set its own --die-with-parent), the sandbox ends by itself."""
    import asyncio

    from grader.grading import execute
    from grader.isolation import sandbox
    from grader.model.config import Limits

    class Zygote:  # forks nothing: the sandbox keeps its placeholder
        async def fork(self, **request):
            self.sandbox = request["sandbox"]

    async def launch():
        km = execute._KernelManager(connection_file=str(tmp_path / "kernel.json"))
        km.command_prefix = sandbox.command([], sandbox.Spec(files={}, shared=tmp_path, limits=Limits()))
        km.zygote = Zygote()
        await km.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, independent=True)
        return km

    km = asyncio.run(launch())
    process = km.provisioner.process
    assert process.pid == km.zygote.sandbox and km.lifeline >= 0
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=1)  # the sandbox holds on to its placeholder
    inner = [int(p) for p in open(f"/proc/{process.pid}/task/{process.pid}/children").read().split()]
    lifeline = km.lifeline
    km.let_go()
    assert process.wait(timeout=10) is not None  # bubblewrap goes once its init has
    deadline = time.monotonic() + 10  # on a busy machine the last of it may take a moment
    while [p for p in inner if running(p)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert km.lifeline == -1 and inner and [p for p in inner if running(p)] == []
    with pytest.raises(OSError):
        os.fstat(lifeline)  # closed, not left open for every kernel of a batch


@pytest.mark.slow  # kernels started cold where the zygote fails
@pytest.mark.parametrize("failure", ["start", "fork"])
def test_a_zygote_that_fails_leaves_kernels_cold_and_grades_unchanged(course, data_home, tmp_path,
                                                                     monkeypatch, failure):
    if failure == "start":
        monkeypatch.setattr(zygote, "START", "import sys; sys.exit(3)")
    else:
        async def refused(self, **kwargs):
            raise zygote.ZygoteError("no fork today")

        monkeypatch.setattr(zygote.Zygote, "fork", refused)
    started = []
    real = local.StudentKernel.start

    async def start(self, **kwargs):
        await real(self, **kwargs)
        started.append(self)

    monkeypatch.setattr(local.StudentKernel, "start", start)
    path = tmp_path / "alice.ipynb"
    nbformat.write(notebook("import os\nprint('PPID', os.getppid())", *TINY_SOLUTION), path)
    assignment, prepared = tiny(course, data_home)
    result = grade_submission(assignment, Submission("alice", path), prepared=prepared)
    assert result.status == "graded" and result.score == 6, result.staff_detail
    assert printed(result, 0) == "PPID 1\n"  # started cold
    (kernel,) = started
    assert not kernel.forked
    assert bool(kernel.zygote_problem) == (failure == "fork")
    assert ("no fork today" in result.staff_detail) == (failure == "fork")


@pytest.mark.slow  # a kernel and an interpreter
def test_the_zygote_imports_all_that_a_kernel_imports_as_it_starts():
    kernel_manager, client = start_new_kernel(kernel_name="python3")
    said: list[dict] = []
    try:
        reply = client.execute_interactive("import sys; print(' '.join(sorted(sys.modules)))",
                                           output_hook=said.append, timeout=60)
    finally:
        client.stop_channels()  # its heartbeat thread would outlive the kernel (test_pipeline looks)
        kernel_manager.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok"
    in_a_kernel = set("".join(m["content"].get("text", "") for m in said).split())
    imports = ", ".join(["runpy", "ipykernel.kernelapp", "ipykernel_launcher", *zygote.KERNEL_STARTUP])
    in_the_zygote = set(subprocess.run(
        [sys.executable, "-c", f"import sys, {imports}; print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True).stdout.split())
    assert "ipykernel.ipkernel" in in_a_kernel and "debugpy" in in_a_kernel
    assert in_a_kernel - in_the_zygote == set()  # a forked kernel imports nothing as it starts


def test_the_zygote_is_used_only_for_a_root_grader_sandboxed_on_the_cpu():
    assert zygote.usable(sandboxed=True, gpu=False)
    assert not zygote.usable(sandboxed=False, gpu=False)
    assert not zygote.usable(sandboxed=True, gpu=True)


def test_a_zygote_whose_home_would_hide_the_python_environment_refuses_to_start():
    import sys

    from grader.grading.kernelenv import kernel_env

    env = kernel_env(__import__("pathlib").Path("/unused"), threads=1, gpus="")
    env["HOME"] = os.path.dirname(sys.prefix) + "/student"  # its tmpfs would cover the venv
    made = zygote.Zygote(sys.executable, env, ["numpy"])
    assert not made.start(timeout=60)
    assert "would hide" in made.problem and not made.alive
