"""Talking to a student's kernel: jupyter_client's client, ready as soon as the kernel answers;
nbclient's, within the output cap; silent requests and their replies, interrupts, recovering
after a timeout, and asking which GPUs it used."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_core.utils import ensure_async
from nbclient import NotebookClient
from nbformat import NotebookNode
from traitlets import Type

from grader.grading.kernelcode import GPUS_USED

# What the grader takes of a kernel's messages: it reads at most IOPUB_QUEUE of them ahead (the
# rest wait in the kernel's own memory, which its limits cap), and past STOP_FACTOR times the
# output cap of bytes received it stops the kernel (kept outputs stop at the cap itself; an
# honest notebook, live plots redrawn each epoch included, stays far below).
# A single message over MAX_MESSAGE is refused by ZeroMQ, which drops the connection (the kernel
# then misses that output, and maybe the end of its cell: a timeout of the student's making).
# What the grader holds of a flood is thus at most about IOPUB_QUEUE messages of MAX_MESSAGE.
IOPUB_QUEUE = 4
STOP_FACTOR = 100
MAX_MESSAGE = 200_000_000


@dataclass
class Meter:
    """The bytes a kernel's messages made, counted as they arrive, before any is unpacked."""

    stop_at: float = float("inf")  # bytes past which the kernel is stopped
    used: int = 0
    stopped: bool = False  # past STOP_AT: nothing more is read, and the kernel is being stopped
    malformed: int = 0  # messages passed over as no well-formed message
    on_stop: Callable[[], None] | None = None

    def charge(self, size: int) -> None:
        self.used += size
        if self.used > self.stop_at and not self.stopped:
            self.stopped = True
            if self.on_stop is not None:
                self.on_stop()


class GuardedChannel(AsyncZMQSocketChannel):
    """A channel that hands on well-formed messages only: each is charged to its Meter by the
    bytes it came in, before it is unpacked; past the meter's limit none is unpacked any more;
    one that is not a message, or not of the shape its type has (see `well_formed`), is passed
    over. The student's kernel sends these: a malformed one is the submission's, never the
    grader's failure."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.meter = Meter()

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:  # type: ignore[override]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not await self.socket.poll(None if left is None else int(left * 1000)):
                raise queue.Empty
            frames = await self.socket.recv_multipart(copy=False)
            size = sum(len(frame.buffer) for frame in frames)
            self.meter.charge(size)
            if self.meter.stopped:
                continue
            try:
                _, parts = self.session.feed_identities(frames, copy=False)
                msg = self.session.deserialize(parts, copy=False)
            except Exception:  # noqa: BLE001 - any frames that are no message are passed over
                msg = None
            if msg is not None and well_formed(msg):
                msg["grader_bytes"] = size
                return msg
            self.meter.malformed += 1


class KernelClient(AsyncKernelClient):
    """jupyter_client's client, ready as soon as the kernel answers: its wait_for_ready ends by
    waiting until iopub has been quiet for 0.2 s, a pause on every kernel start (the path of a
    batch of short notebooks); here iopub is only emptied of what has come. What comes later is
    no cell's: nbclient keeps only messages whose parent is the request it sent. Its iopub and
    shell channels hand on well-formed messages only (GuardedChannel)."""

    iopub_channel_class = Type(GuardedChannel)  # type: ignore[arg-type]
    shell_channel_class = Type(GuardedChannel)  # type: ignore[arg-type]

    def connect_iopub(self, identity: bytes | None = None) -> Any:
        """The iopub socket, reading at most IOPUB_QUEUE messages ahead of the grader, none
        over MAX_MESSAGE."""
        options = {zmq.RCVHWM: IOPUB_QUEUE, zmq.MAXMSGSIZE: MAX_MESSAGE}
        for option, value in options.items():  # defaults for the sockets made now
            self.context.setsockopt(option, value)
        try:
            return super().connect_iopub(identity=identity)
        finally:
            for option in options:
                self.context.sockopts.pop(option, None)

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


# The content fields each message type must have, with their types; a message without them is
# passed over (nbclient and nbformat would raise on it). execution_count, where a message has
# one, must be a whole number or None.
_TEXT, _DICT, _LIST = (str,), (dict,), (list,)
_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "status": {"execution_state": _TEXT},
    "stream": {"name": _TEXT, "text": _TEXT},
    "display_data": {"data": _DICT, "metadata": _DICT},
    "update_display_data": {"data": _DICT, "metadata": _DICT},
    "execute_result": {"data": _DICT, "metadata": _DICT},
    "execute_input": {"code": _TEXT},
    "error": {"ename": _TEXT, "evalue": _TEXT, "traceback": _LIST},
    "clear_output": {},
    "comm_open": {"comm_id": _TEXT, "data": _DICT},
    "comm_msg": {"comm_id": _TEXT, "data": _DICT},
    "comm_close": {"comm_id": _TEXT},
    "execute_reply": {"status": _TEXT},
}


def well_formed(msg: dict[str, Any]) -> bool:
    """Whether MSG has the shape its type has in the Jupyter protocol, as far as the grader,
    nbclient and nbformat read it: a header, parent header and metadata that are objects, and
    the content fields of `_FIELDS` with their types. Types not listed need only an object as
    content."""
    if not all(isinstance(msg.get(k), dict) for k in ("header", "parent_header", "metadata",
                                                       "content")):
        return False
    content, kind = msg["content"], msg.get("msg_type")
    if not isinstance(kind, str) or not isinstance(msg["parent_header"].get("msg_id", ""), str):
        return False
    count = content.get("execution_count")
    if count is not None and (type(count) is not int or count < 0):
        return False
    transient = content.get("transient")
    if transient is not None and not (isinstance(transient, dict) and isinstance(
            transient.get("display_id", ""), (str, type(None)))):
        return False
    if not all(isinstance(content.get(name), types) for name, types in _FIELDS.get(kind, {}).items()):
        return False
    if kind in ("display_data", "update_display_data", "execute_result") and not all(
            isinstance(k, str) and isinstance(v, (str, list, dict)) for k, v in content.get("data", {}).items()):
        return False
    return kind != "error" or all(isinstance(line, str) for line in content["traceback"])


class CappedClient(NotebookClient):
    """nbclient's client, keeping no more output than the limit allows: every message on iopub
    (outputs, display updates, clear_output, comms) is charged against the cap by the bytes it
    came in, before it is unpacked (GuardedChannel); a display update or a display with an id
    is charged again for each output it rewrites. Comms (widgets) are never kept. Past the cap,
    outputs are dropped; past STOP_FACTOR times the cap, the kernel is stopped."""

    output_cap: int = 0
    output_truncated: bool = False
    output_stopped: bool = False  # the kernel was stopped for the output it sent
    stopping: asyncio.Future[Any] | None = None  # the stop, under way

    @property
    def meter(self) -> Meter:
        """The iopub channel's meter, its limit and its stop set for this client."""
        assert self.kc is not None
        meter: Meter = self.kc.iopub_channel.meter
        if meter.on_stop is None:
            meter.stop_at = STOP_FACTOR * self.output_cap
            meter.on_stop = self._stop_kernel
        return meter

    @property
    def output_used(self) -> int:
        return self.meter.used

    def _stop_kernel(self) -> None:
        """Past STOP_FACTOR times the cap: the kernel is stopped (nbclient then sees it dead)."""
        self.output_stopped = self.output_truncated = True
        if self.km is not None:
            self.stopping = asyncio.ensure_future(ensure_async(self.km.shutdown_kernel(now=True)))

    def process_message(self, msg: dict[str, Any], cell: NotebookNode,
                        cell_index: int) -> NotebookNode | None:
        msg_type = msg.get("msg_type", "")
        meter = self.meter
        if msg_type == "status":  # idle ends the cell; never dropped
            return super().process_message(msg, cell, cell_index)
        display_id = (msg["content"].get("transient") or {}).get("display_id")
        if display_id and msg_type in ("display_data", "update_display_data", "execute_result"):
            rewrites = sum(len(at) for at in self._display_id_map.get(display_id, {}).values())
            if msg_type == "update_display_data":  # its own bytes are charged once already
                rewrites -= 1
            meter.charge(max(0, rewrites) * msg.get("grader_bytes", _size(msg)))
        if msg_type.startswith("comm"):
            return None
        if meter.used > self.output_cap or meter.stopped:
            self.output_truncated = True
            return None
        return super().process_message(msg, cell, cell_index)


def _size(msg: dict[str, Any]) -> int:
    """What a message that did not come through a GuardedChannel costs: its content and buffers."""
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
