"""Run a notebook headless in its own fresh kernel, within the assignment's time limits.

The kernel stays up after the last cell so that the trusted checks can ask it for values; it is
shut down, with every process in its group, when the `executed` block ends.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import copy
import enum
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import ensure_async
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbformat import NotebookNode
from traitlets import Any as AnyTrait
from traitlets import Integer, List, Type, Unicode

from grader.checker.exchange import SOCK
from grader.grading.kernelclient import (
    STOP_FACTOR,
    CappedClient,
    KernelClient,
    answers,
    gpus_used,
    recover,
    request,
)
from grader.grading.kernelcode import gpu_prologue as gpu_prologue  # named here for its importers
from grader.grading.kernelcode import seed_code
from grader.grading.kernelcode import warmup_code as warmup_code  # named here for its importers
from grader.grading.kernelenv import may_use_keras
from grader.isolation import seccomp, zygote
from grader.isolation.launch import module_command
from grader.isolation.sandbox import WORKDIR
from grader.isolation.zygote import Zygote
from grader.model.config import Limits
from grader.model.text import without_ansi


@dataclass
class FailedCell:
    """The first cell whose execute_reply said error, as the student should see it."""

    index: int  # position among the notebook's cells, from 0 (markdown cells count)
    source: str
    ename: str
    evalue: str
    traceback: str
    number: int = 0  # which code cell, from 1: what reasons and the feedback page should say


class ExecutionStatus(enum.StrEnum):
    """How a notebook's run ended (grading.score turns it into the result's Status)."""

    OK = "ok"
    CELL_ERROR = "cell_error"
    TIMEOUT = "timeout"
    KERNEL_DIED = "kernel_died"
    KERNEL_FAILED = "kernel_failed"  # the kernel did not start or could not be set up: the grader's fault


@dataclass
class Execution:
    """What running the notebook gave."""

    status: ExecutionStatus
    reason: str  # for the student; empty when ok
    notebook: NotebookNode
    kernel_start_s: float = 0.0
    warmup_s: float = 0.0  # importing the notebook's libraries ahead (see warmup_code)
    execution_s: float = 0.0
    failed_cell: FailedCell | None = None
    output_truncated: bool = False
    connection: dict[str, Any] | None = None  # the kernel's connection info while it answers
    errors: list[FailedCell] = field(default_factory=list)
    gpus_used: list[str] | None = None  # the GPUs Keras' backend (TF or JAX) used; None: neither


class _KernelManager(AsyncKernelManager):
    """A kernel of the grader's own interpreter, started through the launcher, interrupted by
    message (a signal would not reach it inside a sandbox)."""

    client_factory = Type(KernelClient, klass=AsyncKernelClient)
    command_prefix = List(Unicode(), help="argv put before the kernel's (a sandbox)")
    owner = Integer(-1, help="user the kernel runs as, who must read the connection file")
    python = Unicode(sys.executable, help="the interpreter the kernel runs on")
    zygote = AnyTrait(None, allow_none=True, help="the grader.isolation.zygote.Zygote that forks the kernel")
    kernel_log = Unicode("", help="the file the kernel's stderr goes to (a kernel forked by the zygote)")
    lifeline = Integer(-1, help="the write end of the placeholder's stdin (a kernel forked by the zygote)")

    @property
    def kernel_spec(self) -> Any:
        spec = super().kernel_spec
        if spec is not None:
            spec.interrupt_mode = "message"
        return spec

    async def _async_wait(self, pollinterval: float = 0.1) -> None:
        # jupyter_client polls a killed kernel every 0.1 s until it is gone: a pause after every
        # notebook, where the kernel is gone within milliseconds of its SIGKILL
        await super()._async_wait(pollinterval=min(pollinterval, 0.005))

    def write_connection_file(self, **kwargs: Any) -> None:
        super().write_connection_file(**kwargs)
        if self.owner >= 0:
            os.chown(self.connection_file, self.owner, self.owner)

    def let_go(self) -> None:
        """Close the lifeline: the sandbox of a forked kernel ends, if nothing ended it before."""
        if self.lifeline >= 0:
            os.close(self.lifeline)
            self.lifeline = -1

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        if self.zygote is not None:  # the sandbox holds a placeholder that the zygote fills
            return [*self.command_prefix, *zygote.PLACEHOLDER]
        cmd = module_command("ipykernel_launcher", "-f", os.path.realpath(self.connection_file),
                             python=self.python)
        return [*self.command_prefix, *cmd, *(extra_arguments or [])]

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        if self.zygote is None:
            await super()._async_launch_kernel(kernel_cmd, **kw)
            return
        # The placeholder reads its stdin, a pipe whose only write end is the grader's: when the
        # grader goes, even killed while bubblewrap's init has not yet set its own
        # --die-with-parent, the placeholder ends, then the init, and the PID namespace takes
        # the forked kernel with it. Closed by let_go once the kernel is done with.
        self.let_go()
        read, self.lifeline = os.pipe()
        try:
            await super()._async_launch_kernel(kernel_cmd, **{**kw, "stdin": read})
        except BaseException:
            self.let_go()
            raise
        finally:
            os.close(read)
        assert self.provisioner is not None
        process = getattr(self.provisioner, "process", None)
        assert process is not None
        await self.zygote.fork(
            sandbox=process.pid, env=dict(kw.get("env") or {}), uid=self.owner, log=self.kernel_log,
            argv=["ipykernel_launcher", "-f", os.path.realpath(self.connection_file)],
            seccomp=seccomp.program(), cwd=WORKDIR)


def _failed(index: int, number: int, cell: NotebookNode, exc: CellExecutionError) -> FailedCell:
    return FailedCell(
        index=index,
        number=number,
        source=cell.source,
        ename=exc.ename,
        evalue=without_ansi(exc.evalue),
        traceback=without_ansi(exc.traceback)[-20_000:],
    )


@contextlib.asynccontextmanager
async def executed(
    nb: NotebookNode,
    *,
    workdir: Path,
    shared: Path,
    limits: Limits,
    seed: int,
    env: dict[str, str],
    command_prefix: list[str] | None = None,
    owner: int = -1,
    python: str = sys.executable,
    prologue: str = "",
    warmup: str = "",
) -> AsyncIterator[Execution]:
    """Execute NB in a new kernel started in WORKDIR; yield the result with the kernel still up.

    SHARED/sock holds the connection file and the kernel's sockets; a sandboxed kernel
    (COMMAND_PREFIX) running as OWNER sees it at the same path. The checks get the connection
    info from `Execution.connection`, never from the file, which the kernel can rewrite.
    PROLOGUE (the GPU's setup) runs silently before the seed and the first cell; if it fails,
    no cell runs and the status is kernel_failed: the grader's fault, never the student's.
    WARMUP (see `warmup_code`) imports libraries before the seed, out of the student's sight.
    """
    kernel = StudentKernel(nb, workdir=workdir, shared=shared, limits=limits, env=env,
                           command_prefix=command_prefix, owner=owner, python=python)
    try:
        await kernel.start(prologue=prologue, warmup=warmup)
        yield await kernel.run(seed)
    finally:
        await kernel.close()


class StudentKernel:
    """One student's kernel: started (and warmed up) ahead of its turn if need be, run once,
    then killed with everything it started. Never reused for a second notebook."""

    def __init__(self, nb: NotebookNode, *, workdir: Path, shared: Path, limits: Limits,
                 env: dict[str, str], command_prefix: list[str] | None = None, owner: int = -1,
                 python: str = sys.executable, zygote: Zygote | None = None):
        self.nb, self.workdir, self.shared, self.limits = nb, workdir, shared, limits
        self.env, self.prefix, self.owner, self.python = env, list(command_prefix or []), owner, python
        self.zygote = zygote  # the zygote to fork the kernel from, where there is one
        self.execution = Execution(status=ExecutionStatus.OK, reason="", notebook=nb)
        self.warmup_problem = ""  # why the warm-up failed (the kernel then started again, cold)
        self.zygote_problem = ""  # why the zygote could not fork it (it then started cold)
        self.forked = False  # whether the kernel running is the zygote's
        self._client: CappedClient | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._ran = False

    async def start(self, *, prologue: str = "", warmup: str = "") -> None:
        """Start the kernel, run PROLOGUE, then WARMUP; never raises. A kernel that does not
        start, or a PROLOGUE that fails, leaves the status kernel_failed (the grader's fault). A
        WARMUP that fails costs the student nothing: the kernel is replaced by a cold one."""
        began = time.monotonic()
        if self.zygote is not None and self.zygote.alive:
            self.forked = await self._launch(fresh_log=True, forked=True)
            if not self.forked:  # the grader's failure, not the student's: start it cold
                self.zygote_problem = self.execution.reason
                self.execution.status, self.execution.reason = ExecutionStatus.OK, ""
                await self._stop()
        if not self.forked and not await self._launch(fresh_log=not self.zygote_problem):
            return
        self.execution.kernel_start_s = time.monotonic() - began
        if prologue and not await self._set_up(prologue):
            return
        if not warmup:
            return
        began = time.monotonic()
        problem = await self._warm(warmup)
        if problem:
            # Whatever the failed import left in sys.modules would differ from a cold kernel.
            self.warmup_problem = problem
            await self._stop()
            if await self._launch(fresh_log=False) and prologue:
                await self._set_up(prologue)
        self.execution.warmup_s = time.monotonic() - began

    async def run(self, seed: int) -> Execution:
        """Seed the kernel and run every cell; the kernel stays up for the checks."""
        result = self.execution
        client = self._client
        if self._ran or client is None or result.status == ExecutionStatus.KERNEL_FAILED:
            return result
        self._ran = True
        await _run_cells(client, result, self.limits, seed, keras=may_use_keras(client.nb))
        result.notebook = client.nb
        result.output_truncated = client.output_truncated
        if client.output_stopped:  # the kernel was stopped for the output it sent
            result.status, result.reason = ExecutionStatus.KERNEL_DIED, _flood_reason(result, self.limits)
            return result
        gone = result.status in (ExecutionStatus.KERNEL_DIED, ExecutionStatus.KERNEL_FAILED)
        if not gone and await answers(client):
            assert isinstance(client.km, _KernelManager)
            result.connection = _connection_info(client.km)
            result.gpus_used = await gpus_used(client)
        elif result.status in (ExecutionStatus.OK, ExecutionStatus.CELL_ERROR):
            result.status, result.reason = ExecutionStatus.KERNEL_DIED, _died_reason(result, client.nb)
        return result

    async def close(self) -> None:
        """Kill the kernel and every process in its group; safe to call more than once."""
        await self._stop()

    async def _launch(self, *, fresh_log: bool, forked: bool = False) -> bool:
        """A new kernel for the notebook, FORKED from the zygote or started cold; False (status
        kernel_failed) if it did not start."""
        sockets = self.shared / SOCK
        sockets.mkdir(exist_ok=True)
        km = _KernelManager(connection_file=str(sockets / "kernel.json"), transport="ipc",
                            ip=str(sockets / "kernel"))
        km.command_prefix, km.owner, km.python = self.prefix, self.owner, self.python
        if forked:
            km.zygote, km.kernel_log = self.zygote, str(self.shared / "kernel.log")
        client = CappedClient(
            self.nb, km=km, timeout=int(self.limits.cell_seconds),
            startup_timeout=int(self.limits.kernel_start_seconds), allow_errors=False,
            interrupt_on_timeout=False, record_timing=True,
            resources={"metadata": {"path": str(self.workdir)}},
        )
        client.output_cap = self.limits.output_bytes
        client.shutdown_kernel = "immediate"  # a student's kernel has nothing to save: killed
        self._client, self._stack = client, contextlib.AsyncExitStack()
        self.execution.notebook = client.nb
        log = self._stack.enter_context(open(self.shared / "kernel.log", "wb" if fresh_log else "ab"))
        try:
            await self._stack.enter_async_context(client.async_setup_kernel(
                env=self.env, stdout=subprocess.DEVNULL, stderr=log, independent=True))
        except Exception as exc:  # noqa: BLE001 - any failure to start is reported as such
            self.execution.status = ExecutionStatus.KERNEL_FAILED
            self.execution.reason = f"the Python kernel did not start: {exc}"
            return False
        return True

    async def _set_up(self, prologue: str) -> bool:
        assert self._client is not None
        return await _set_up(self._client, self.execution, prologue,
                             self.limits.kernel_start_seconds)

    async def _warm(self, warmup: str) -> str:
        """Run WARMUP; why it failed, or "" if it went well."""
        client = self._client
        assert client is not None and client.km is not None
        deadline = time.monotonic() + self.limits.kernel_start_seconds
        task = asyncio.ensure_future(request(client, warmup, self.limits.kernel_start_seconds))
        while not task.done():  # a library that kills the kernel on import is seen at once
            await asyncio.wait([task], timeout=0.5)
            if not task.done() and (time.monotonic() > deadline
                                    or not await ensure_async(client.km.is_alive())):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return "the kernel died or did not answer while importing"
        reply = task.result()
        if reply is None:
            return f"no answer within {self.limits.kernel_start_seconds:.0f} s"
        content = reply["content"]
        if content.get("status") != "ok":
            return f"{content.get('ename', '')}: {without_ansi(str(content.get('evalue', '')))[:300]}"
        return ""

    async def _stop(self) -> None:
        client, stack = self._client, self._stack
        self._client, self._stack = None, None
        if client is None:
            return
        atexit.unregister(client._cleanup_kernel)  # nbclient's own, for kernels it owns at exit
        km, kc = client.km, client.kc  # nbclient forgets both once it has cleaned up
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()
        if kc is not None:  # where nbclient's cleanup stopped early, its heartbeat thread would
            # outlive the kernel, and a zmq context collected later would wait for it forever
            with contextlib.suppress(Exception):
                kc.stop_channels()
        if isinstance(km, _KernelManager):
            with contextlib.suppress(Exception):
                await km.shutdown_kernel(now=True)
            _kill_group(km)
            km.let_go()
            # Close the manager's zmq context here, on the thread that used it, with every socket
            # of it (the control socket survives where nbclient's cleanup stopped early): left to
            # the garbage collector, it would be terminated on whichever thread collects it,
            # waiting for ever for a socket nobody closes.
            if getattr(km, "_created_context", False):
                with contextlib.suppress(Exception):
                    km.context.destroy(linger=0)


def _connection_info(km: _KernelManager) -> dict[str, Any]:
    """The kernel's connection info as JSON-ready data, from the manager's memory."""
    info: dict[str, Any] = dict(km.get_connection_info(session=False))
    key = info.get("key")
    if isinstance(key, bytes):
        info["key"] = key.decode("ascii")
    return info


def code_cell_number(nb: NotebookNode, index: int) -> int:
    """Which code cell (from 1, markdown cells not counted) the cell at INDEX is."""
    return sum(1 for cell in nb.cells[: index + 1] if cell.cell_type == "code")


async def _run_cells(client: CappedClient, result: Execution, limits: Limits, seed: int, *,
                     keras: bool = True) -> None:
    """Seed the kernel (Keras too where KERAS), then run every cell in order; stop at a timeout
    or a dead kernel. The limits count from the first cell: the start, the warm-up and the seed
    are not the student's."""
    assert client.kc is not None
    await request(client, seed_code(seed, keras=keras), limits.kernel_start_seconds)
    begin = time.monotonic()
    deadline = begin + limits.total_seconds
    client.timeout_func = lambda cell: max(1, int(min(limits.cell_seconds, deadline - time.monotonic())))
    for index, cell in enumerate(client.nb.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        number = code_cell_number(client.nb, index)
        try:
            await client.async_execute_cell(cell, index)
        except CellTimeoutError:
            total = time.monotonic() >= deadline - 1
            result.status = ExecutionStatus.TIMEOUT
            result.reason = (
                f"the notebook ran past its total limit of {limits.total_seconds:.0f} s in code"
                f" cell {number}; the cells after it did not run" if total else
                f"code cell {number} ran longer than {limits.cell_seconds:.0f} s and was stopped;"
                " the cells after it did not run"
            )
            result.failed_cell = FailedCell(index, cell.source, "Timeout", result.reason, "", number)
            await recover(client)
            break
        except DeadKernelError:
            result.status = ExecutionStatus.KERNEL_DIED
            result.failed_cell = FailedCell(index, cell.source, "KernelDied", "", "", number)
            result.reason = _died_reason(result, client.nb)
            break
        except CellExecutionError as exc:
            result.errors.append(_failed(index, number, cell, exc))
            if result.failed_cell is None:
                result.failed_cell = result.errors[0]
                result.status = ExecutionStatus.CELL_ERROR
                evalue = without_ansi(exc.evalue).strip()[:300]
                result.reason = f"code cell {number} raised {exc.ename}" + (
                    f": {evalue}" if evalue else "")
    result.execution_s = time.monotonic() - begin


async def _set_up(client: CappedClient, result: Execution, prologue: str, timeout: float) -> bool:
    """Run the grader's PROLOGUE in the kernel; on failure mark RESULT kernel_failed."""
    reply = await request(client, prologue, timeout)
    content = reply["content"] if reply else {}
    if content.get("status") == "ok":
        return True
    why = (f"{content.get('ename', '')}: {without_ansi(str(content.get('evalue', '')))[:300]}"
           if reply else f"no answer within {timeout:.0f} s")
    result.status = ExecutionStatus.KERNEL_FAILED
    result.reason = f"the grader could not set up the GPU in the kernel ({why})"
    return False


def _died_reason(result: Execution, nb: NotebookNode) -> str:
    cell = result.failed_cell
    where = f" in code cell {code_cell_number(nb, cell.index)}" if cell else ""
    return (f"the Python kernel died{where} (it crashed, exited, or ran out of memory);"
            " the cells after it did not run")


def _flood_reason(result: Execution, limits: Limits) -> str:
    cell = result.failed_cell
    where = f"code cell {cell.number}" if cell else "the notebook"
    return (f"{where} sent more than {STOP_FACTOR * limits.output_bytes / 1e6:.0f} MB of output"
            " (printed text, displays, display updates, widget messages), and its kernel was"
            " stopped; the cells after it did not run")


def _kill_group(km: _KernelManager) -> None:
    """Kill whatever the kernel left behind in its process group."""
    provisioner = km.provisioner
    pgid = getattr(provisioner, "pgid", None)
    if pgid and pgid != os.getpgid(0):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def notebook_text(nb: NotebookNode, cap: int) -> tuple[str, bool]:
    """NB as stored: when its outputs make it larger than CAP bytes beyond its sources, the
    largest outputs are replaced by a note; say whether any were."""
    text = nbformat.writes(nb)
    budget = cap + sum(len(cell.get("source", "")) for cell in nb.cells) + 100_000
    if len(text) <= budget:
        return text, False
    nb = copy.deepcopy(nb)
    outputs = [(len(json.dumps(o, default=str)), cell, i) for cell in nb.cells
               for i, o in enumerate(cell.get("outputs", []))]
    excess = len(text) - budget
    note = nbformat.v4.new_output("stream", name="stderr",
                                  text="[output removed: the notebook's outputs were over the limit]\n")
    for size, cell, i in sorted(outputs, key=lambda item: -item[0]):
        if excess <= 0:
            break
        cell.outputs[i] = note
        excess -= size
    for cell in nb.cells:
        cell.get("metadata", {}).pop("widgets", None)
    nb.metadata.pop("widgets", None)
    return nbformat.writes(nb), True
