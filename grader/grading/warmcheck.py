"""The warm checker's client: a worker slot's trusted server (grader.checker.server) that imported
the check libraries once and forks a fresh child for each submission's checks.

The server is always an interpreter of its own, started by exec: never a fork of the kernels'
zygote (grader.isolation.zygote), whose memory layout (where libpython, NumPy, the heap and the
stack lie) every student's kernel shares, and whose heap holds what it was asked. Where the slot
has one, it runs in a memory cgroup of its own (`checker_memory_mb`): it loads the students'
.keras files and arrays, and a hostile one must not take the machine's memory."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from grader.forkserver import Client, Garbled, ServerGone
from grader.grading.check import (
    Checker,
    Checks,
    checker_mounts,
    prepare_checks,
    read_results,
    start_checks,
    trusted_env,
)
from grader.isolation import sandbox, workdirs
from grader.isolation.launch import module_command
from grader.model.config import Limits

# Seconds the warm checker may take to import its libraries before a submission falls back to
# a cold checker; and to fork a submission's child once it has.
WARM_START_SECONDS = 240.0
WARM_BEGIN_SECONDS = 30.0
_MS_BIND, _MS_SHARED, _MNT_DETACH = 4096, 1 << 20, 2
# Memory a checker holds beyond what a kernel may (its memory_mb): its own libraries, TensorFlow's
# among them, and the check's copies of the student's values.
CHECKER_MEMORY_EXTRA_MB = 2048


def checker_memory_mb(limits: Limits) -> int:
    """The memory cgroup's limit for a slot's checker under LIMITS: a kernel's, and the extra."""
    return limits.memory_mb + CHECKER_MEMORY_EXTRA_MB


def warm_imports(files: list[Path], checks_dir: Path) -> list[str]:
    """The libraries beyond numpy and pytest worth importing once for these checks: those their
    files or conftest.py files mention (a guess that costs time only when wrong: a child imports
    whatever else it needs by itself)."""
    sources = [*files, *checks_dir.rglob("conftest.py")]
    text = ""
    for path in sources:
        with contextlib.suppress(OSError):
            text += path.read_text(encoding="utf-8", errors="replace").lower()
    wanted = []
    if any(word in text for word in ("matplotlib", "plot", "figure", "feedback")):
        wanted.append("matplotlib.pyplot")
    if any(word in text for word in ("keras", "tensorflow", "model")):
        wanted.append("keras")
    if "tensorflow" in text:
        wanted.append("tensorflow")
    return wanted


class CheckerSlot:
    """A warm checker for one worker slot: a trusted server (grader.checker.server) that imported
    the check libraries once and forks a fresh child for each submission's checks.

    FOLDER is the slot's own: each submission's run folder is made in it (workdirs.make(FOLDER)),
    one at a time. Sandboxed, the server runs in bubblewrap as `start_checks` does and sees
    FOLDER, where a root grader lets it into the current run folder only; for a root grader,
    FOLDER is made a shared mount so that what is mounted in it later (each run's shared tmpfs)
    reaches the sandbox. Where the server is not running or cannot start, a submission gets a
    cold checker (`start_checks`) instead; where it dies while checks run, a grader fault.
    CGROUPS are the cgroup.procs files (the slot's checker memory cgroup) that the server, or a
    cold checker in its place, joins as its sandbox starts."""

    def __init__(self, *, folder: Path, public_dir: Path, hidden_dir: Path | None,
                 student_data: Path | None, limits: Limits, sandboxed: bool, uid: int,
                 kernel_uids: tuple[int, ...], cgroups: tuple[Path, ...] = ()):
        self.folder = folder
        self.public_dir = public_dir
        self.hidden_dir = hidden_dir
        self.student_data = student_data
        self.limits = limits
        self.sandboxed = sandboxed
        self.uid = uid
        self.kernel_uids = tuple(kernel_uids)
        self.cgroups = tuple(cgroups)
        self.process: asyncio.subprocess.Process | None = None
        self.client: Client | None = None  # the server's protocol pipes
        self.imported: list[str] = []  # what the server imported, once it said so
        self.ready = False
        self.why_cold = ""  # why the last submission got a cold checker
        self._tail: collections.deque[str] = collections.deque(maxlen=15)
        self._drains: list[asyncio.Task[None]] = []  # what keeps each server's stderr tail
        self._stopped: list[asyncio.subprocess.Process] = []  # killed, to be waited for
        self._bound = False
        self._current: WarmChecker | None = None

    @property
    def root(self) -> bool:
        return sandbox.own_users(self.sandboxed)

    def alive(self) -> bool:
        """Whether the server runs now."""
        return self.process is not None and self.process.returncode is None

    async def start(self, files: list[Path] | None = None) -> None:
        """Launch the server (it imports while the caller goes on); nothing if it runs. Never
        raises: where it cannot start, `why_cold` says why and submissions get cold checkers."""
        if self.alive():
            return
        self.stop()  # one that died: its stderr tail goes with it
        try:
            await self._launch(files)
        except (OSError, sandbox.SandboxError, RuntimeError) as exc:
            self.why_cold = f"the warm checker did not start: {exc}"

    def make_folder(self) -> None:
        """Make FOLDER ready for the server: before any run folder is made in it, for a root
        grader (a run's tmpfs mounted in it earlier would be hidden by its shared mount)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.root:
            os.chown(self.folder, 0, self.uid)  # its group may pass, not list
            os.chmod(self.folder, 0o710)
            self._bound = self._bound or _share_mounts(self.folder)

    async def _launch(self, files: list[Path] | None) -> None:
        self.make_folder()
        if files is None:
            files = sorted(self.public_dir.parent.rglob("test_*.py"))
        args = [f"--import={name}" for name in warm_imports(files, self.public_dir.parent)]
        self.ready, self.imported = False, []
        self._tail.clear()
        argv = module_command("grader.checker.server", *args)
        env = trusted_env(self.limits)
        if self.sandboxed:
            argv = self._sandboxed(argv)
            env["GRADER_SANDBOXED"] = "1"
        await self._spawn(argv, env)

    def _sandboxed(self, argv: list[str]) -> list[str]:
        """ARGV in the checker's sandbox (see start_checks)."""
        readonly = checker_mounts(self.public_dir, self.hidden_dir, self.student_data)
        return sandbox.checker_command(argv, readonly=readonly, writable=[self.folder],
                                       workdir=self.folder, uid=self.uid, groups=self.kernel_uids,
                                       cgroups=self.cgroups)

    async def _spawn(self, argv: list[str], env: dict[str, str]) -> None:
        """Start ARGV with the protocol's pipes as its stdin and stdout, its stderr kept."""
        client = Client("the warm checker")
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, cwd=self.folder, env=env, stdin=client.stdin, stdout=client.stdout,
                stderr=asyncio.subprocess.PIPE)
        except BaseException:
            client.close()
            raise
        client.started()
        self.process, self.client = process, client
        self._drains.append(asyncio.create_task(self._keep_tail(process)))

    async def begin(self, files: list[Path], *, run_dir: Path, shared: Path,
                    kernel_uid: int) -> Checker | WarmChecker:
        """Prepare RUN_DIR's checks of FILES; they run when `finish` hands over the kernel.

        A cold checker where the warm one cannot serve this submission (see `why_cold`)."""
        def cold() -> Awaitable[Checker]:
            return start_checks(files, run_dir=run_dir, public_dir=self.public_dir,
                                hidden_dir=self.hidden_dir, student_data=self.student_data,
                                shared=shared, limits=self.limits, sandboxed=self.sandboxed,
                                uid=self.uid, kernel_uid=kernel_uid, cgroups=self.cgroups)

        if self._current is not None:  # the previous submission's never finished
            self._current.kill()
        self.why_cold = self._unservable(run_dir, kernel_uid)
        if not self.why_cold and not self.alive():
            await self.start(files)
        if self.why_cold:
            return await cold()
        if self.root:
            os.chown(run_dir, 0, self.uid)
            os.chmod(run_dir, 0o710)
        folder, args = prepare_checks(files, run_dir=run_dir, public_dir=self.public_dir,
                                      hidden_dir=self.hidden_dir, student_data=self.student_data,
                                      shared=shared, limits=self.limits,
                                      owner=self.uid if self.root else -1)
        log = folder / "pytest.log"
        self._current = WarmChecker(self, cold, folder / "results.json", log)
        try:
            await self.send({"begin": {"args": [*args, "--grader-warmed"], "cwd": str(folder), "log": str(log)}})
        except ServerGone:
            self._current.gone = True  # finish falls back to a cold checker
        return self._current

    def _unservable(self, run_dir: Path, kernel_uid: int) -> str:
        """Why the warm server cannot check RUN_DIR's submission; "" where it can."""
        if self.sandboxed and run_dir.resolve().parent != self.folder.resolve():
            return f"the run folder {run_dir} is not in the slot's folder {self.folder}"
        if self.root and kernel_uid >= 0 and kernel_uid not in self.kernel_uids:
            return f"the kernel's user {kernel_uid} is not one of the slot's"
        return ""

    async def send(self, message: dict[str, Any]) -> None:
        """Write one line to the server."""
        if not self.alive() or self.client is None:
            raise ServerGone(self.said())
        try:
            await self.client.asend(message)
        except ServerGone as exc:
            raise ServerGone(self.said()) from exc

    async def expect(self, key: str, timeout: float) -> Any:
        """The value of the server's next line that has KEY (TimeoutError after TIMEOUT s)."""
        process, client = self.process, self.client
        if process is None or client is None:
            raise ServerGone(self.said())
        async with asyncio.timeout(timeout):
            while True:
                try:
                    message = await client.areceive()
                except Garbled:
                    continue
                except ServerGone:
                    await process.wait()
                    raise ServerGone(self.said(process)) from None
                if "ready" in message:
                    self.ready, self.imported = True, list(message["ready"])
                if key in message:
                    return message[key]

    def said(self, process: asyncio.subprocess.Process | None = None) -> str:
        """How the server ended and the last lines it wrote to stderr, for staff."""
        process = process or self.process
        if process is None:
            return "the warm checker was stopped"
        tail = " | ".join(self._tail)
        return f"the warm checker exited with {process.returncode}" + (f": {tail}" if tail else "")

    async def _keep_tail(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        async for line in process.stderr:
            self._tail.append(line.decode("utf-8", "replace").rstrip())

    def stop(self) -> None:
        """Kill the server (the next submission starts a fresh one)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self._stopped.append(self.process)
            self.process = None
        if self.client is not None:
            self.client.close()
            self.client = None
        self.ready = False

    async def close(self) -> None:
        """Stop the server, wait for it, and undo the slot's shared mount."""
        if self.process is not None and self.alive() and self.client is not None:
            self.client.close_requests()  # the server kills its child and exits
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), 10)
        self.stop()
        for process in self._stopped:
            await process.wait()
        self._stopped.clear()
        for task in self._drains:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5)
        self._drains.clear()
        if self._bound:
            _libc().umount2(os.fsencode(self.folder), _MNT_DETACH)
            self._bound = False


class WarmChecker:
    """One submission's checks in a child of the slot's warm server (same use as Checker)."""

    def __init__(self, slot: CheckerSlot, cold: Callable[[], Awaitable[Checker]], results: Path,
                 log: Path):
        self.slot = slot
        self.cold = cold  # starts a cold checker, for a fall back before the checks start
        self.results = results
        self.log = log
        self.timeout = slot.limits.check_seconds
        self.gone = False  # the server went before this submission's child was made
        self.running = False  # the child may be asking the kernel now

    async def finish(self, connection: dict[str, Any] | None, why_no_kernel: str) -> Checks:
        """Let the checks run against the kernel of CONNECTION; return their outcomes."""
        began = time.monotonic()
        slot = self.slot
        try:
            if self.gone:
                raise ServerGone(slot.said())
            await slot.expect("begun", (0 if slot.ready else WARM_START_SECONDS) + WARM_BEGIN_SECONDS)
        except (ServerGone, TimeoutError) as exc:  # nothing asked the kernel yet: go cold
            slot.why_cold = f"the warm checker could not take this submission: {exc or 'timeout'}"
            slot.stop()
            slot._current = None
            checker = await self.cold()
            return await checker.finish(connection, why_no_kernel)
        self.running = True
        try:
            await slot.send({"go": {"connection": connection, "why_no_kernel": why_no_kernel}})
            code = await slot.expect("exit", self.timeout)
        except TimeoutError:
            await self._kill_child()
            return Checks(problem=f"the checks did not finish within {self.timeout:.0f} s",
                          seconds=time.monotonic() - began)
        except ServerGone as exc:
            self.running = False
            slot._current = None
            return Checks(problem=f"the checks broke off: {exc}", seconds=time.monotonic() - began)
        self.running = False
        slot._current = None
        output = ""
        with contextlib.suppress(OSError):
            output = self.log.read_bytes()[-20_000:].decode("utf-8", "replace")
        return read_results(self.results, code, output, time.monotonic() - began)

    async def _kill_child(self) -> None:
        """Kill the child that ran out of time; the whole server if it does not say it went."""
        slot = self.slot
        try:
            await slot.send({"kill": True})
            await slot.expect("exit", 10)
        except (TimeoutError, ServerGone):
            slot.stop()
        self.running = False
        slot._current = None

    def kill(self) -> None:
        """Stop these checks where they may still run (the server with them: a rare case)."""
        if self.running or self.slot._current is self:
            self.slot.stop()
            self.running = False
            self.slot._current = None


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _share_mounts(folder: Path) -> bool:
    """Make FOLDER a shared mount of its own, so that what is mounted in it later on the host
    reaches a sandbox made before (bubblewrap makes its copy a slave); False where refused."""
    libc = _libc()
    path = os.fsencode(folder)
    if workdirs.is_mount(folder):  # someone's mount: made shared, never undone here
        libc.mount(b"none", path, None, _MS_SHARED, None)
        return False
    if libc.mount(path, path, None, _MS_BIND, None) != 0:
        return False
    if libc.mount(b"none", path, None, _MS_SHARED, None) != 0:
        libc.umount2(path, _MNT_DETACH)
        return False
    return True
