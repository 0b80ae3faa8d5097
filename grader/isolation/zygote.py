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

Only kernels are forked here. Every fork of the zygote shares its address layout (where
libpython, NumPy, the heap and the stack lie), its interpreter's hash secret, and whatever its
heap still holds of the requests it read: the trusted checkers (grader.checker.server) are
therefore never forked from it, and start by exec, each with a layout of its own.

`grader run` starts its batch's zygote before it imports the rest of itself (`prestart`, from
grader.cli.early); the batch takes that one over where it is the very zygote it asks for (same
interpreter, environment and libraries), and stops it otherwise.

The zygote's own process is grader.isolation.zygote_server, a fork server (grader.forkserver);
its docstring has the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from grader.forkserver import Client, ServerGone
from grader.isolation import sandbox
from grader.model import paths

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

# What the zygote runs (`python -c START ROOT SETTINGS`): its server, grader.isolation.zygote_server,
# imported from the grader's folder ROOT, which leaves sys.path as the kernels have it.
START = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from grader.isolation.zygote_server import main; del sys.path[0]; sys.exit(main(sys.argv[2]))")


class ZygoteError(RuntimeError):
    """The zygote could not start, or could not fork a kernel (the kernel then starts cold)."""


def usable(*, sandboxed: bool, gpu: bool) -> bool:
    """Whether kernels may be forked from a zygote: sandboxed, by a root grader, on the CPU."""
    return sandbox.own_users(sandboxed) and not gpu and sys.platform == "linux" \
        and os.path.exists(PLACEHOLDER[0])


class Zygote:
    """The grader's side of one zygote. Its calls block; `fork` may come from any thread."""

    def __init__(self, python: str, env: dict[str, str], modules: list[str]):
        self.python, self.env, self.modules = python, env, modules
        self.process: subprocess.Popen[bytes] | None = None
        self.client: Client | None = None
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
        settings = {"parent": os.getpid(), "modules": self.modules, "startup": list(KERNEL_STARTUP),
                    "placeholder": Path(PLACEHOLDER[0]).name}
        client = Client("the zygote")
        try:
            self.process = subprocess.Popen(
                [self.python, "-c", START, str(paths.PACKAGE.parent), json.dumps(settings)],
                stdin=client.stdin, stdout=client.stdout, stderr=subprocess.DEVNULL,
                env=self.env, start_new_session=True)
        except Exception as exc:  # noqa: BLE001 - any failure: kernels start cold
            client.close()
            self.fail(f"the zygote did not start: {exc}")
            return False
        client.started()
        self.client = client
        return True

    def wait_ready(self, timeout: float = 180.0) -> bool:
        """Wait for its imports; False (with `problem`) if it did not make them."""
        if self.problem or self.client is None:
            return False
        try:
            self.client.ready(timeout)
        except ServerGone as exc:
            self.fail(f"{exc}{self._status()}")
            return False
        except Exception as exc:  # noqa: BLE001 - any failure: kernels start cold
            self.fail(f"the zygote did not start: {exc}")
            return False
        return True

    def _status(self) -> str:
        """How its process ended, where it has."""
        code = None if self.process is None else self.process.poll()
        return "" if code is None else f" (exit status {code})"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None and not self.problem

    async def fork(self, *, sandbox: int, argv: list[str], env: dict[str, str], uid: int,
                   log: str, seccomp: bytes, cwd: str) -> int:
        """Fork a kernel running ARGV into the sandbox bubblewrap runs as SANDBOX, as UID in CWD
        with ENV, its stderr to LOG; the midwife's pid. Raises ZygoteError."""
        request = {"fork": {"sandbox": sandbox, "argv": argv, "env": env, "uid": uid, "log": log,
                            "seccomp": seccomp.hex(), "cwd": cwd}}
        return await asyncio.to_thread(self._fork, request)

    def _fork(self, request: dict[str, Any]) -> int:
        with self._lock:
            if not self.alive or self.client is None:
                raise ZygoteError(self.problem or "the zygote is not running")
            try:
                self.client.send(request, timeout=20)
                answer = self.client.receive(20)
            except Exception as exc:  # noqa: BLE001
                self.fail(f"the zygote stopped answering: {exc}{self._status()}")
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
        client, self.client = self.client, None
        if process is None:
            return
        with contextlib.suppress(Exception):
            process.kill()
        with contextlib.suppress(Exception):
            process.wait(timeout=10)
        if client is not None:
            client.close()
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
