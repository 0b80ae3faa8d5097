"""One submission's private run folder on the host, and what lives and dies with it.

A run folder is held by an flock for its whole life, so that the next grader can tell the folders
of graders that died (SIGKILL, a crash, a reboot of the container) from those of graders still
running beside it, and remove only the former. While sandboxed it also carries:

- a size-capped tmpfs on its `shared` folder (the kernel's sockets and the exchange), the only
  host folder a kernel may write to, so that it cannot fill the host's disk beyond `disk_mb`.
  Mounting needs root; an unprivileged grader keeps a plain folder, bounded only by the kernel's
  RLIMIT_FSIZE per file;
- a memory and a pids cgroup (v1 controllers, or v2 where both are delegated), so that memory no
  process maps (memfd, SysV shm, tmpfs files) counts against `memory_mb` and every process and
  thread against `processes`. Where no cgroup can be made, RLIMIT_AS and RLIMIT_NPROC alone
  apply, as before;
- a CPU quota (v1 `cpu.cfs_quota_us`, v2 `cpu.max`) of the folder's `cpus` cores, its slot's
  share of the machine, so that a notebook that starts sixty busy processes slows itself and
  no student graded beside it. Where the cpu controller is missing, the run goes without;
- a tmpfs holding copies of the notebook and the student's data, bound from there into the
  sandbox, so that its /proc/self/mountinfo names no host folder for them (root only).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

from grader.model.config import Limits
from grader.model.errors import WorkRootTooDeep

PREFIX = "grader-"
_NAME = re.compile(r"grader-[a-z0-9_]{8}")  # what tempfile.mkdtemp makes of PREFIX, nothing else
_LOCK = ".lock"
_CGROUPS = ".cgroups"  # the run's cgroup folders, one a line, for whoever removes the run
LOCKLESS_AGE = 24 * 3600.0  # a folder without a lock (an older grader's) is stale after this
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_CPU_PERIOD_US = 100_000  # the scheduler's accounting period for a CPU quota (its default)
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MNT_DETACH = 2, 4, 8, 2
_swept: set[Path] = set()


class RunFolder:
    """A run folder this process holds; `remove` undoes everything it made."""

    def __init__(self, path: Path, lock: int, cpus: float = 0.0):
        self.path = path
        self._lock = lock
        self.cpus = cpus  # the cores its kernel may use at most (its CPU quota); 0: no quota
        self.capped = False  # the shared folder is a size-capped tmpfs
        self.cgroups: list[Path] = []

    @property
    def shared(self) -> Path:
        """The folder shared with the sandbox (sockets, exchange)."""
        return self.path / "shared"

    def share(self, *, disk_mb: int | None = None) -> Path:
        """Make the shared folder; with DISK_MB, as a tmpfs of that size when this is root."""
        self.shared.mkdir(mode=0o700)
        if disk_mb is not None and os.geteuid() == 0:
            options = f"size={disk_mb}m,nr_inodes={max(1024, disk_mb * 16)},mode=0700"
            self.capped = _mount_tmpfs(self.shared, options)
        return self.shared

    def private_files(self, files: dict[str, Path]) -> dict[str, Path]:
        """FILES copied onto a tmpfs of the run's own where this is root, so that the sandbox
        binds them without a host path showing in its mountinfo; else FILES as they are."""
        if os.geteuid() != 0:
            return files
        folder = self.path / "files"
        folder.mkdir(mode=0o755)
        size = sum(_size(p) for p in files.values()) + (1 << 20)
        if not _mount_tmpfs(folder, f"size={size},mode=0755"):
            return files
        copies = {name: folder / name for name in files}
        for name, source in files.items():
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, copies[name])
        return copies

    def confine(self, limits: Limits) -> tuple[Path, ...]:
        """Make the run's cgroups (memory, processes and, where `cpus` is set, a CPU quota);
        return the cgroup.procs files a sandbox joins (maybe none)."""
        return self._confine(_make_cgroups(self.path.name, limits, self.cpus))

    def confine_memory(self, memory_mb: int) -> tuple[Path, ...]:
        """Make one memory cgroup of MEMORY_MB for what runs in this folder (a slot's checker);
        return the cgroup.procs files to join (none where it cannot be made)."""
        return self._confine(_memory_cgroup(self.path.name, memory_mb))

    def _confine(self, groups: list[Path]) -> tuple[Path, ...]:
        self.cgroups = groups
        (self.path / _CGROUPS).write_text("".join(f"{c}\n" for c in self.cgroups))
        return tuple(c / "cgroup.procs" for c in self.cgroups)

    def remove(self) -> None:
        """Kill what is left in the run's cgroups, unmount, delete the folder, let go of it."""
        _clean(self.path)
        os.close(self._lock)


# A kernel's sockets lie at WORK_ROOT/grader-*/grader-*/shared/sock/kernel-N (a slot's folder,
# then the run's), and a Unix socket's path holds 107 bytes at most.
_SOCKET_SUFFIX = len("/grader-12345678/grader-12345678/shared/sock/kernel-10")
_SOCKET_PATH_MAX = 107


def check_room(work_root: Path | None = None) -> None:
    """WorkRootTooDeep where the kernels' sockets under WORK_ROOT would not fit in a Unix
    socket's path (every kernel would fail to start)."""
    root = Path(work_root or tempfile.gettempdir()).absolute()
    room = _SOCKET_PATH_MAX - _SOCKET_SUFFIX
    if len(os.fsencode(root)) > room:
        raise WorkRootTooDeep(
            f"the folder for the kernels' run folders, {root}, is {len(os.fsencode(root))} bytes"
            f" long: a kernel's sockets under it would not fit in a Unix socket's path; use one"
            f" of at most {room} bytes (set TMPDIR, e.g. TMPDIR=/tmp)")


def make(work_root: Path | None = None, *, cpus: float = 0.0) -> RunFolder:
    """A fresh, locked run folder under WORK_ROOT (the system's temporary folder by default),
    whose kernel may use CPUS cores at most (0: no quota); the first one a process makes also
    removes the folders dead graders left there."""
    root = Path(work_root or tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    if root not in _swept:
        _swept.add(root)
        remove_stale(root)
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=root))
    # Locked before it bears its name, so no sweeper can ever take the lock of a live folder.
    lock = os.open(path / ".lock-new", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    os.rename(path / ".lock-new", path / _LOCK)
    return RunFolder(path, lock, cpus)


def remove_stale(work_root: Path) -> list[Path]:
    """Remove the run folders under WORK_ROOT whose grader is gone; return them.

    A folder whose lock another process holds is left alone. One without a lock (made by an
    older grader, which did not lock) goes only once nothing in it changed for LOCKLESS_AGE."""
    removed = []
    for path in sorted(work_root.glob(PREFIX + "*")):
        if not _NAME.fullmatch(path.name) or path.is_symlink() or not path.is_dir():
            continue
        try:
            lock = os.open(path / _LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            if _idle_for(path) > LOCKLESS_AGE:
                _clean(path)
                removed.append(path)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock)  # its grader is alive
            continue
        _clean(path)
        removed.append(path)
        os.close(lock)
    return removed


def _idle_for(path: Path) -> float:
    """Seconds since anything directly in PATH, or PATH itself, last changed (0 if it just went:
    another grader is removing it)."""
    try:
        times = [path.stat().st_mtime]
        times += [entry.stat(follow_symlinks=False).st_mtime for entry in os.scandir(path)]
    except OSError:
        return 0.0
    return time.time() - max(times)


def _clean(path: Path) -> None:
    """Undo a run folder: its cgroups, its tmpfs, its files."""
    try:
        names = (path / _CGROUPS).read_text().split("\n")
    except OSError:
        names = []
    for name in filter(None, names):
        group = Path(name)
        if group.is_relative_to(_CGROUP_ROOT) and group.name == path.name:  # never another's
            _remove_cgroup(group)
    for mount in (path / "shared", path / "files"):
        if os.path.ismount(mount):
            _umount(mount)
    if any(path.glob(PREFIX + "*")):  # a worker slot's folder, holding run folders of its own
        remove_stale(path)
    if is_mount(path):  # the slot's shared mount (grader.grading.warmcheck.CheckerSlot)
        _umount(path)
    shutil.rmtree(path, ignore_errors=True)


def is_mount(path: Path) -> bool:
    """Whether something is mounted on PATH, a bind of a folder of the same disk included
    (which os.path.ismount cannot tell)."""
    target = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as table:
            points = [line.split()[4] for line in table]
    except OSError:
        return os.path.ismount(path)
    decode = re.compile(r"\\([0-7]{3})")
    return any(decode.sub(lambda m: chr(int(m.group(1), 8)), p) == target for p in points)


def _size(path: Path) -> int:
    """Bytes PATH takes on a tmpfs, a page per file at least."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(max(4096, p.stat().st_size + 4096) for p in files) + 4096


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _mount_tmpfs(target: Path, options: str) -> bool:
    """Mount a tmpfs with OPTIONS on TARGET; False where this machine refuses it."""
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    done = _libc().mount(b"tmpfs", os.fsencode(target), b"tmpfs", flags, options.encode())
    return done == 0


def _umount(target: Path) -> None:
    """Detach the mount on TARGET (lazily: a sandbox being torn down may still hold it)."""
    _libc().umount2(os.fsencode(target), _MNT_DETACH)


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup in each hierarchy: controller (or "" for v2) -> path."""
    groups = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, where = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                groups[controller] = where
    return groups


def _make_cgroups(name: str, limits: Limits, cpus: float = 0.0) -> list[Path]:
    """Cgroups named NAME under this process's own, limiting memory and processes and, where
    CPUS is above 0, holding them to CPUS cores; the v1 memory, pids and cpu controllers where
    they are mounted, else one v2 group with all three. Memory and processes are required
    (none is made without both); the CPU quota is not (a machine without the cpu controller
    grades as before, with no quota)."""
    memory = str(limits.memory_mb * 1024 * 1024)
    quota = str(max(1000, round(cpus * _CPU_PERIOD_US)))
    own = _own_cgroups()
    v1 = {"memory": {"memory.limit_in_bytes": memory, "memory.memsw.limit_in_bytes": memory},
          "pids": {"pids.max": str(limits.processes)}}
    made = []
    if all(c in own and (_CGROUP_ROOT / c).is_dir() for c in v1):
        for controller, settings in v1.items():
            group = _cgroup(_CGROUP_ROOT / controller / own[controller].lstrip("/") / name, settings)
            if group is None:
                break
            made.append(group)
        else:
            if cpus > 0 and "cpu" in own and (_CGROUP_ROOT / "cpu").is_dir():
                settings = {"cpu.cfs_period_us": str(_CPU_PERIOD_US), "cpu.cfs_quota_us": quota}
                group = _cgroup(_CGROUP_ROOT / "cpu" / own["cpu"].lstrip("/") / name, settings)
                made += [group] if group is not None else []
            return made
    elif "" in own and (_CGROUP_ROOT / "cgroup.controllers").is_file():
        settings = {"memory.max": memory, "memory.swap.max": "0", "pids.max": str(limits.processes)}
        if cpus > 0:
            settings["cpu.max"] = f"{quota} {_CPU_PERIOD_US}"
        group = _cgroup(_CGROUP_ROOT / own[""].lstrip("/") / name, settings)
        if group is not None:
            return [group]
    for group in made:
        _remove_cgroup(group)
    return []


def _memory_cgroup(name: str, memory_mb: int) -> list[Path]:
    """One cgroup named NAME under this process's own holding its processes to MEMORY_MB (v1's
    memory controller, else v2); none where it cannot be made."""
    memory = str(memory_mb * 1024 * 1024)
    own = _own_cgroups()
    if "memory" in own and (_CGROUP_ROOT / "memory").is_dir():
        settings = {"memory.limit_in_bytes": memory, "memory.memsw.limit_in_bytes": memory}
        group = _cgroup(_CGROUP_ROOT / "memory" / own["memory"].lstrip("/") / name, settings)
    elif "" in own and (_CGROUP_ROOT / "cgroup.controllers").is_file():
        group = _cgroup(_CGROUP_ROOT / own[""].lstrip("/") / name,
                        {"memory.max": memory, "memory.swap.max": "0"})
    else:
        group = None
    return [group] if group is not None else []


def held_limits() -> list[str]:
    """The controllers a run's cgroups get on this machine, of "memory", "pids" and "cpu": made
    once under a throwaway name, then removed (for `grader doctor`)."""
    held = []
    for group in _make_cgroups(f"grader-probe-{os.getpid()}", Limits(), cpus=1.0):
        if (group / "cgroup.controllers").exists():  # v2: one group with all it could hold
            held += ["memory", "pids"]
            with contextlib.suppress(OSError):
                held += ["cpu"] if not (group / "cpu.max").read_text().startswith("max") else []
        else:  # v1: a group per controller, under the controller's own hierarchy
            held.append(group.relative_to(_CGROUP_ROOT).parts[0])
        _remove_cgroup(group)
    return [c for c in ("memory", "pids", "cpu") if c in held]


# Settings a cgroup may lack: swap exists only where the kernel accounts it, a v2 cpu.max only
# where the cpu controller is delegated to this process's group.
_OPTIONAL = ("memory.memsw.limit_in_bytes", "memory.swap.max", "cpu.max")


def _cgroup(path: Path, settings: dict[str, str]) -> Path | None:
    """Make the cgroup PATH with SETTINGS; None (and nothing left) if a required one fails
    (one not in _OPTIONAL)."""
    try:
        path.mkdir()
    except OSError:
        return None
    for key, value in settings.items():
        try:
            (path / key).write_text(value)
        except OSError:
            if key not in _OPTIONAL:
                _remove_cgroup(path)
                return None
    return path


def _remove_cgroup(path: Path, timeout: float = 5.0) -> None:
    """Kill every process left in the cgroup PATH and remove it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return
        except OSError:
            pids = []
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                return
        time.sleep(0.05)
