"""Contain a student's kernel with bubblewrap: no network, a private filesystem view, an
unprivileged user, a seccomp filter, resource limits, and every process gone when it ends.

Inside, the kernel sees the Python it runs on (read-only), the system's /usr (read-only), a
size-capped private working directory /home/student/work holding the notebook and the student's
data (both read-only), a private size-capped /tmp, and one small folder shared with the grader
(the kernel's sockets and the exchange folder), at the same path as outside or at SHARED_INSIDE.
Nothing else of the machine is there: not the checks, the hidden data, the gradebook, the
reports, the other submissions, the course folder or anyone's home.

What /proc/self/mountinfo shows: each bind mount names the folder it comes from, relative to the
root of that folder's filesystem. Binds of folders on a tmpfs of the run's own (the shared folder,
the notebook and data copies of grader.isolation.workdirs, when the grader is root) name nothing of the host;
the Python environment cannot be hidden that way: it must be bound from where it is installed
(a venv holds absolute paths to itself and to its base Python), so its folders show, as do /usr
and the few files of /etc.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from grader.isolation import seccomp
from grader.model.config import Limits

HOME = "/home/student"
WORKDIR = f"{HOME}/work"
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "fonts",
        "nsswitch.conf", "mime.types")
_PACKAGE_DIRS = ("site-packages", "dist-packages")
SHARED_INSIDE = "/run/grader"  # a neutral path for the shared folder, no host path in it
NOBODY = 65534  # the sandbox user where kernels and checks get no users of their own


def own_users(sandboxed: bool) -> bool:
    """Whether kernels and checks run as users of their own: a root grader, sandboxed."""
    return sandboxed and os.geteuid() == 0


def user(sandboxed: bool) -> int:
    """A user for one kernel or checker: one of its own (claim_user) where own_users, else NOBODY."""
    return claim_user() if own_users(sandboxed) else NOBODY


class SandboxError(RuntimeError):
    """A sandbox cannot be made for this kernel on this machine."""


@dataclass(frozen=True)
class Spec:
    """What one sandbox holds and may use."""

    files: dict[str, Path]  # name in the working directory -> host file or folder (read-only)
    shared: Path  # host folder bound read-write (sockets, exchange), at shared_inside if set
    limits: Limits
    gpus: tuple[int, ...] = ()  # minor numbers of the kernel's GPUs: which /dev/nvidiaN to let in
    uid: int = NOBODY  # the unprivileged user the kernel runs as
    python: str = sys.executable  # the kernel's interpreter: its folders are bound read-only
    cgroups: tuple[Path, ...] = ()  # cgroup.procs files the sandbox joins before it starts
    seccomp: bool = True  # load the filter of grader.isolation.seccomp into the kernel
    shared_inside: str = ""  # where the kernel sees SHARED: SHARED_INSIDE, or "" for its host path


@functools.cache
def bwrap() -> str | None:
    """The bubblewrap binary, if it can make a sandbox on this machine."""
    path = shutil.which("bwrap")
    if path is None:
        return None
    probe = [path, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"]
    try:
        ok = subprocess.run(probe, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return path if ok else None


_PROBE = ("import json, site, sys; print(json.dumps({'prefixes': [sys.prefix, sys.base_prefix,"
          " sys.exec_prefix, sys.base_exec_prefix], 'site': site.getsitepackages(),"
          " 'path': sys.path}))")


_ROOTS = threading.Lock()  # the batch's first kernel, checker and preflight ask at once


def python_roots(python: str = sys.executable) -> tuple[str, ...]:
    """Folders PYTHON and its packages live in (see _python_roots), asked of PYTHON once per
    process however many threads ask at once."""
    with _ROOTS:
        return _python_roots(python)


@functools.cache
def _python_roots(python: str) -> tuple[str, ...]:
    """Folders PYTHON and its packages live in, outermost only, as the sandbox binds them.

    These are the interpreter's prefixes (the venv and the Python it was made from), the folders
    of its executable (and of the file it links to), and every package folder it uses: those of
    `site.getsitepackages()` and the `site-packages`/`dist-packages` folders its .pth files add
    (a venv that reaches another environment's packages that way). Asked of the interpreter
    itself, isolated (-I), so that neither the working directory nor PYTHONPATH counts. Never
    any other sys.path entry: an editable install adds its source checkout, and a checkout may
    be the course, with its checks and hidden data.
    """
    try:
        probe = subprocess.run([python, "-I", "-c", _PROBE], capture_output=True, text=True,
                               timeout=60, check=True)
        seen = json.loads(probe.stdout)
    except subprocess.CalledProcessError as exc:
        said = " | ".join((exc.stderr or "").strip().splitlines()[-3:])[-500:]
        raise SandboxError(f"the kernel's interpreter {python} does not run (exit {exc.returncode}"
                           f"{': ' + said if said else ''})") from None
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise SandboxError(f"the kernel's interpreter {python} does not run: {exc}") from None
    found = {*seen["prefixes"], *seen["site"], os.path.dirname(python),
             os.path.dirname(os.path.realpath(python))}
    found |= {p for p in seen["path"] if os.path.basename(p.rstrip("/")) in _PACKAGE_DIRS}
    found |= {os.path.realpath(r) for r in found}
    ordered = sorted(r for r in found if os.path.isdir(r) and r not in ("/", "/usr")
                     and not r.startswith("/usr/"))
    return tuple(r for i, r in enumerate(ordered)
                 if not any(r.startswith(o + "/") for o in ordered[:i]))


def _ancestors(folder: str) -> list[str]:
    """The folders above FOLDER, outermost first (/root, /root/.pyenv, ...)."""
    parts = Path(folder).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


# What the CUDA runtime reads in /sys: the PCI bus (its device folders live under
# /sys/devices/pci*), the NUMA nodes and CPUs, and the NVIDIA modules' parameters. The rest of
# /sys (cgroups, the kernel's knobs, firmware, block and network devices) stays out.
_SYSFS = ("bus/pci", "devices/system/node", "devices/system/cpu", "module/nvidia",
          "module/nvidia_uvm")
_NVIDIA_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")
_DRIVER_LIBRARIES = ("libcuda.so", "libnvidia-")


def gpu_binds(minors: tuple[int, ...], *, dev: str = "/dev", sysfs: str = "/sys",
              ldconfig: str | None = None) -> list[str]:
    """The bubblewrap arguments that let a kernel use the GPUs MINORS: their device nodes and
    the driver's shared ones, the driver libraries outside /usr, and the parts of /sys CUDA
    reads. DEV and SYSFS are where the host's are (tests pass fake ones); LDCONFIG is the text
    of `ldconfig -p` (asked of the system when None).

    /proc/driver/nvidia needs no bind: the driver's entries are in every procfs, the sandbox's
    own /proc included (and a bind there would fail where a procfs lacks them)."""
    if not minors:
        return []
    return [*_gpu_devices(minors, dev), *_driver_libraries(ldconfig), *_sysfs(sysfs)]


def _gpu_devices(minors: tuple[int, ...], dev: str = "/dev") -> list[str]:
    """--dev-bind for /dev/nvidiaN of each GPU in MINORS and the nodes every CUDA process opens."""
    names = [f"nvidia{m}" for m in minors] + list(_NVIDIA_NODES)
    caps = sorted(glob.glob(f"{glob.escape(dev)}/nvidia-caps/*"))
    names += [os.path.relpath(c, dev) for c in caps]
    args: list[str] = []
    for name in names:
        if os.path.exists(f"{dev}/{name}"):
            args += ["--dev-bind", f"{dev}/{name}", f"/dev/{name}"]
    return args


def _driver_libraries(listing: str | None = None) -> list[str]:
    """--ro-bind for the NVIDIA driver's libraries (libcuda, libnvidia-*) that the loader's cache
    lists outside /usr, which the sandbox has already; each at its path and at its target."""
    if listing is None:
        listing = _ldconfig()
    args: list[str] = []
    seen: set[str] = set()
    for line in listing.splitlines():
        name, _, path = line.strip().partition(" => ")
        if not name.startswith(_DRIVER_LIBRARIES) or not path.startswith("/"):
            continue
        real = os.path.realpath(path)
        if real.startswith("/usr/") or not os.path.isfile(real):
            continue
        for each in (path, real):
            if each not in seen:
                seen.add(each)
                args += ["--ro-bind", each, each]
    return args


def _ldconfig() -> str:
    """What `ldconfig -p` lists; empty where it cannot run."""
    program = shutil.which("ldconfig") or "/sbin/ldconfig"
    try:
        return subprocess.run([program, "-p"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _sysfs(root: str = "/sys") -> list[str]:
    """--ro-bind for the parts of ROOT (the host's /sys) that the CUDA runtime reads, those
    that exist, each at its place in the sandbox's /sys."""
    found = [r for r in _SYSFS if os.path.isdir(f"{root}/{r}")]
    found += sorted(os.path.relpath(p, root) for p in glob.glob(f"{glob.escape(root)}/devices/pci*"))
    args: list[str] = []
    for rel in found:
        args += ["--ro-bind", f"{root}/{rel}", f"/sys/{rel}"]
    return args


def rlimits(limits: Limits, *, gpu: bool = False, cgroup: bool = False) -> str:
    """The resource limits the kernel's launcher applies to itself, as JSON.

    A GPU kernel gets no address-space limit: CUDA reserves far more virtual memory than it
    ever uses (tens of GB and more), and cannot start under one. Its host memory is then held by
    the run's memory CGROUP; where there is none, by RLIMIT_DATA, which counts the private
    writable memory a process maps and not CUDA's reservations (mapped without access)."""
    memory = limits.memory_mb * 1024 * 1024
    values = {
        "AS": memory, "NPROC": limits.processes, "NOFILE": limits.open_files,
        "FSIZE": limits.disk_mb * 1024 * 1024, "CORE": 0,
        "CPU": int(limits.total_seconds * max(1, os.cpu_count() or 1) + 60),
    }
    if gpu:
        del values["AS"]
        if not cgroup:
            values["DATA"] = memory
    return json.dumps(values)


def _system() -> list[str]:
    """The read-only system every kernel sees: /usr, its links, a few files of /etc."""
    args = ["--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev"]
    for link in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        target = os.path.realpath(f"/{link}")
        if os.path.islink(f"/{link}") and target.startswith("/usr/"):
            args += ["--symlink", target, f"/{link}"]
    for name in _ETC:
        if os.path.exists(f"/etc/{name}"):
            args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    return args


def _folders(roots: tuple[str, ...], shared: str, inside: str) -> list[str]:
    """Bind the Python ROOTS read-only, then SHARED read-write at INSIDE.

    bubblewrap mounts in argument order and a later mount hides what was there, so these come
    after the private /tmp and home: a venv or a run folder under /tmp then sits on the private
    /tmp instead of vanishing under it. Each folder above them is made traversable (/root is not
    on the host). A run folder inside a Python root gets the rest of that root hidden around it.
    """
    args: list[str] = []
    made: set[str] = set()
    for folder in roots:
        for above in _ancestors(folder):
            if above not in made:
                made.add(above)
                args += ["--perms", "0755", "--dir", above]
        args += ["--ro-bind", folder, folder]
    for root in roots:
        if inside.startswith(root + "/"):  # other runs beside it: hide them with an empty folder
            mask = os.path.join(root, Path(inside).relative_to(root).parts[0])
            args += ["--tmpfs", mask]
    for above in _ancestors(inside):
        if above not in made:
            args += ["--perms", "0755", "--dir", above]
    return [*args, "--bind", shared, inside]


# Runs on the host right before bubblewrap. First it asks for SIGKILL when the grader goes (kept
# across exec) and stops if the grader already went: bubblewrap's own --die-with-parent takes
# hold only once it has started, and a grader killed in between would leave a sandbox behind.
# Then it joins the run's cgroups and hands bubblewrap the seccomp filter through a pipe
# (jupyter_client starts the kernel with no file descriptor of ours).
_ENTRY = """\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
program, count = bytes.fromhex(sys.argv[2]), int(sys.argv[3])
for procs in sys.argv[4:4 + count]:
    with open(procs, "w") as f:
        f.write(str(os.getpid()))
argv = sys.argv[4 + count:]
if program:
    read, write = os.pipe()
    os.write(write, program)
    os.close(write)
    os.set_inheritable(read, True)
    argv[1:1] = ["--seccomp", str(read)]
os.execv(argv[0], argv)
"""


def _entry(program: bytes = b"", cgroups: tuple[Path, ...] | list[Path] = ()) -> list[str]:
    """The argv of the host-side step before bubblewrap, for a sandbox started by this process."""
    return [sys.executable, "-I", "-S", "-c", _ENTRY, str(os.getpid()), program.hex(),
            str(len(cgroups)), *map(str, cgroups)]


def command(argv: list[str], spec: Spec) -> list[str]:
    """ARGV wrapped in a bubblewrap sandbox as SPEC says."""
    path = bwrap()
    if path is None:
        raise SandboxError("bubblewrap cannot make a sandbox on this machine")
    disk = str(spec.limits.disk_mb * 1024 * 1024)
    root = own_users(sandboxed=True)
    args = [path, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    if not root:  # an unprivileged grader gets a user namespace, with its own user as SPEC.uid
        args += ["--unshare-user", "--uid", str(spec.uid), "--gid", str(spec.uid)]
    args += _system()
    args += ["--perms", "01777", "--size", disk, "--tmpfs", "/tmp"]
    args += ["--perms", "01777", "--size", disk, "--tmpfs", HOME]
    # POSIX semaphores live there: multiprocessing's locks (ThreadPool, which Keras's
    # image_dataset_from_directory and flow_from_directory use) need it writable
    args += ["--perms", "01777", "--size", disk, "--tmpfs", "/dev/shm"]
    args += ["--perms", "01777", "--dir", WORKDIR]
    for name, source in sorted(spec.files.items()):
        args += ["--ro-bind", str(source), f"{WORKDIR}/{name}"]
    args += _folders(python_roots(spec.python), str(spec.shared), spec.shared_inside or str(spec.shared))
    args += gpu_binds(spec.gpus)
    args += ["--chdir", WORKDIR, "--setenv", "HOME", HOME]
    if root:  # a real unprivileged user, so that the process limit counts this kernel alone
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        args += ["--", setpriv, f"--reuid={spec.uid}", f"--regid={spec.uid}", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    else:
        args += ["--"]
    program = seccomp.program() if spec.seccomp else b""
    return [*_entry(program, spec.cgroups), *args, *argv]


_CLAIMS: list[object] = []  # open lock files: a claim lasts as long as this process
# Where every grader on the machine keeps its claims: one place, whatever its TMPDIR says (two
# graders with their own TMPDIRs would otherwise take the same users and reap each other's
# kernels). /run where it can be written (root), else /tmp itself.
USER_LOCKS = (Path("/run/grader-users"), Path("/tmp/grader-users"))


def claim_user(first: int = 61000, last: int = 64999) -> int:
    """A user id no other grader on this machine is using now, for one kernel slot.

    Each claim holds an flock on UID.lock in the machine's one claims folder (`user_locks`)
    until this process ends (killed or not), so two graders at once never share a user, its
    process limit, or `reap`.
    """
    import fcntl

    folder = user_locks()
    for uid in range(first, last + 1):
        handle = open(folder / f"{uid}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _CLAIMS.append(handle)
        return uid
    raise RuntimeError(f"every sandbox user from {first} to {last} is in use")


def user_locks() -> Path:
    """The folder of every grader's user claims: the first of USER_LOCKS this process can make
    or write in; never one that TMPDIR moves."""
    for folder in USER_LOCKS:
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
        except OSError:
            continue
        if folder.is_dir() and not folder.is_symlink() and os.access(folder, os.W_OK | os.X_OK):
            return folder
    raise RuntimeError(f"no folder for the sandbox users' claims: {' and '.join(map(str, USER_LOCKS))}"
                       " cannot be written")


def reap(uid: int, timeout: float = 10.0) -> None:
    """Kill every process of UID and wait until none is left, so the next kernel to run as UID
    starts with its whole process limit (processes of a torn-down sandbox take a moment to go)."""
    import signal
    import time

    deadline = time.monotonic() + timeout
    pause = 0.002  # a killed process is mostly gone within milliseconds: look again soon, then
    while time.monotonic() < deadline:  # less often (this wait is on a slot's grading path)
        pids = _pids_of(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(pause)
        pause = min(2 * pause, 0.05)


def _pids_of(uid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/status", "rb") as f:
                    for line in f:
                        if line.startswith(b"Uid:"):
                            if int(line.split()[1]) == uid:
                                pids.append(int(entry.name))
                            break
            except (OSError, ValueError):
                pass
    return pids


def checker_command(argv: list[str], *, readonly: list[Path], writable: list[Path], workdir: Path,
                    uid: int, groups: tuple[int, ...] = (), tmp_mb: int = 4096,
                    cgroups: tuple[Path, ...] = ()) -> list[str]:
    """ARGV in a bubblewrap sandbox for the trusted checks: no network, the Python and /usr
    read-only, READONLY and WRITABLE folders at their own paths, a private /tmp, and for a root
    grader the unprivileged user UID (with supplementary GROUPS) instead of root; in the
    cgroups whose cgroup.procs files are CGROUPS (its memory limit), where given."""
    path = bwrap()
    if path is None:
        raise RuntimeError("bubblewrap cannot make a sandbox on this machine")
    root = own_users(sandboxed=True)
    args = [path, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--hostname", "checker"]
    if not root:
        args += ["--unshare-user"]
    args += _system()
    args += ["--perms", "01777", "--size", str(tmp_mb * 1024 * 1024), "--tmpfs", "/tmp"]
    made: set[str] = {"/tmp"}
    bound: list[str] = []
    folders = [(r, "--ro-bind") for r in python_roots()]
    folders += [(str(f), "--ro-bind") for f in readonly] + [(str(f), "--bind") for f in writable]
    for folder, how in sorted(folders, key=lambda pair: (pair[0].count("/"), pair[0])):
        for above in _ancestors(folder):  # traversable, even where the host's are not (/root)
            inside = any(above == b or above.startswith(b + "/") for b in bound)
            if above not in made and not inside:
                made.add(above)
                args += ["--perms", "0755", "--dir", above]
        args += [how, folder, folder]
        bound.append(folder)
    args += ["--chdir", str(workdir), "--setenv", "HOME", "/tmp"]
    if root:
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        extra = [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
        args += ["--", setpriv, f"--reuid={uid}", f"--regid={uid}", *extra,
                 "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    else:
        args += ["--"]
    return [*_entry(cgroups=cgroups), *args, *argv]
