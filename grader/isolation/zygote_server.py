"""The zygote's own process (grader.isolation.zygote explains why it is safe): it imports the
kernels' libraries once, then forks, for each request, a midwife that forks a kernel into a
student's sandbox.

It runs as root under the kernels' interpreter and environment, which may lack the grader's
dependencies: this module and grader.forkserver import the standard library only, and the
zygote takes them out of sys.modules before a kernel runs. Started as
`python -c zygote.START ROOT SETTINGS`, SETTINGS being JSON: {"parent": the grader's pid,
"modules": what to import, "startup": what every kernel imports as it starts, "placeholder":
the command name of the process that holds each sandbox}.

The protocol (grader.forkserver): {"fork": {"sandbox": PID, "argv": [...], "env": {...},
"uid": N, "log": PATH, "seccomp": HEX, "cwd": PATH}} is
answered {"forked": PID} (the midwife) or {"error": why}; {"ready": [modules]} comes once,
after the imports.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import importlib.util
import json
import os
import runpy
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from typing import Any

from grader.forkserver import Server
from grader.isolation.launcher import apply_limits

NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET = (
    0x20000, 0x2000000, 0x4000000, 0x8000000, 0x10000000, 0x20000000, 0x40000000)
_NAMESPACES = {NEWPID: "pid", NEWNET: "net", NEWIPC: "ipc", NEWUTS: "uts", NEWCGROUP: "cgroup",
               NEWNS: "mnt"}
_TMP = ".zygote-tmp"  # the zygote's own temporary files, in its home
libc = ctypes.CDLL(None, use_errno=True)


def check(result: int, what: str) -> None:
    """Raise OSError, naming WHAT, where a libc call failed."""
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


@dataclass(frozen=True)
class Warm:
    """What the imports left, which a cold kernel's imports leave too: each kernel gets it."""

    imported: list[str]  # of the modules asked for, those installed
    added: dict[str, str]  # environment variables the imports set
    home: list[tuple[str, bytes | None]]  # files (None: folders) they wrote in the home
    cap_last: int  # the highest capability number, to drop them all


def private_home() -> None:
    """An empty home of the zygote's own, at the kernels' HOME (/home/student), on a tmpfs
    over its top folder in a mount namespace of its own: what the libraries write there goes
    nowhere on the host. Its temporary files go there too."""
    home = os.environ["HOME"]
    top = "/" + home.strip("/").split("/")[0]
    hidden = [p for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path}
              if p and os.path.realpath(p).startswith(top + "/")]
    if top in ("/", "/usr", "/tmp") or hidden:
        raise RuntimeError(f"the Python environment lies under {top}, which the zygote's own home would hide")
    check(libc.unshare(NEWNS), "unshare")
    check(libc.mount(b"none", b"/", None, 16384 | (1 << 18), None), "mount --make-rprivate /")
    check(libc.mount(b"tmpfs", top.encode(), b"tmpfs", 2 | 4, b"mode=0755,size=512m"),
          f"mount tmpfs {top}")
    os.makedirs(f"{home}/{_TMP}", mode=0o700)
    os.environ["TMPDIR"] = f"{home}/{_TMP}"
    os.chdir(home)


def warm_up(modules: list[str], startup: list[str]) -> Warm:
    """Import MODULES (those installed), ipykernel and STARTUP; what that left."""
    before = dict(os.environ)
    done = []
    for name in modules:
        if importlib.util.find_spec(name.partition(".")[0]) is not None:
            __import__(name)
            done.append(name)
    import ipykernel.kernelapp  # noqa: F401
    import ipykernel_launcher  # noqa: F401

    for name in startup:  # what every kernel imports as it starts, once here
        with contextlib.suppress(Exception):
            __import__(name)
    added = {k: v for k, v in os.environ.items() if before.get(k) != v}
    home_files: list[tuple[str, bytes | None]] = []
    for top, dirs, files in os.walk(os.environ["HOME"]):
        dirs[:] = [d for d in dirs if d != _TMP]
        rel = os.path.relpath(top, os.environ["HOME"])
        home_files += [(os.path.normpath(os.path.join(rel, d)), None) for d in sorted(dirs)]
        for f in sorted(files):
            with open(os.path.join(top, f), "rb") as handle:
                home_files.append((os.path.normpath(os.path.join(rel, f)), handle.read(16 << 20)))
    with open("/proc/sys/kernel/cap_last_cap") as caps:
        cap_last = int(caps.read())
    return Warm(done, added, home_files, cap_last)


def threads_left() -> int:
    """The zygote's threads once OpenBLAS' pool (more than one thread a kernel) has stopped
    itself, which it does on a fork."""
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        child = os.fork()
        if child == 0:
            os._exit(0)
        os.waitpid(child, 0)
        threads = len(os.listdir("/proc/self/task"))
    return threads


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


class _Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def sandbox_process(bwrap: int, placeholder: str) -> int:
    """The placeholder bubblewrap runs in the sandbox (its init's child), once it has begun."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{bwrap}/task/{bwrap}/children") as f:
                for init in f.read().split():
                    with open(f"/proc/{init}/task/{init}/children") as g:
                        for pid in g.read().split():
                            with open(f"/proc/{pid}/comm") as h:
                                if h.read().strip() == placeholder:
                                    return int(pid)
        except OSError:
            pass
        time.sleep(0.002)
    raise RuntimeError("the sandbox did not start")


def cgroups(pid: int) -> list[str]:
    """The cgroup.procs files of the cgroups PID is in and this process is not (v1 or v2)."""
    points: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _, options = right.split()[:3]
            if fstype == "cgroup2":
                points.setdefault("", left.split()[4])
            elif fstype == "cgroup":
                for option in options.split(","):
                    points.setdefault(option, left.split()[4])
    with open("/proc/self/cgroup") as f:
        mine = set(f.read().splitlines())
    found = []
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f.read().splitlines():
            _, controllers, path = line.split(":", 2)
            point = points.get(controllers.split(",")[0])
            if line not in mine and point is not None:
                found.append(f"{point}{path.rstrip('/')}/cgroup.procs")
    return found


def fill_home(home: str, files: list[tuple[str, bytes | None]]) -> None:
    """Write what the imports left in the zygote's home into the kernel's own."""
    for rel, data in files:
        path = os.path.join(home, rel)
        if data is None:
            os.makedirs(path, exist_ok=True)
        elif not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(data)


def drop_privileges(request: dict[str, Any], cap_last: int) -> None:
    """Become the sandbox's user as setpriv does for a kernel bubblewrap starts: its uid, no
    supplementary group, no capability, no new privileges, its seccomp filter."""
    uid = int(request["uid"])
    for cap in range(cap_last + 1):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    header, data = _Header(0x20080522, 0), (_Data * 2)()
    check(libc.capset(ctypes.byref(header), data), "capset")  # no capability left, inheritable too
    check(libc.prctl(47, 4, 0, 0, 0), "ambient capabilities")  # PR_CAP_AMBIENT_CLEAR_ALL
    libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE, as after exec: /proc/self stays the kernel's own
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the kernel goes with its midwife
    check(libc.prctl(38, 1, 0, 0, 0), "no_new_privs")
    program = bytes.fromhex(request.get("seccomp", ""))
    if program:
        buf = ctypes.create_string_buffer(program, len(program))
        prog = _Prog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
        check(libc.prctl(22, 2, ctypes.byref(prog), 0, 0), "seccomp")  # PR_SET_SECCOMP, FILTER


def kernel(request: dict[str, Any], fds: dict[int, int], root: int, warm: Warm) -> None:
    """In the grandchild: enter the sandbox, become its user, run ARGV's module (ipykernel).
    Returns only by an exception."""
    for kind in (NEWNET, NEWIPC, NEWUTS, NEWCGROUP, NEWNS):
        if kind in fds:
            check(libc.setns(fds[kind], kind), "setns")
    os.fchdir(root)
    os.chroot(".")
    os.chdir(request["cwd"])
    os.setsid()
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND) if request.get("log") else -1
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(log if log >= 0 else null, 2)
    os.closerange(3, max(1 << 16, os.sysconf("SC_OPEN_MAX")))  # nothing of the zygote's
    drop_privileges(request, warm.cap_last)
    os.environ.clear()
    os.environ.update({**request["env"], **warm.added, "PWD": request["cwd"]})
    tempfile.tempdir = None  # found again from the kernel's own environment, as a cold one does
    with contextlib.suppress(OSError):
        fill_home(os.environ["HOME"], warm.home)
    apply_limits()  # the umask and resource limits, as a cold kernel's launcher applies them
    for name in [m for m in sys.modules if m == "grader" or m.startswith("grader.")]:
        del sys.modules[name]  # what a cold kernel cannot import, it does not find imported
    argv = request["argv"]
    sys.argv = list(argv)
    gc.enable()
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


def _tell(request: dict[str, Any], why: str) -> None:
    """Write WHY to the request's log, or to stderr where it has none."""
    if request.get("log"):
        with open(request["log"], "a") as f:
            f.write(why)
    else:
        os.write(2, why.encode())


def midwife(server: Server, request: dict[str, Any], warm: Warm, placeholder: str) -> int:
    """In the zygote's child: join the sandbox's PID namespace, fork the kernel into it, wait
    for it, then kill the sandbox; the exit status."""
    try:
        libc.prctl(1, signal.SIGKILL)
        target = sandbox_process(int(request["sandbox"]), placeholder)
        fds = {}
        for kind, name in _NAMESPACES.items():
            path = f"/proc/{target}/ns/{name}"
            if os.readlink(path) != os.readlink(f"/proc/self/ns/{name}"):
                fds[kind] = os.open(path, os.O_RDONLY)
        if NEWPID not in fds or NEWNS not in fds:
            raise RuntimeError("the sandbox has no namespaces of its own")
        root = os.open(f"/proc/{target}/root", os.O_RDONLY | os.O_DIRECTORY)
        for procs in cgroups(target):  # the run's memory, process and CPU limits
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        check(libc.setns(fds[NEWPID], NEWPID), "setns pid")

        def grandchild() -> int:
            try:
                kernel(request, fds, root, warm)
            except SystemExit:
                raise  # the kernel's end: its status
            except BaseException:  # noqa: BLE001 - said in the kernel's log
                _tell(request, "the zygote's kernel did not start:\n" + traceback.format_exc())
            return 70

        pid = server.fork(grandchild, failed=70)
        os.waitpid(pid, 0)
        return 0
    except BaseException:  # noqa: BLE001 - said in the kernel's log
        with contextlib.suppress(Exception):
            with open(request["log"], "a") as f:
                f.write("the zygote could not fork a kernel:\n" + traceback.format_exc())
        return 1
    finally:
        with contextlib.suppress(Exception):
            os.kill(int(request["sandbox"]), signal.SIGKILL)


def main(settings_json: str) -> int:
    """Serve as the zygote SETTINGS_JSON describes until stdin closes."""
    settings = json.loads(settings_json)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the zygote goes with the grader
    if os.getppid() != int(settings["parent"]):
        return 1
    server = Server()
    try:
        private_home()
    except Exception as exc:  # noqa: BLE001 - said to the grader, which starts kernels cold
        server.error(exc)
        return 1
    warm = warm_up(list(settings["modules"]), list(settings["startup"]))
    threads = threads_left()
    if threads != 1:  # forking a process with threads could copy a held lock
        server.send({"error": f"the zygote has {threads} threads after its imports"})
        return 1
    libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no kernel can read or trace the zygote
    server.ready(warm.imported)
    for request in server.requests():
        server.reap()  # the midwives that are done
        try:
            job = request["fork"]
            server.send({"forked": server.fork(functools.partial(
                midwife, server, job, warm, str(settings["placeholder"])))})
        except Exception as exc:  # noqa: BLE001 - the grader starts that kernel cold
            server.error(exc)
    return 0
