"""The sandbox's shape, and what the grader does where none can be made."""

import concurrent.futures
import dataclasses
import json
import os
import site
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grader.isolation import sandbox, workdirs
from grader.model.config import Limits
from tests.conftest import REPO, TINY_SOLUTION


def test_the_sandbox_binds_only_python_the_work_and_the_shared_folder(tmp_path):
    shared = tmp_path / "shared"
    data = tmp_path / "data.npz"
    argv = sandbox.command(["python"], sandbox.Spec(files={"data.npz": data}, shared=shared,
                                                    limits=Limits(disk_mb=64)))
    sources = {argv[i + 1] for i, a in enumerate(argv) if a in ("--bind", "--ro-bind")}
    writable = [argv[i + 2] for i, a in enumerate(argv) if a == "--bind"]
    assert writable == [str(shared)]
    assert str(data) in sources and str(REPO) not in sources and "/" not in sources
    assert not any(s.startswith(str(Path.home())) and "pyenv" not in s for s in sources)
    assert "--unshare-net" in argv and "--unshare-pid" in argv and "--die-with-parent" in argv
    assert str(64 * 1024 * 1024) in argv
    assert argv[-1] == "python"


def mounts(argv: list[str]) -> dict[str, str]:
    """The sandbox's mount table once bubblewrap has run ARGV's mounts in order: destination ->
    source ("tmpfs" for a private one); a mount hides every earlier one at or below its path."""
    table: dict[str, str] = {}
    i = argv.index(sandbox.bwrap())
    while argv[i] != "--":
        if argv[i] in ("--bind", "--ro-bind", "--dev-bind", "--tmpfs", "--proc", "--dev"):
            two = argv[i] not in ("--tmpfs", "--proc", "--dev")
            source, dest = (argv[i + 1], argv[i + 2]) if two else ("tmpfs", argv[i + 1])
            table = {d: s for d, s in table.items() if d != dest and not d.startswith(dest + "/")}
            table[dest] = source
            i += 2 if two else 1
        i += 1
    return table


def argv_with(monkeypatch, roots: tuple[str, ...], shared: str) -> list[str]:
    monkeypatch.setattr(sandbox, "python_roots", lambda python: roots)
    return sandbox.command(["python"], sandbox.Spec(files={}, shared=Path(shared), limits=Limits()))


@pytest.mark.parametrize("roots, shared", [
    (("/tmp/venv", "/root/.pyenv/versions/3.11.7"), "/tmp/grader-abcdefgh/shared"),
    (("/tmp/x y/venv", "/tmp/x y/python"), "/tmp/x y/runs/grader-abcdefgh/shared"),
    (("/home/x/venv", "/home/x/.pyenv/versions/3.12.1"), "/home/x/runs/grader-abcdefgh/shared"),
    (("/srv/course/.venv",), "/srv/runs/grader-abcdefgh/shared"),
    (("/home/student/venv",), "/tmp/grader-abcdefgh/shared"),
])
def test_python_and_the_run_folder_stay_visible_wherever_they_live(monkeypatch, roots, shared):
    table = mounts(argv_with(monkeypatch, roots, shared))
    for root in roots:
        assert table.get(root) == root, (root, table)
    assert table.get(shared) == shared, table
    assert table["/tmp"] == "tmpfs" and table[sandbox.HOME] == "tmpfs"
    assert {d for d, s in table.items() if s not in ("tmpfs", d)} <= {"/etc/localtime"}, table


def test_a_run_folder_inside_the_venv_hides_the_other_runs_there(monkeypatch):
    shared = "/srv/venv/runs/grader-abcdefgh/shared"
    table = mounts(argv_with(monkeypatch, ("/srv/venv",), shared))
    assert table["/srv/venv"] == "/srv/venv" and table["/srv/venv/runs"] == "tmpfs"
    assert table[shared] == shared


def test_python_roots_are_the_interpreters_folders_and_packages_never_the_checkout():
    roots = sandbox.python_roots(sys.executable)
    assert any(sys.prefix == r or sys.prefix.startswith(r + "/") for r in roots)
    for packages in site.getsitepackages():
        assert any(packages == r or packages.startswith(r + "/") for r in roots), roots
    assert not any(str(REPO) == r or str(REPO).startswith(r + "/") for r in roots
                   if not r.startswith(str(REPO / ".venv"))), roots


def small_venv(folder: Path) -> Path:
    """A venv in FOLDER whose only packages are this environment's, reached through a .pth."""
    base = Path(sys.base_prefix) / "bin" / "python3"
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(folder)], check=True)
    packages = next((folder / "lib").glob("python3*/site-packages"))
    (packages / "main-venv.pth").write_text(
        f"import site; site.addsitedir({site.getsitepackages()[0]!r})\n")
    (folder / "share").mkdir()  # nbconvert's templates, for the reports written outside
    (folder / "share" / "jupyter").symlink_to(Path(sys.prefix) / "share" / "jupyter")
    return folder / "bin" / "python"


def run_sandboxed(code: str, spec: sandbox.Spec) -> subprocess.CompletedProcess:
    argv = sandbox.command([spec.python, "-c", code], spec)
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_a_venv_under_tmp_with_a_space_runs_in_the_sandbox(tmp_path):
    python = small_venv(tmp_path / "x y" / "venv")
    shared = tmp_path / "x y" / "runs" / "grader-abcdefgh" / "shared"
    shared.mkdir(parents=True)
    shared.chmod(0o777)  # the sandbox's user writes there
    code = ("import sys, ipykernel, numpy\nprint(sys.prefix)\n"
            "try:\n    import grader\nexcept ImportError:\n    print('no grader')\n"
            f"open({str(shared / 'out')!r}, 'w').write('ok')")
    ran = run_sandboxed(code, sandbox.Spec(files={}, shared=shared, limits=Limits(), python=str(python)))
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.split("\n")[:2] == [str(tmp_path / "x y" / "venv"), "no grader"], ran.stdout
    assert (shared / "out").read_text() == "ok"


@pytest.mark.slow
def test_a_venv_under_a_temporary_folder_grades_the_tiny_course(course, write_notebook, tmp_path):
    python = small_venv(tmp_path / "x y" / "venv")
    subs = tmp_path / "subs"
    write_notebook(subs, "alice", *TINY_SOLUTION)
    ran = subprocess.run([str(python), "-m", "grader", "run", "tiny", "--submissions", str(subs),
                          "--course", str(course)],
                         capture_output=True, text=True, timeout=300, cwd=course)
    assert ran.returncode == 0, ran.stderr[-3000:]
    page = (course / "reports" / "tiny" / "alice.html").read_text()
    assert "6 / 6" in page
    # sandboxed, so neither the student's page nor the summary warns that it was not isolated
    assert "not isolated" not in page
    assert "not isolated" not in (course / "reports" / "tiny" / "index.html").read_text()


SYSCALLS = """
import ctypes, errno, json, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
def call(nr, *args):
    ctypes.set_errno(0)
    return errno.errorcode.get(ctypes.get_errno()) if libc.syscall(nr, *args) < 0 else "ok"
found = {name: call(nr, *args) for name, nr, args in [
    ("unshare_user", 272, (0x10000000,)), ("unshare_net", 272, (0x40000000,)),
    ("clone_user", 56, (0x10000000 | 17, 0, 0, 0, 0)), ("clone3", 435, (0, 0)),
    ("setns", 308, (0, 0)), ("keyctl", 250, (0, 0)), ("add_key", 248, (0, 0, 0, 0, 0)),
    ("bpf", 321, (0, 0, 0)), ("io_uring_setup", 425, (1, 0)), ("userfaultfd", 323, (0,)),
    ("perf_event_open", 298, (0, 0, -1, -1, 0)), ("ptrace", 101, (0, 0, 0, 0))]}
found["subprocess"] = subprocess.run(["true"]).returncode
thread = threading.Thread(target=lambda: found.update(thread="ok"))
thread.start(); thread.join()
print(json.dumps(found))
"""


def test_the_seccomp_filter_refuses_namespaces_keyrings_bpf_io_uring(tmp_path):
    assert os.uname().machine == "x86_64", "the probe below uses x86_64 system call numbers"
    (tmp_path / "shared").mkdir()
    ran = run_sandboxed(SYSCALLS, sandbox.Spec(files={}, shared=tmp_path / "shared", limits=Limits()))
    assert ran.returncode == 0, ran.stderr[-2000:]
    found = json.loads(ran.stdout)
    assert found.pop("clone3") == "ENOSYS" and found.pop("subprocess") == 0
    assert found.pop("thread") == "ok"
    assert set(found.values()) == {"EPERM"}, found


def test_multiprocessing_locks_work_in_the_sandbox(tmp_path):
    (tmp_path / "shared").mkdir()
    code = "from multiprocessing.pool import ThreadPool\nprint(ThreadPool(2).map(abs, [-1, -2]))"
    ran = run_sandboxed(code, sandbox.Spec(files={}, shared=tmp_path / "shared", limits=Limits()))
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.strip() == "[1, 2]"


FOREIGN = {  # a system call through another table than x86_64's
    "i386": "import ctypes, mmap\n"
            "code = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
            "code.write(bytes.fromhex('b814000000cd80c3'))  # mov eax, 20 (getpid); int 0x80; ret\n"
            "address = ctypes.addressof(ctypes.c_char.from_buffer(code))\n"
            "print(ctypes.CFUNCTYPE(ctypes.c_int)(address)())",
    "x32": "import ctypes\nprint(ctypes.CDLL(None).syscall(0x40000000 | 39))  # x32 getpid",
}


@pytest.mark.parametrize("table", sorted(FOREIGN))
def test_a_call_through_a_foreign_system_call_table_kills_the_process(tmp_path, table):
    assert os.uname().machine == "x86_64", "the probe below is x86_64 machine code"
    (tmp_path / "shared").mkdir()
    spec = sandbox.Spec(files={}, shared=tmp_path / "shared", limits=Limits())
    ran = run_sandboxed(FOREIGN[table], spec)
    assert ran.returncode == 128 + 31 and ran.stdout == "", (ran.returncode, ran.stdout)  # SIGSYS
    unfiltered = run_sandboxed(FOREIGN[table], dataclasses.replace(spec, seccomp=False))
    assert unfiltered.returncode == 0 and unfiltered.stdout.strip(), unfiltered.stderr[-2000:]


def test_without_the_filter_those_calls_reach_the_kernel(tmp_path):
    (tmp_path / "shared").mkdir()
    spec = sandbox.Spec(files={}, shared=tmp_path / "shared", limits=Limits(), seccomp=False)
    code = SYSCALLS.split("found =")[0] + "print(call(435, 0, 0), call(250, 0, 0))"
    ran = run_sandboxed(code, spec)
    assert ran.stdout.split() == ["EINVAL", "EINVAL"], ran.stdout + ran.stderr[-2000:]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root mounts the run's own tmpfs")
def test_mountinfo_names_no_run_folder_and_no_data_path(tmp_path):
    data = tmp_path / "course data" / "train.npz"
    data.parent.mkdir()
    data.write_bytes(b"student data")
    folder = workdirs.make(tmp_path / "runs")
    try:
        shared = folder.share(disk_mb=8)
        shared.chmod(0o777)
        spec = sandbox.Spec(files=folder.private_files({"train.npz": data}), shared=shared,
                            limits=Limits(), shared_inside=sandbox.SHARED_INSIDE)
        code = ("print(open('train.npz').read())\nopen('/run/grader/out', 'w').write('ok')\n"
                "print(open('/proc/self/mountinfo').read())")
        ran = run_sandboxed(code, spec)
        assert ran.returncode == 0, ran.stderr[-2000:]
        assert (shared / "out").read_text() == "ok"
    finally:
        folder.remove()
    assert ran.stdout.startswith("student data") and " /run/grader " in ran.stdout
    assert str(tmp_path) not in ran.stdout and "course data" not in ran.stdout, ran.stdout


def test_limits_reach_the_kernel_as_rlimits():
    limits = Limits(memory_mb=100, disk_mb=10, processes=7, open_files=50, total_seconds=10)
    values = json.loads(sandbox.rlimits(limits))
    assert values["AS"] == 100 << 20 and values["FSIZE"] == 10 << 20
    assert values["NPROC"] == 7 and values["NOFILE"] == 50 and values["CORE"] == 0


def test_a_gpu_kernel_has_no_address_space_limit_and_its_memory_stays_bounded():
    limits = Limits(memory_mb=100)
    with_cgroup = json.loads(sandbox.rlimits(limits, gpu=True, cgroup=True))
    assert "AS" not in with_cgroup and "DATA" not in with_cgroup  # the cgroup holds host memory
    without = json.loads(sandbox.rlimits(limits, gpu=True, cgroup=False))
    assert "AS" not in without and without["DATA"] == 100 << 20
    assert json.loads(sandbox.rlimits(limits, cgroup=True))["AS"] == 100 << 20  # CPU kernels keep it


def fake_gpu_host(root: Path) -> dict[str, str]:
    """Fake /dev, /sys, /proc and a driver library outside /usr for two GPUs, under ROOT."""
    for name in ("dev/nvidia0", "dev/nvidia1", "dev/nvidiactl", "dev/nvidia-uvm",
                 "dev/nvidia-caps/nvidia-cap1", "dev/null-not-nvidia", "lib/libcuda.so.550.1",
                 "lib/libnvidia-ml.so.550.1", "lib/libfoo.so.1"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name + "\n")
    (root / "lib" / "libcuda.so.1").symlink_to("libcuda.so.550.1")
    for folder in ("sys/bus/pci/devices", "sys/devices/pci0000:00/0000:00:02.0", "sys/devices/system/node",
                   "sys/devices/system/cpu", "sys/module/nvidia", "sys/fs/cgroup", "sys/kernel",
                   "sys/class/net", "sys/firmware"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "sys/devices/pci0000:00/0000:00:02.0/numa_node").write_text("0")
    ldconfig = (f"3 libs found in cache `/etc/ld.so.cache'\n"
                f"\tlibcuda.so.1 (libc6,x86-64) => {root}/lib/libcuda.so.1\n"
                f"\tlibnvidia-ml.so.1 (libc6,x86-64) => {root}/lib/libnvidia-ml.so.550.1\n"
                f"\tlibfoo.so.1 (libc6,x86-64) => {root}/lib/libfoo.so.1\n"
                "\tlibnvidia-usr.so.1 (libc6,x86-64) => /usr/lib/libnvidia-usr.so.1\n")
    return {"dev": str(root / "dev"), "sysfs": str(root / "sys"), "ldconfig": ldconfig}


def test_a_gpu_kernel_gets_its_own_device_node_the_driver_and_only_cudas_part_of_sys(tmp_path):
    fake = fake_gpu_host(tmp_path)
    args = sandbox.gpu_binds((1,), **fake)
    binds = {(args[i], args[i + 1], args[i + 2]) for i in range(len(args) - 2)
             if args[i] in ("--dev-bind", "--ro-bind")}
    dev, lib = tmp_path / "dev", tmp_path / "lib"
    assert {b[2] for b in binds if b[0] == "--dev-bind"} == {
        "/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-caps/nvidia-cap1"}
    assert ("--dev-bind", f"{dev}/nvidia1", "/dev/nvidia1") in binds  # never nvidia0: another's
    libraries = {b[1] for b in binds if b[1].startswith(str(lib))}
    assert libraries == {f"{lib}/libcuda.so.1", f"{lib}/libcuda.so.550.1", f"{lib}/libnvidia-ml.so.550.1"}
    assert not any("/usr/" in b[1] for b in binds)  # /usr is the sandbox's already
    assert {b[2] for b in binds if b[2].startswith("/sys")} == {
        "/sys/bus/pci", "/sys/devices/pci0000:00", "/sys/devices/system/node",
        "/sys/devices/system/cpu", "/sys/module/nvidia"}
    assert sandbox.gpu_binds((), **fake) == []


def test_bubblewrap_takes_the_gpu_binds_and_the_kernel_sees_nothing_else_of_sys(tmp_path):
    fake = fake_gpu_host(tmp_path)
    argv = [sandbox.bwrap(), "--unshare-pid", "--die-with-parent", *sandbox._system(),
            *sandbox.gpu_binds((1,), **fake), "--", "/bin/sh", "-c",
            f"ls /dev | grep nvidia; ls -R /sys; cat {tmp_path}/lib/libcuda.so.1; "
            f"ls {tmp_path}/lib; echo PROC; ls /proc/driver"]
    ran = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    out = ran.stdout.split()
    assert "nvidia1" in out and "nvidia0" not in out and "nvidia-uvm" in out
    assert "numa_node" in out and "nvidia" in out and "cgroup" not in out and "kernel" not in out
    assert "net" not in out and "firmware" not in out
    assert "lib/libcuda.so.550.1" in out and "libfoo.so.1" not in out
    # /proc/driver (where the driver's nvidia folder is on a GPU host) is the host's in the sandbox
    assert out[out.index("PROC") + 1:] == sorted(os.listdir("/proc/driver"))


def test_the_cuda_wheels_folder_is_bound_for_the_kernel():
    import importlib.util

    spec = importlib.util.find_spec("tensorflow")
    assert spec is not None and spec.origin is not None
    packages = str(Path(spec.origin).parent.parent)  # where pip puts nvidia-* beside tensorflow
    roots = sandbox.python_roots(sys.executable)
    assert any(packages == r or packages.startswith(r + "/") for r in roots), roots


def test_a_gpu_spec_no_longer_binds_the_whole_of_sys(tmp_path):
    argv = sandbox.command(["python"], sandbox.Spec(files={}, shared=tmp_path, limits=Limits(),
                                                    gpus=(0,)))
    pairs = {(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == "--ro-bind"}
    assert ("/sys", "/sys") not in pairs
    assert ("/sys/bus/pci", "/sys/bus/pci") in pairs or not os.path.isdir("/sys/bus/pci")


def grader(course, *args, env=None):
    return subprocess.run([sys.executable, "-m", "grader", *map(str, args), "--course", str(course)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=course)


@pytest.mark.slow
def test_without_a_sandbox_the_grader_refuses_unless_told(course, write_notebook, tmp_path):
    subs = tmp_path / "subs"
    write_notebook(subs, "alice", *TINY_SOLUTION)
    bin_dir = tmp_path / "bin"  # a PATH with Python but no bwrap
    bin_dir.mkdir()
    env = {**os.environ, "PATH": str(bin_dir)}
    refused = grader(course, "run", "tiny", "--submissions", subs, env=env)
    assert refused.returncode == 2 and "cannot isolate" in refused.stderr and "--no-sandbox" in refused.stderr
    assert refused.stderr.count("\n") == 1
    ran = grader(course, "run", "tiny", "--submissions", subs, "--no-sandbox", env=env)
    assert ran.returncode == 0, ran.stderr
    page = (course / "reports" / "tiny" / "alice.html").read_text()
    assert "not isolated" not in page and "6 / 6" in page, "a staff message, not the student's"
    assert "not isolated" in (course / "reports" / "tiny" / "index.html").read_text()


def test_each_claim_gets_a_user_no_other_grader_holds():
    first, second = sandbox.claim_user(), sandbox.claim_user()
    code = "from grader.isolation import sandbox; print(sandbox.claim_user())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert len({first, second, int(other.stdout)}) == 3


def test_graders_with_different_tmpdirs_never_claim_the_same_user(tmp_path):
    """The claims live in one place for the machine: a grader's TMPDIR does not move them."""
    code = "from grader.isolation import sandbox; print(sandbox.claim_user(), flush=True); input()"
    graders = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            graders.append(subprocess.Popen(
                [sys.executable, "-c", code], cwd=REPO, text=True, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, env={**os.environ, "TMPDIR": str(tmp_path / name)}))
        claimed = [int(g.stdout.readline()) for g in graders]  # both hold theirs meanwhile
    finally:
        for grader in graders:
            grader.communicate("")
    assert claimed[0] != claimed[1]
    assert not list(tmp_path.rglob("*.lock"))  # nothing under either TMPDIR


@pytest.mark.parametrize("which", ["kernel", "checker"])
def test_a_sandbox_whose_grader_is_already_gone_never_starts(tmp_path, which):
    """A grader killed between starting a sandbox and bubblewrap's --die-with-parent taking hold
    must not leave one behind: the host-side step before bubblewrap stops when its parent is not
    the grader that built the command (here: a process in between plays the orphaned case)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    code = f"open({str(shared / 'ran')!r}, 'w').write('yes')"
    if which == "kernel":
        argv = sandbox.command([sys.executable, "-c", code],
                               sandbox.Spec(files={}, shared=shared, limits=Limits()))
    else:
        argv = sandbox.checker_command([sys.executable, "-c", code], readonly=[],
                                       writable=[shared], workdir=shared, uid=os.getuid())
    middle = [sys.executable, "-c", "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"]
    orphaned = subprocess.run([*middle, *argv], capture_output=True, text=True, timeout=120)
    assert orphaned.returncode == 1 and not (shared / "ran").exists()
    direct = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert direct.returncode == 0, direct.stderr[-2000:]
    assert (shared / "ran").read_text() == "yes"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs processes as another user")
def test_reap_leaves_no_process_of_the_user_and_none_of_another():
    uid = sandbox.claim_user()
    # a process of the user that has children of its own, and one of another user (this one)
    family = subprocess.Popen(["bash", "-c", "sleep 60 & sleep 60 & trap '' TERM; wait"], user=uid,
                              start_new_session=True)
    bystander = subprocess.Popen(["sleep", "60"])
    # its parent waits for it meanwhile, as a kernel's manager does (a zombie keeps its user)
    waiting = concurrent.futures.ThreadPoolExecutor(1).submit(family.wait)
    try:
        for _ in range(200):  # until both children run
            if len(sandbox._pids_of(uid)) >= 3:
                break
            time.sleep(0.01)
        assert len(sandbox._pids_of(uid)) >= 3
        sandbox.reap(uid)
        assert sandbox._pids_of(uid) == []
        assert waiting.result(timeout=5) == -9
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
        family.kill()
