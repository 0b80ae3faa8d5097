"""Contain a student's kernel with bubblewrap: no network, a private filesystem view, an
unprivileged user, resource limits, and every process gone when it ends.

Inside, the kernel sees the Python it runs on (read-only), the system's /usr (read-only), a
size-capped private working directory /home/student/work holding the notebook and the student's
data (both read-only), a private size-capped /tmp, and one small folder shared with the grader
(the kernel's sockets and the exchange folder), at the same path as outside. Nothing else of
the machine is there: not the checks, the hidden data, the gradebook, the reports, the other
submissions, the course folder or anyone's home.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .config import Limits

HOME = "/home/student"
WORKDIR = f"{HOME}/work"
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "fonts",
        "nsswitch.conf", "mime.types")


@dataclass(frozen=True)
class Spec:
    """What one sandbox holds and may use."""

    files: dict[str, Path]  # name in the working directory -> host file or folder (read-only)
    shared: Path  # host folder bound read-write at the same path (sockets, exchange)
    limits: Limits
    gpus: str = ""  # CUDA_VISIBLE_DEVICES of the kernel: which /dev/nvidiaN to let in
    uid: int = 65534  # the unprivileged user the kernel runs as


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


def _python_roots() -> list[str]:
    """Folders the interpreter and its packages live in: the venv and the Python it was made from.

    Only these: never sys.path as a whole, which may hold the working directory or the course."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(sys.executable), os.path.dirname(os.path.realpath(sys.executable))}
    roots |= {os.path.realpath(r) for r in roots}
    ordered = sorted(r for r in roots if os.path.isdir(r) and r != "/" and not r.startswith("/usr/"))
    return [r for i, r in enumerate(ordered) if not any(r.startswith(o + "/") for o in ordered[:i])]


def _ancestors(folder: str) -> list[str]:
    """The folders above FOLDER, outermost first (/root, /root/.pyenv, ...)."""
    parts = Path(folder).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _gpu_devices(gpus: str) -> list[str]:
    if not gpus:
        return []
    wanted = [f"/dev/nvidia{g}" for g in gpus.split(",") if g.strip().isdigit()]
    common = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", *glob.glob("/dev/nvidia-caps/*")]
    return [d for d in [*wanted, *common] if os.path.exists(d)]


def rlimits(limits: Limits) -> str:
    """The resource limits the kernel's launcher applies to itself, as JSON."""
    memory = limits.memory_mb * 1024 * 1024
    return json.dumps({
        "AS": memory, "NPROC": limits.processes, "NOFILE": limits.open_files,
        "FSIZE": limits.disk_mb * 1024 * 1024, "CORE": 0,
        "CPU": int(limits.total_seconds * max(1, os.cpu_count() or 1) + 60),
    })


def command(argv: list[str], spec: Spec) -> list[str]:
    """ARGV wrapped in a bubblewrap sandbox as SPEC says."""
    path = bwrap()
    if path is None:
        raise RuntimeError("bubblewrap cannot make a sandbox on this machine")
    disk = str(spec.limits.disk_mb * 1024 * 1024)
    root = os.geteuid() == 0
    args = [path, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    if not root:  # an unprivileged grader gets a user namespace, with its own user as SPEC.uid
        args += ["--unshare-user", "--uid", str(spec.uid), "--gid", str(spec.uid)]
    args += ["--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev"]
    for link in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        target = os.path.realpath(f"/{link}")
        if os.path.islink(f"/{link}") and target.startswith("/usr/"):
            args += ["--symlink", target, f"/{link}"]
    for name in _ETC:
        if os.path.exists(f"/etc/{name}"):
            args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    made: set[str] = set()
    for folder in _python_roots():
        for above in _ancestors(folder):  # traversable, even where the host's are not (/root)
            if above not in made:
                made.add(above)
                args += ["--perms", "0755", "--dir", above]
        args += ["--ro-bind", folder, folder]
    args += ["--perms", "01777", "--size", disk, "--tmpfs", "/tmp"]
    args += ["--perms", "01777", "--size", disk, "--tmpfs", HOME]
    args += ["--perms", "01777", "--dir", WORKDIR]
    for name, source in sorted(spec.files.items()):
        args += ["--ro-bind", str(source), f"{WORKDIR}/{name}"]
    for above in _ancestors(str(spec.shared)):
        if above not in made and above != "/tmp":
            args += ["--perms", "0755", "--dir", above]
    args += ["--bind", str(spec.shared), str(spec.shared)]
    for device in _gpu_devices(spec.gpus):
        args += ["--dev-bind", device, device]
    if spec.gpus and os.path.isdir("/sys"):
        args += ["--ro-bind", "/sys", "/sys"]  # the CUDA runtime reads the PCI topology there
    args += ["--chdir", WORKDIR, "--setenv", "HOME", HOME]
    if root:  # a real unprivileged user, so that the process limit counts this kernel alone
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        args += ["--", setpriv, f"--reuid={spec.uid}", f"--regid={spec.uid}", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    else:
        args += ["--"]
    return [*args, *argv]


_CLAIMS: list[object] = []  # open lock files: a claim lasts as long as this process


def claim_user(first: int = 61000, last: int = 64999) -> int:
    """A user id no other grader on this machine is using now, for one kernel slot.

    Each claim holds an flock on /tmp/grader-users/UID.lock until this process ends (killed or
    not), so two graders at once never share a user, its process limit, or `reap`.
    """
    import fcntl

    folder = Path(tempfile.gettempdir()) / "grader-users"
    folder.mkdir(mode=0o700, exist_ok=True)
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


def reap(uid: int, timeout: float = 10.0) -> None:
    """Kill every process of UID and wait until none is left, so the next kernel to run as UID
    starts with its whole process limit (processes of a torn-down sandbox take a moment to go)."""
    import signal
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = _pids_of(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)


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
                    uid: int, groups: tuple[int, ...] = (), tmp_mb: int = 4096) -> list[str]:
    """ARGV in a bubblewrap sandbox for the trusted checks: no network, the Python and /usr
    read-only, READONLY and WRITABLE folders at their own paths, a private /tmp, and for a root
    grader the unprivileged user UID (with supplementary GROUPS) instead of root."""
    path = bwrap()
    if path is None:
        raise RuntimeError("bubblewrap cannot make a sandbox on this machine")
    root = os.geteuid() == 0
    args = [path, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--hostname", "checker"]
    if not root:
        args += ["--unshare-user"]
    args += ["--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev"]
    for link in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        target = os.path.realpath(f"/{link}")
        if os.path.islink(f"/{link}") and target.startswith("/usr/"):
            args += ["--symlink", target, f"/{link}"]
    for name in _ETC:
        if os.path.exists(f"/etc/{name}"):
            args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    args += ["--perms", "01777", "--size", str(tmp_mb * 1024 * 1024), "--tmpfs", "/tmp"]
    made: set[str] = {"/tmp"}
    bound: list[str] = []
    folders = [(r, "--ro-bind") for r in _python_roots()]
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
    return [*args, *argv]
