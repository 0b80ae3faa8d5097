"""Talking to a student's kernel: jupyter_client's client, ready as soon as the kernel answers;
nbclient's, within the output cap; silent requests and their replies, interrupts, recovering
after a timeout, and asking which GPUs it used."""

from __future__ import annotations

import ast
import contextlib
import json
import queue
import time
from typing import Any

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_core.utils import ensure_async
from nbclient import NotebookClient
from nbformat import NotebookNode

from grader.grading.kernelcode import GPUS_USED


class KernelClient(AsyncKernelClient):
    """jupyter_client's client, ready as soon as the kernel answers: its wait_for_ready ends by
    waiting until iopub has been quiet for 0.2 s, a pause on every kernel start (the path of a
    batch of short notebooks); here iopub is only emptied of what has come. What comes later is
    no cell's: nbclient keeps only messages whose parent is the request it sent."""

    async def wait_for_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
        while True:  # as jupyter_client's: a kernel_info reply, then a message on iopub
            self.kernel_info()
            try:
                reply = await self.shell_channel.get_msg(timeout=1)
            except queue.Empty:
                pass
            else:
                if reply["msg_type"] == "kernel_info_reply":
                    try:
                        await self.iopub_channel.get_msg(timeout=0.2)
                    except queue.Empty:
                        pass
                    else:
                        self._handle_kernel_info_reply(reply)
                        break
            if not await self._async_is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout:.0f} seconds")
        while True:
            try:
                await self.iopub_channel.get_msg(timeout=0)
            except queue.Empty:
                break


class CappedClient(NotebookClient):
    """nbclient's client, keeping no more output than the limit allows: every iopub message
    (outputs, display updates, clear_output, comms) is charged against the cap; comms (widgets)
    are never kept."""

    output_cap: int = 0
    output_used: int = 0
    output_truncated: bool = False

    def process_message(self, msg: dict[str, Any], cell: NotebookNode,
                        cell_index: int) -> NotebookNode | None:
        msg_type = msg.get("msg_type", "")
        if msg_type == "status":  # idle ends the cell; never dropped
            return super().process_message(msg, cell, cell_index)
        self.output_used += _size(msg)
        if msg_type.startswith("comm"):
            return None
        if self.output_used > self.output_cap:
            self.output_truncated = True
            return None
        return super().process_message(msg, cell, cell_index)


def _size(msg: dict[str, Any]) -> int:
    """What one message costs against the output cap: its content, metadata and buffers."""
    buffers = sum(len(b) for b in msg.get("buffers") or () if hasattr(b, "__len__"))
    return len(json.dumps(msg.get("content", {}), default=str)) + buffers + 64


async def recover(client: CappedClient) -> None:
    """After a timeout, interrupt the cell; a kernel that will not stop is killed."""
    assert client.km is not None
    with contextlib.suppress(Exception):
        await ensure_async(client.km.interrupt_kernel())
    if not await answers(client):
        with contextlib.suppress(Exception):
            await ensure_async(client.km.shutdown_kernel(now=True))


async def answers(client: CappedClient, timeout: float = 10.0) -> bool:
    """Whether the kernel is alive and runs a trivial request."""
    if client.kc is None or client.km is None or not await ensure_async(client.km.is_alive()):
        return False
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        reply = await request(client, "", left)
        if reply is None:
            return False
        if reply["content"].get("status") != "aborted":  # aborted: queued behind an interrupt
            return reply["content"].get("status") == "ok"
    return False


async def gpus_used(client: CappedClient) -> list[str] | None:
    """The GPUs TensorFlow or JAX uses in the kernel, [] for none, None if it imported neither."""
    assert client.kc is not None
    msg_id = client.kc.execute("", silent=True, store_history=False, allow_stdin=False,
                               user_expressions={"gpus": GPUS_USED})
    msg = await shell_reply(client, msg_id, 20)
    if msg is None:
        return None
    value = msg["content"].get("user_expressions", {}).get("gpus", {})
    text = value.get("data", {}).get("text/plain", "None") if value.get("status") == "ok" else "None"
    try:
        found = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return [str(g)[:100] for g in found][:16] if isinstance(found, list) else None


async def request(client: CappedClient, code: str, timeout: float) -> dict[str, Any] | None:
    """Run CODE silently and return its execute_reply, or None if none came in time."""
    assert client.kc is not None
    msg_id = client.kc.execute(code, silent=True, store_history=False, allow_stdin=False)
    return await shell_reply(client, msg_id, timeout)


async def shell_reply(client: CappedClient, msg_id: str, timeout: float) -> dict[str, Any] | None:
    """The shell's reply to MSG_ID, or None if none came within TIMEOUT seconds. Replies to
    other requests are passed over, and so is a message that is not a message: where an interrupt
    (a cell's timeout) reaches the kernel while it sends a reply, the frames of that reply and
    of the next run together, and their signature does not hold (jupyter_client raises
    ValueError); what they held is lost, as a reply of a kernel that did not answer."""
    assert client.kc is not None
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await client.kc.shell_channel.get_msg(timeout=left)
        except queue.Empty:
            return None
        except ValueError:  # Invalid Signature, Unsigned Message, a malformed message
            continue
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg
    return None
