"""Run an assignment's checks with pytest in a separate, trusted process."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.isolation import sandbox, zygote
from grader.isolation import workdirs as runs
from grader.isolation.launch import module_command
from grader.isolation.zygote import Zygote, ZygoteError
from grader.model import paths
from grader.model.config import Limits
from grader.model.outcomes import Attachment, CheckOutcome

# Address space the checker needs beyond twice the kernel's: TensorFlow reserves about 2 GB.
CHECKER_EXTRA_MB = 4096


@dataclass
class Checks:
    """The outcome of every check, or why the checks themselves could not run."""

    outcomes: list[CheckOutcome] = field(default_factory=list)
    problem: str = ""  # for the course staff: the checks broke, not the student
    seconds: float = 0.0
    weights: dict[str, str] = field(default_factory=dict)  # sha256 of each model's weights, by name


def _trusted_env(limits: Limits) -> dict[str, str]:
    """The checker's whole environment: the grader's own (a database URL, say) stays out."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "LC_ALL", "KERAS_BACKEND",
                                               "GRADER_DATA_HOME") if name in os.environ}
    env.update({
        "CUDA_VISIBLE_DEVICES": "",  # checks evaluate on the CPU; the GPUs are the kernels'
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "GRADER_PARENT_PID": str(os.getpid()),
        "GRADER_RLIMITS": json.dumps({
            "AS": (2 * limits.memory_mb + CHECKER_EXTRA_MB) * 1024 * 1024, "CORE": 0}),
    })
    return env


class Checker:
    """The checks' pytest process, started early: it imports its libraries while the notebook
    runs, then waits to be told which kernel to ask."""

    def __init__(self, process: asyncio.subprocess.Process, results: Path, timeout: float):
        self.process = process
        self.results = results
        self.timeout = timeout

    async def finish(self, connection: dict[str, Any] | None, why_no_kernel: str) -> Checks:
        """Let the checks run against the kernel of CONNECTION (its connection info, handed over
        in memory: the kernel can rewrite its connection file); return their outcomes."""
        began = time.monotonic()
        go = {"connection": connection, "why_no_kernel": why_no_kernel}
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(go).encode() + b"\n")
            await self.process.stdin.drain()
            self.process.stdin.close()
            output, _ = await asyncio.wait_for(self.process.communicate(), self.timeout)
        except TimeoutError:
            self.kill()
            await self.process.wait()
            return Checks(problem=f"the checks did not finish within {self.timeout:.0f} s",
                          seconds=time.monotonic() - began)
        except (BrokenPipeError, ConnectionResetError):
            output, _ = await self.process.communicate()
        return _read_results(self.results, self.process.returncode, output.decode("utf-8", "replace"),
                             time.monotonic() - began)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()


async def start_checks(
    files: list[Path],
    *,
    run_dir: Path,
    public_dir: Path,
    hidden_dir: Path | None,
    student_data: Path | None,
    shared: Path,
    limits: Limits,
    sandboxed: bool = True,
    uid: int = 65534,
    kernel_uid: int = -1,
) -> Checker:
    """Start pytest on FILES in a trusted process that waits for Checker.finish.

    SANDBOXED, it runs in bubblewrap without network, and for a root grader as user UID (in the
    kernel's group, to reach its sockets); it sees the checks, the data, SHARED and its own
    folder in RUN_DIR, nothing else of the machine."""
    folder, args = _prepare(files, run_dir=run_dir, public_dir=public_dir, hidden_dir=hidden_dir,
                            student_data=student_data, shared=shared, limits=limits,
                            owner=uid if sandboxed and os.geteuid() == 0 else -1)
    argv = module_command("pytest", *args)
    env = _trusted_env(limits)
    if sandboxed:
        package = paths.PACKAGE  # grader itself: checks import its helpers
        readonly = [public_dir.parent, package, *(p for p in (hidden_dir, student_data) if p)]
        groups = (kernel_uid,) if kernel_uid >= 0 else ()
        argv = sandbox.checker_command(argv, readonly=readonly, writable=[folder, shared],
                                       workdir=folder, uid=uid, groups=groups)
        env["GRADER_SANDBOXED"] = "1"  # its parent is bubblewrap, which dies with the grader
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=folder, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    return Checker(process, folder / "results.json", limits.check_seconds)


def _prepare(files: list[Path], *, run_dir: Path, public_dir: Path, hidden_dir: Path | None,
             student_data: Path | None, shared: Path, limits: Limits, owner: int) -> tuple[Path, list[str]]:
    """Make RUN_DIR/checks (OWNER's, where that is a user) and return it with pytest's arguments."""
    folder = run_dir / "checks"
    folder.mkdir(exist_ok=True)
    if owner >= 0:
        os.chown(folder, owner, owner)
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    results = folder / "results.json"
    args = [
        *map(str, files), "-c", str(folder / "pytest.ini"), "--rootdir", str(folder),
        "--confcutdir", str(public_dir.parent),
        # unraisableexception collects the garbage 5 times over at the end: seconds of CPU where
        # checks made Keras models, for warnings nobody reads
        "-p", "grader.checker.plugin", "-p", "no:cacheprovider", "-p", "no:unraisableexception",
        "--assert=plain", "-q", "-s",
        "--import-mode=importlib", "--no-header", "-o", "console_output_style=classic",
        "--grader-wait", "--grader-results", str(results), "--grader-public", str(public_dir),
        "--grader-shared", str(shared), "--grader-timeout", str(max(5.0, limits.check_seconds / 4)),
    ]
    if hidden_dir is not None:
        args += ["--grader-hidden", str(hidden_dir)]
    if student_data is not None:
        args += ["--grader-student-data", str(student_data)]
    return folder, args


async def run_checks(files: list[Path], *, connection: dict[str, Any] | None, why_no_kernel: str,
                     **options: Any) -> Checks:
    """Run FILES against the kernel of CONNECTION and return each check's outcome."""
    checker = await start_checks(files, **options)
    return await checker.finish(connection, why_no_kernel)


def _read_results(results: Path, returncode: int | None, output: str, seconds: float) -> Checks:
    """The outcomes pytest wrote to RESULTS; a problem where it exited badly or wrote none."""
    checks = Checks(seconds=seconds)
    try:
        data = json.loads(results.read_text(encoding="utf-8"))
        checks.outcomes = [_outcome(item) for item in data["checks"]]
        checks.weights = _digests(data.get("weights"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        checks.problem = "the checks did not report"
    if returncode not in (0, 1) or not checks.outcomes:
        tail = output.strip().splitlines()[-15:]
        checks.problem = (checks.problem or f"pytest exited with {returncode}") + (
            ": " + " | ".join(tail) if tail else "")
    return checks


def _digests(value: Any) -> dict[str, str]:
    """The weights' digests the checker wrote: model names to sha256 hex digests, nothing else."""
    if not isinstance(value, dict):
        return {}
    return {str(name)[:200]: digest for name, digest in list(value.items())[:20]
            if isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)}


def _outcome(item: dict) -> CheckOutcome:
    attachments = [Attachment(**a) for a in item.pop("attachments", [])]
    return CheckOutcome(**item, attachments=attachments)


# Seconds the warm checker may take to import its libraries before a submission falls back to
# a cold checker; and to fork a submission's child once it has.
WARM_START_SECONDS = 240.0
WARM_BEGIN_SECONDS = 30.0
_MS_BIND, _MS_SHARED, _MNT_DETACH = 4096, 1 << 20, 2
# What moves the forked warm checker's pipes in place in its sandbox before its placeholder runs:
# bash, which takes descriptors above 9
_PLACEHOLDER_SHELL = "/bin/bash"


class _ServerGone(Exception):
    """The warm checker's server exited or stopped answering."""


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

    FOLDER is the slot's own: each submission's run folder is made in it (runs.make(FOLDER)),
    one at a time. Sandboxed, the server runs in bubblewrap as `start_checks` does and sees
    FOLDER, where a root grader lets it into the current run folder only; for a root grader,
    FOLDER is made a shared mount so that what is mounted in it later (each run's shared tmpfs)
    reaches the sandbox. Where the server is not running or cannot start, a submission gets a
    cold checker (`start_checks`) instead; where it dies while checks run, a grader fault."""

    def __init__(self, *, folder: Path, public_dir: Path, hidden_dir: Path | None,
                 student_data: Path | None, limits: Limits, sandboxed: bool, uid: int,
                 kernel_uids: tuple[int, ...]):
        self.folder = folder
        self.public_dir = public_dir
        self.hidden_dir = hidden_dir
        self.student_data = student_data
        self.limits = limits
        self.sandboxed = sandboxed
        self.uid = uid
        self.kernel_uids = tuple(kernel_uids)
        self.process: asyncio.subprocess.Process | None = None
        self.imported: list[str] = []  # what the server imported, once it said so
        self.ready = False
        self.why_cold = ""  # why the last submission got a cold checker
        self._tail: collections.deque[str] = collections.deque(maxlen=15)
        self._drains: list[asyncio.Task[None]] = []  # what keeps each server's stderr tail
        self._stopped: list[asyncio.subprocess.Process] = []  # killed, to be waited for
        self._bound = False
        self._current: WarmChecker | None = None
        # where the batch has one, the zygote that forks the server, its libraries imported
        # (grader.isolation.zygote): awaited by each start; None, or a zygote that is None, starts it cold
        self.zygote: Callable[[], Awaitable[Zygote | None]] | None = None
        self.forked = False  # whether the server now running was forked from the zygote
        self.why_not_forked = ""  # why the last server started cold where a zygote was asked
        self._lifeline = -1  # the write end of the forked server's placeholder's stdin

    @property
    def root(self) -> bool:
        return self.sandboxed and os.geteuid() == 0

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
        self.ready, self.imported, self.forked = False, [], False
        self._tail.clear()
        if self.root and self.zygote is not None:
            made = await self.zygote()
            if made is None or not made.alive:
                self.why_not_forked = "the batch's zygote is not running"
            elif made.python != sys.executable:
                self.why_not_forked = f"the kernels' interpreter {made.python} is not the grader's"
            else:
                try:
                    await self._fork(made, args)
                    return
                except (OSError, ZygoteError, sandbox.SandboxError, RuntimeError) as exc:
                    self.why_not_forked = f"the zygote could not fork the warm checker: {exc}"
                    self.stop()
        argv = module_command("grader.checker.server", *args)
        env = _trusted_env(self.limits)
        if self.sandboxed:
            argv = self._sandboxed(argv)
            env["GRADER_SANDBOXED"] = "1"
        self._started(await asyncio.create_subprocess_exec(
            *argv, cwd=self.folder, env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE))

    def _sandboxed(self, argv: list[str]) -> list[str]:
        """ARGV in the checker's sandbox (see start_checks)."""
        readonly = [self.public_dir.parent, paths.PACKAGE,
                    *(p for p in (self.hidden_dir, self.student_data) if p)]
        return sandbox.checker_command(argv, readonly=readonly, writable=[self.folder],
                                       workdir=self.folder, uid=self.uid, groups=self.kernel_uids)

    def _started(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._drains.append(asyncio.create_task(self._keep_tail(process)))

    async def _fork(self, made: Zygote, args: list[str]) -> None:
        """Start the server forked from the batch's zygote MADE, whose NumPy, Keras, TensorFlow
        and matplotlib are imported already: into a checker's sandbox as `_launch` makes it,
        around a placeholder that holds the server's pipes until the zygote's midwife takes
        them. The placeholder reads the lifeline, whose write end only this process holds: the
        sandbox ends with the grader even where bubblewrap's own --die-with-parent is not set yet."""
        lifeline, self._lifeline = os.pipe()
        held = 3 if lifeline != 3 else 4  # where the placeholder keeps the server's stdin
        placeholder = [_PLACEHOLDER_SHELL, "-c",
                       f"exec {zygote.PLACEHOLDER[0]} {held}<&0 0<&{lifeline} {lifeline}<&-"]
        env = {**_trusted_env(self.limits), "HOME": "/tmp", "GRADER_SANDBOXED": "1"}
        try:
            self._started(await asyncio.create_subprocess_exec(
                *self._sandboxed(placeholder), cwd=self.folder, env=env,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, pass_fds=(lifeline,)))
        finally:
            os.close(lifeline)
        assert self.process is not None
        await made.fork(sandbox=self.process.pid, argv=["grader.checker.server", *args], env=env,
                        uid=self.uid, groups=self.kernel_uids, log="", seccomp=b"",
                        cwd=str(self.folder), stdio=(held, 1, 2))
        self.forked = True

    async def begin(self, files: list[Path], *, run_dir: Path, shared: Path,
                    kernel_uid: int) -> Checker | WarmChecker:
        """Prepare RUN_DIR's checks of FILES; they run when `finish` hands over the kernel.

        A cold checker where the warm one cannot serve this submission (see `why_cold`)."""
        def cold() -> Awaitable[Checker]:
            return start_checks(files, run_dir=run_dir, public_dir=self.public_dir,
                                hidden_dir=self.hidden_dir, student_data=self.student_data,
                                shared=shared, limits=self.limits, sandboxed=self.sandboxed,
                                uid=self.uid, kernel_uid=kernel_uid)

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
        folder, args = _prepare(files, run_dir=run_dir, public_dir=self.public_dir,
                                hidden_dir=self.hidden_dir, student_data=self.student_data,
                                shared=shared, limits=self.limits,
                                owner=self.uid if self.root else -1)
        log = folder / "pytest.log"
        self._current = WarmChecker(self, cold, folder / "results.json", log)
        try:
            await self.send({"begin": {"args": [*args, "--grader-warmed"], "cwd": str(folder), "log": str(log)}})
        except _ServerGone:
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
        if not self.alive():
            raise _ServerGone(self.said())
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(message).encode() + b"\n")
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise _ServerGone(self.said()) from exc

    async def expect(self, key: str, timeout: float) -> Any:
        """The value of the server's next line that has KEY (TimeoutError after TIMEOUT s)."""
        process = self.process
        if process is None or process.stdout is None:
            raise _ServerGone(self.said())
        async with asyncio.timeout(timeout):
            while True:
                line = await process.stdout.readline()
                if not line:
                    await process.wait()
                    raise _ServerGone(self.said(process))
                with contextlib.suppress(ValueError):
                    message = json.loads(line)
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
        if self.process is not None and self.forked and not self.ready:  # it never came up
            self.zygote = None  # the next ones are not forked
            self.why_not_forked = f"the forked warm checker did not start: {self.said()}"
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self._stopped.append(self.process)
            self.process = None
        self._let_go()
        self.ready = False

    def _let_go(self) -> None:
        """Close the forked server's lifeline: its sandbox ends, if nothing ended it before."""
        if self._lifeline >= 0:
            os.close(self._lifeline)
            self._lifeline = -1

    async def close(self) -> None:
        """Stop the server, wait for it, and undo the slot's shared mount."""
        if self.process is not None and self.alive() and self.process.stdin is not None:
            self.process.stdin.close()  # the server kills its child and exits
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
                raise _ServerGone(slot.said())
            await slot.expect("begun", (0 if slot.ready else WARM_START_SECONDS) + WARM_BEGIN_SECONDS)
        except (_ServerGone, TimeoutError) as exc:  # nothing asked the kernel yet: go cold
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
        except _ServerGone as exc:
            self.running = False
            slot._current = None
            return Checks(problem=f"the checks broke off: {exc}", seconds=time.monotonic() - began)
        self.running = False
        slot._current = None
        output = ""
        with contextlib.suppress(OSError):
            output = self.log.read_bytes()[-20_000:].decode("utf-8", "replace")
        return _read_results(self.results, code, output, time.monotonic() - began)

    async def _kill_child(self) -> None:
        """Kill the child that ran out of time; the whole server if it does not say it went."""
        slot = self.slot
        try:
            await slot.send({"kill": True})
            await slot.expect("exit", 10)
        except (TimeoutError, _ServerGone):
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
    if runs.is_mount(folder):  # someone's mount: made shared, never undone here
        libc.mount(b"none", path, None, _MS_SHARED, None)
        return False
    if libc.mount(path, path, None, _MS_BIND, None) != 0:
        return False
    if libc.mount(b"none", path, None, _MS_SHARED, None) != 0:
        libc.umount2(path, _MNT_DETACH)
        return False
    return True
