"""The kernel zygote: one process per batch, shared by its worker slots, that imports the
students' heavy libraries (NumPy, TensorFlow, Keras, matplotlib, ipykernel) once, then forks
each student's kernel into that student's own sandbox, so that no kernel pays those imports
again.

Why it is safe. The sandbox is still built by bubblewrap for each student as before (its own
mount, PID, network, IPC, UTS and cgroup namespaces, private /tmp and home, the student's files
read-only), around a placeholder process. The zygote forks a helper (the midwife), which joins
the sandbox's PID namespace and forks the kernel; the kernel joins the sandbox's other
namespaces, takes its root, then drops to the sandbox's credentials exactly as setpriv does for
a kernel that bubblewrap starts (its user, no groups, no capabilities, no new privileges), loads
the same seccomp filter, sets the same resource limits and umask, closes every descriptor of the
zygote and only then runs ipykernel. When the kernel ends, the midwife kills the sandbox.

The zygote runs no student code and holds nothing of anyone: it is a fresh interpreter with the
kernels' environment that imported libraries, in a mount namespace of its own where the home is
an empty tmpfs (so the libraries' caches and temporary files land nowhere on the host). Each kernel starts
from that state, never from another student's: kernels are forked from the zygote, never from
each other, and a kernel is never reused. What a student's code sees is a cold kernel's world
with those libraries already in sys.modules, as the warm-up of grader.grading.execute gave before.

Only a root grader forks kernels this way (joining a sandbox's namespaces and dropping to its
user needs privileges there); an unprivileged grader, a GPU kernel or any failure of the zygote
falls back to starting the kernel cold, which costs time and never a student's grade.

The batch's warm checkers (grader.checker.server) are forked the same way, each into a checker's
sandbox: the check libraries are the kernels' own (the same interpreter), imported once for both.
A checker takes the pipes the grader made for it from its sandbox's placeholder, runs as the
checker's user with the kernels' groups, and gets the trusted environment whole. What it shares
with the kernels is only what every fork of the zygote shares: the imported modules' state (no
student's), the address layout and the interpreter's hash secret. The checks read a student's
values as JSON or .npy without pickle, capped in size, and time-limited, so knowing those gives a
student nothing the checker hands out.

`grader run` starts its batch's zygote before it imports the rest of itself (`prestart`, from
grader.cli.early); the batch takes that one over where it is the very zygote it asks for (same
interpreter, environment and libraries), and stops it otherwise.

The protocol, one JSON object a line. The grader writes on stdin
  {"fork": {"sandbox": PID, "argv": [...], "env": {...}, "uid": N, "log": PATH, "seccomp": HEX,
            "cwd": PATH, "groups": [...], "stdio": [...]}}
and the zygote answers {"forked": PID} (the midwife) or {"error": why}. It writes
{"ready": [modules]} once, after its imports. Closing stdin stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from grader.isolation.launch import APPLY_LIMITS

# Runs as `python -c _SERVER PARENT_PID MODULES_JSON` with the kernels' environment, as root.
_SERVER = r'''
import contextlib, ctypes, gc, json, os, signal, sys
gc.disable()  # the imports' objects are frozen before any fork (see the gc module's docs)
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the zygote goes with the grader
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET = (
    0x20000, 0x2000000, 0x4000000, 0x8000000, 0x10000000, 0x20000000, 0x40000000)
out = os.fdopen(os.dup(1), "w")
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # what the libraries print never reaches the grader

def check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")

def private_home():
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
    os.makedirs(home + "/.zygote-tmp", mode=0o700)
    os.environ["TMPDIR"] = home + "/.zygote-tmp"
    os.chdir(home)

try:
    private_home()
except Exception as exc:
    out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
    out.flush()
    sys.exit(1)
before = dict(os.environ)
import importlib.util
done = []
for name in json.loads(sys.argv[2]):
    if importlib.util.find_spec(name.partition(".")[0]) is not None:
        __import__(name)
        done.append(name)
import runpy, ipykernel.kernelapp, ipykernel_launcher  # noqa: E401
for name in __KERNEL_STARTUP__:  # what every kernel imports as it starts, once here
    with contextlib.suppress(Exception):
        __import__(name)
# What the imports left, which a cold kernel's imports leave too: variables they set, and the
# files they wrote in the home (Keras' keras.json, matplotlib's font list). Each kernel gets them.
ADDED = {k: v for k, v in os.environ.items() if before.get(k) != v}
HOME_FILES = []
for top, dirs, files in os.walk(os.environ["HOME"]):
    dirs[:] = [d for d in dirs if d != ".zygote-tmp"]
    rel = os.path.relpath(top, os.environ["HOME"])
    HOME_FILES += [(os.path.normpath(os.path.join(rel, d)), None) for d in sorted(dirs)]
    for f in sorted(files):
        with open(os.path.join(top, f), "rb") as handle:
            HOME_FILES.append((os.path.normpath(os.path.join(rel, f)), handle.read(16 << 20)))
threads = len(os.listdir("/proc/self/task"))
if threads != 1:  # OpenBLAS' pool (more than one thread a kernel): it stops itself on fork
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    threads = len(os.listdir("/proc/self/task"))
if threads != 1:  # forking a process with threads could copy a held lock
    out.write(json.dumps({"error": f"the zygote has {threads} threads after its imports"}) + "\n")
    out.flush()
    sys.exit(1)
CAP_LAST = int(open("/proc/sys/kernel/cap_last_cap").read())


__APPLY_LIMITS__

class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


class _Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _sandbox_process(bwrap):
    """The placeholder bubblewrap runs in the sandbox (its init's child), once it has begun."""
    import time
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{bwrap}/task/{bwrap}/children") as f:
                for init in f.read().split():
                    with open(f"/proc/{init}/task/{init}/children") as g:
                        for pid in g.read().split():
                            with open(f"/proc/{pid}/comm") as h:
                                if h.read().strip() == __PLACEHOLDER__:
                                    return int(pid)
        except OSError:
            pass
        time.sleep(0.002)
    raise RuntimeError("the sandbox did not start")


def _cgroups(pid):
    """The cgroup.procs files of the cgroups PID is in and this process is not (v1 or v2)."""
    points = {}
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


def _fill_home(home):
    """Write what the imports left in the zygote's home into the kernel's own."""
    for rel, data in HOME_FILES:
        path = os.path.join(home, rel)
        if data is None:
            os.makedirs(path, exist_ok=True)
        elif not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(data)


def kernel(request, fds, root, stdio):
    """In the grandchild: enter the sandbox, become its user, run ARGV's module (ipykernel, or
    for a checker the check server). Returns only by an exception."""
    for kind in (NEWNET, NEWIPC, NEWUTS, NEWCGROUP, NEWNS):
        if kind in fds:
            check(libc.setns(fds[kind], kind), "setns")
    os.fchdir(root)
    os.chroot(".")
    os.chdir(request["cwd"])
    os.setsid()
    if stdio:  # a checker: the pipes to the grader, taken from the placeholder
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
    else:
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND) if request.get("log") else -1
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(log if log >= 0 else null, 2)
    os.closerange(3, max(1 << 16, os.sysconf("SC_OPEN_MAX")))  # nothing of the zygote's
    uid = int(request["uid"])
    for cap in range(CAP_LAST + 1):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP
    os.setgroups([int(g) for g in request.get("groups", ())])
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
    os.environ.clear()
    if stdio:  # the trusted environment, whole: nothing the kernels' imports set wins over it
        os.environ.update({**ADDED, **request["env"], "PWD": request["cwd"]})
    else:
        os.environ.update({**request["env"], **ADDED, "PWD": request["cwd"]})
    import tempfile
    tempfile.tempdir = None  # found again from the kernel's own environment, as a cold one does
    try:
        _fill_home(os.environ["HOME"])
    except OSError:
        pass
    apply_limits()  # the umask and resource limits, as a cold kernel's launcher applies them
    argv = request["argv"]
    sys.argv = list(argv)
    gc.enable()
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


def midwife(request):
    """In the zygote's child: join the sandbox's PID namespace, fork the kernel into it, wait
    for it, then kill the sandbox. Never returns."""
    code = 1
    try:
        libc.prctl(1, signal.SIGKILL)
        bwrap = int(request["sandbox"])
        target = _sandbox_process(bwrap)
        names = {NEWPID: "pid", NEWNET: "net", NEWIPC: "ipc", NEWUTS: "uts", NEWCGROUP: "cgroup",
                 NEWNS: "mnt"}
        fds = {}
        for kind, name in names.items():
            path = f"/proc/{target}/ns/{name}"
            if os.readlink(path) != os.readlink(f"/proc/self/ns/{name}"):
                fds[kind] = os.open(path, os.O_RDONLY)
        if NEWPID not in fds or NEWNS not in fds:
            raise RuntimeError("the sandbox has no namespaces of its own")
        root = os.open(f"/proc/{target}/root", os.O_RDONLY | os.O_DIRECTORY)
        # a checker's stdin, stdout and stderr: the placeholder's descriptors STDIO, opened
        # again (read, write, write) from the pipes the grader made for it
        stdio = [os.open(f"/proc/{target}/fd/{int(fd)}", os.O_RDONLY if i == 0 else os.O_WRONLY)
                 for i, fd in enumerate(request.get("stdio", ()))]
        for procs in _cgroups(target):  # the run's memory and process limits
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        check(libc.setns(fds[NEWPID], NEWPID), "setns pid")
        pid = os.fork()
        if pid == 0:
            status = 70
            try:
                kernel(request, fds, root, stdio)
            except SystemExit as exc:  # the check server's end
                status = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            except BaseException:
                import traceback
                why = "the zygote's kernel did not start:\n" + traceback.format_exc()
                if request.get("log"):
                    with open(request["log"], "a") as f:
                        f.write(why)
                else:
                    os.write(2, why.encode())
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(status)
        for fd in stdio:
            os.close(fd)
        os.waitpid(pid, 0)
        code = 0
    except BaseException:
        import traceback
        with contextlib.suppress(Exception):
            with open(request["log"], "a") as f:
                f.write("the zygote could not fork a kernel:\n" + traceback.format_exc())
    finally:
        with contextlib.suppress(Exception):
            os.kill(int(request["sandbox"]), signal.SIGKILL)
        os._exit(code)


libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no kernel can read or trace the zygote
gc.freeze()  # no kernel's collections scan (and so copy) the imports' objects
out.write(json.dumps({"ready": done}) + "\n")
out.flush()
for line in sys.stdin:
    while True:  # reap the midwives that are done
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    try:
        request = json.loads(line)["fork"]
        pid = os.fork()
        if pid == 0:
            sys.stdin.close()
            out.close()
            midwife(request)
        out.write(json.dumps({"forked": pid}) + "\n")
    except Exception as exc:
        out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
    out.flush()
'''

# What ipykernel imports as each kernel starts (its shell, its debugger and the debugpy it
# loads, the history's sqlite3, ...): a cold kernel imports them too, a forked one finds them
# imported. A tenth of a second of each kernel's start.
KERNEL_STARTUP = ("ipykernel.ipkernel", "ipykernel.zmqshell", "ipykernel.debugger",
                  "IPython.core.debugger", "IPython.core.completerlib", "IPython.core.logger",
                  "IPython.core.oinspect", "IPython.extensions.storemagic",
                  "IPython.utils.wildcard", "faulthandler", "sqlite3", "psutil",
                  "tornado.platform.asyncio", "tornado.queues")
# What bubblewrap runs in a sandbox the zygote fills: it reads its stdin, the grader's lifeline
# (see execute._KernelManager), until the grader closes it or goes.
PLACEHOLDER = ["/usr/bin/cat"]

_SERVER = _SERVER.replace("__APPLY_LIMITS__", APPLY_LIMITS).replace(
    "__KERNEL_STARTUP__", repr(KERNEL_STARTUP)).replace(
    "__PLACEHOLDER__", repr(os.path.basename(PLACEHOLDER[0])))


class ZygoteError(RuntimeError):
    """The zygote could not start, or could not fork a kernel (the kernel then starts cold)."""


def usable(*, sandboxed: bool, gpu: bool) -> bool:
    """Whether kernels may be forked from a zygote: sandboxed, by a root grader, on the CPU."""
    return sandboxed and not gpu and os.geteuid() == 0 and sys.platform == "linux" \
        and os.path.exists(PLACEHOLDER[0])


class Zygote:
    """The grader's side of one zygote. Its calls block; `fork` may come from any thread."""

    def __init__(self, python: str, env: dict[str, str], modules: list[str]):
        self.python, self.env, self.modules = python, env, modules
        self.process: subprocess.Popen[bytes] | None = None
        self.problem = ""  # why it is not there, once it failed
        self._lock = threading.Lock()

    @property
    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """What tells one zygote from another: its interpreter and its environment."""
        return _key(self.python, self.env)

    def start(self, timeout: float = 180.0) -> bool:
        """Start it and wait for its imports; False (with `problem`) if it could not."""
        return self.spawn() and self.wait_ready(timeout)

    def spawn(self) -> bool:
        """Start its process, which imports while the caller goes on; it dies with the calling
        thread (PR_SET_PDEATHSIG). False (with `problem`) if it could not."""
        try:
            self.process = subprocess.Popen(
                [self.python, "-c", _SERVER, str(os.getpid()), json.dumps(self.modules)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                env=self.env, start_new_session=True)
        except Exception as exc:  # noqa: BLE001 - any failure: kernels start cold
            self.fail(f"the zygote did not start: {exc}")
            return False
        return True

    def wait_ready(self, timeout: float = 180.0) -> bool:
        """Wait for its imports; False (with `problem`) if it did not make them."""
        if self.problem:
            return False
        try:
            answer = self._answer(timeout)
        except Exception as exc:  # noqa: BLE001 - any failure: kernels start cold
            self.fail(f"the zygote did not start: {exc}")
            return False
        if "ready" not in answer:
            self.fail(f"the zygote did not start: {answer.get('error', answer)}")
            return False
        return True

    def _answer(self, timeout: float) -> dict[str, Any]:
        """Its next line, within TIMEOUT seconds."""
        assert self.process is not None and self.process.stdout is not None
        stream = self.process.stdout
        ready, _, _ = select.select([stream], [], [], timeout)
        if not ready:
            raise ZygoteError(f"no answer within {timeout:.0f} s")
        line = stream.readline()
        if not line:
            raise ZygoteError(f"the zygote exited ({self.process.poll()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None and not self.problem

    async def fork(self, *, sandbox: int, argv: list[str], env: dict[str, str], uid: int,
                   log: str, seccomp: bytes, cwd: str, groups: tuple[int, ...] = (),
                   stdio: tuple[int, int, int] | None = None) -> int:
        """Fork a kernel running ARGV into the sandbox bubblewrap runs as SANDBOX, as UID (with
        supplementary GROUPS) in CWD with ENV, its stderr to LOG; the midwife's pid. With STDIO,
        a checker: its stdin, stdout and stderr are the placeholder's descriptors STDIO, and ENV
        is its whole environment. Raises ZygoteError."""
        request = {"fork": {"sandbox": sandbox, "argv": argv, "env": env, "uid": uid, "log": log,
                            "seccomp": seccomp.hex(), "cwd": cwd, "groups": list(groups),
                            "stdio": list(stdio or ())}}
        return await asyncio.to_thread(self._fork, json.dumps(request).encode() + b"\n")

    def _fork(self, line: bytes) -> int:
        with self._lock:
            if not self.alive:
                raise ZygoteError(self.problem or "the zygote is not running")
            try:
                assert self.process is not None and self.process.stdin is not None
                self.process.stdin.write(line)
                self.process.stdin.flush()
                answer = self._answer(20)
            except Exception as exc:  # noqa: BLE001
                self.fail(f"the zygote stopped answering: {exc}")
                raise ZygoteError(self.problem) from None
        if "forked" not in answer:
            raise ZygoteError(str(answer.get("error", answer)))
        return int(answer["forked"])

    def fail(self, problem: str) -> None:
        self.problem = self.problem or problem
        self.close()

    def close(self) -> None:
        """Stop it (its midwives and kernels end with their sandboxes)."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(Exception):
            process.kill()
        with contextlib.suppress(Exception):
            process.wait(timeout=10)
        for stream in (process.stdin, process.stdout):
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.close()
        if not self.problem:
            self.problem = "the zygote was stopped"


def _key(python: str, env: dict[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return python, tuple(sorted(env.items()))


# The zygote `prestart` started before the batch asked for one (grader.cli.early), until a batch
# takes it (Zygotes.get: where it is the one asked for) or lets it go.
_early: Zygote | None = None
_early_lock = threading.Lock()


def prestart(python: str, env: dict[str, str], modules: list[str]) -> Zygote | None:
    """Start the zygote for PYTHON, ENV and MODULES now, from the process's main thread (it
    lives as long as the process), before the batch that will ask for it exists: it imports
    while the grader imports the rest of itself. The batch's Zygotes takes it where it asks for
    that very zygote, and stops it otherwise (as it stops when the grader exits)."""
    global _early
    if threading.current_thread() is not threading.main_thread():
        return None  # a zygote dies with the thread that started it
    made = Zygote(python, env, modules)
    if not made.spawn():
        return None
    with _early_lock:
        old, _early = _early, made
    if old is not None:
        old.close()
    return made


def _take_early() -> Zygote | None:
    global _early
    with _early_lock:
        made, _early = _early, None
    return made


class Zygotes:
    """A batch's zygotes, shared by its slots (each in a thread of its own): one for each
    interpreter and kernel environment, started by the first slot that asks for it, or taken
    over from `prestart` where that started the very one asked for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: dict[tuple[str, tuple[tuple[str, str], ...]], Zygote | None] = {}
        # Each zygote dies with the thread that started it (PR_SET_PDEATHSIG is a thread's):
        # this one lives as long as the batch, where a slot's threads end with the slot.
        self._starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grader-zygotes")

    def get(self, python: str, env: dict[str, str],
            modules: Callable[[], list[str]]) -> Zygote | None:
        """The zygote for PYTHON and ENV, importing what MODULES() says where it is started now;
        None where it could not start. Blocks while it starts."""
        key = _key(python, env)
        with self._lock:
            if key not in self._made:
                made = Zygote(python, env, modules())
                early = _take_early()
                if early is not None and (early.key, early.modules) == (made.key, made.modules):
                    made, wait = early, early.wait_ready  # it has imported for a while already
                else:
                    if early is not None:
                        early.close()
                    wait = made.start
                self._made[key] = made if self._starter.submit(wait).result() else None
            return self._made[key]

    def close(self) -> None:
        early = _take_early()  # one that no slot asked for
        if early is not None:
            early.close()
        with self._lock:
            for made in self._made.values():
                if made is not None:
                    made.close()
            self._made.clear()
        self._starter.shutdown()
