"""A fork server and its client, speaking one JSON object a line.

A fork server imports what its children need once, freezes those objects (gc.freeze), and then
forks a child for each request it reads on stdin, so that every child starts from that same warm
state. It writes {"ready": ...} once warm, then its replies, one line each, on stdout; whatever
else prints goes to stderr; an unreadable request gets {"error": why}; closing its stdin stops
it. The zygote (grader.isolation.zygote_server), the warm checker (grader.checker.server) and
the warm renderer (grader.reports.renderserver) are such servers: what each imports and what its
children do stay in their own modules.

This module imports the standard library only: any layer may use it, and the zygote runs it
under the kernels' interpreter.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import select
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

_CHUNK = 1 << 16


class ServerGone(Exception):
    """The server exited, or was stopped, before it answered."""


class Garbled(ValueError):
    """A line that is not a JSON object."""


def _decode(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        raise Garbled(f"not a JSON object: {line[:200]!r}")
    return message


def encode(message: dict[str, Any]) -> bytes:
    """MESSAGE as one protocol line."""
    return json.dumps(message).encode() + b"\n"


# The server's side -------------------------------------------------------------------------------

class Server:
    """A fork server's ends of its pipes, in the server process: requests on stdin, replies on
    stdout. Made first thing, before the imports: it turns the collector off until `ready`."""

    def __init__(self) -> None:
        gc.disable()  # the imports' objects are frozen before any fork (see `ready`)
        self._reply = os.fdopen(os.dup(1), "w", encoding="utf-8")
        os.dup2(2, 1)  # what the libraries print never lands in the protocol
        self._pending = b""
        self._ended = False

    def send(self, message: dict[str, Any]) -> None:
        """Write one reply line."""
        self._reply.write(json.dumps(message) + "\n")
        self._reply.flush()

    def error(self, exc: BaseException) -> None:
        """Reply that a request failed, and why."""
        self.send({"error": f"{type(exc).__name__}: {exc}"})

    def ready(self, what: Any) -> None:
        """Freeze what the imports made (no child's collections scan, and so copy, those pages;
        see the gc module's docs) and say the server is warm."""
        gc.freeze()
        self.send({"ready": what})

    def next(self, watch: Sequence[int] = ()) -> dict[str, Any] | int | None:
        """The next request; or the first descriptor of WATCH that became readable before one
        came; None once stdin is closed. A garbled line is answered with an error and skipped."""
        while True:
            if b"\n" in self._pending:
                line, self._pending = self._pending.split(b"\n", 1)
                if not line.strip():
                    continue
                try:
                    return _decode(line)
                except Garbled as exc:
                    self.send({"error": f"garbled request: {exc}"})
                    continue
            if self._ended:
                return None
            ready, _, _ = select.select([0, *watch], [], [])
            for fd in watch:
                if fd in ready:
                    return fd
            chunk = os.read(0, _CHUNK)
            if not chunk:
                self._ended = True
            self._pending += chunk

    def requests(self) -> Iterator[dict[str, Any]]:
        """Each request, until stdin is closed."""
        while (request := self.next()) is not None:
            assert isinstance(request, dict)
            yield request

    def fork(self, child: Callable[[], int], *, failed: int = 1) -> int:
        """Fork a process that runs CHILD and exits with what it returns (FAILED, its traceback
        on stderr, where it raises); its pid. The child holds neither end of the protocol."""
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        pid = os.fork()
        if pid:
            return pid
        code = failed
        try:
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
            self._reply.close()
            code = child()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except BaseException:  # noqa: BLE001 - whatever it was, it goes to stderr
            with contextlib.suppress(Exception):
                traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)

    @staticmethod
    def reap() -> None:
        """Wait for the children that have ended, without blocking."""
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    return
            except ChildProcessError:
                return


# The client's side -------------------------------------------------------------------------------

class Client:
    """The grader's ends of one fork server's pipes. Start the server with `stdin` and `stdout`
    as its own, then call `started`. One thread (or one event loop) at a time."""

    def __init__(self, name: str) -> None:
        self.name = name  # as messages say it: "the zygote"
        # Neither end of ours is inherited (PEP 446): only the server's exit closes its replies.
        self.stdin, self._requests = os.pipe()
        self._replies, self.stdout = os.pipe()
        os.set_blocking(self._requests, False)
        self._pending = b""
        self._waiter: asyncio.Future[None] | None = None

    def started(self) -> None:
        """Close the server's ends here, once it holds them."""
        for fd in (self.stdin, self.stdout):
            if fd >= 0:
                os.close(fd)
        self.stdin = self.stdout = -1

    def send(self, message: dict[str, Any], timeout: float | None = None) -> None:
        """Write one request line; ServerGone where the server is gone, TimeoutError where it
        has not read it within TIMEOUT seconds."""
        data = memoryview(encode(message))
        deadline = None if timeout is None else time.monotonic() + timeout
        while data:
            try:
                data = data[self._write(data):]
            except BlockingIOError:
                left = None if deadline is None else deadline - time.monotonic()
                if (left is not None and left <= 0) or not select.select([], [self._requests], [], left)[1]:
                    raise TimeoutError(f"{self.name} did not read a request within {timeout:g} s") from None

    async def asend(self, message: dict[str, Any]) -> None:
        """`send`, waiting in the event loop where the pipe is full."""
        data = memoryview(encode(message))
        while data:
            try:
                data = data[self._write(data):]
            except BlockingIOError:
                await self._ready(self._requests, write=True)

    def _write(self, data: memoryview) -> int:
        if self._requests < 0:
            raise ServerGone(f"{self.name} was stopped")
        try:
            return os.write(self._requests, data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ServerGone(f"{self.name} exited") from exc

    def receive(self, timeout: float | None = None) -> dict[str, Any]:
        """The server's next line; TimeoutError where none came within TIMEOUT seconds,
        ServerGone where it exited, Garbled (the line is then passed) where it is no object."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (line := self._line()) is None:
            left = None if deadline is None else deadline - time.monotonic()
            if (left is not None and left <= 0) or not select.select([self._replies], [], [], left)[0]:
                raise TimeoutError(f"{self.name} did not answer within {timeout:g} s")
            self._read()
        return _decode(line)

    async def areceive(self) -> dict[str, Any]:
        """`receive`, waiting in the event loop; bound it with asyncio.timeout."""
        while (line := self._line()) is None:
            await self._ready(self._replies, write=False)
            self._read()
        return _decode(line)

    def ready(self, timeout: float) -> Any:
        """Wait for the server's ready line and return what it says; ServerGone where it said
        something else (its error, where it gave one)."""
        answer = self.receive(timeout)
        if "ready" not in answer:
            raise ServerGone(f"{self.name} did not start: {answer.get('error', answer)}")
        return answer["ready"]

    def _line(self) -> bytes | None:
        if b"\n" not in self._pending:
            return None
        line, self._pending = self._pending.split(b"\n", 1)
        return line

    def _read(self) -> None:
        if self._replies < 0:
            raise ServerGone(f"{self.name} was stopped")
        chunk = os.read(self._replies, _CHUNK)
        if not chunk:
            raise ServerGone(f"{self.name} exited")
        self._pending += chunk

    async def _ready(self, fd: int, *, write: bool) -> None:
        """Wait until FD can be read (or written), or the client is closed."""
        if fd < 0:
            raise ServerGone(f"{self.name} was stopped")
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        add, remove = (loop.add_writer, loop.remove_writer) if write else (loop.add_reader, loop.remove_reader)

        def wake() -> None:
            if not waiter.done():
                waiter.set_result(None)

        add(fd, wake)
        try:
            await waiter
        finally:
            if fd in (self._requests, self._replies):  # not closed (and its number reused) since
                remove(fd)
            self._waiter = None

    def close_requests(self) -> None:
        """Close the server's stdin: it stops once it has answered what it read."""
        if self._requests >= 0:
            os.close(self._requests)
            self._requests = -1

    def close(self) -> None:
        """Close the grader's ends of the pipes; a pending `areceive` raises ServerGone."""
        self.started()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            loop = waiter.get_loop()
            for fd in (self._requests, self._replies):
                if fd >= 0:
                    loop.remove_reader(fd)
                    loop.remove_writer(fd)
            waiter.set_exception(ServerGone(f"{self.name} was stopped"))
        self.close_requests()
        if self._replies >= 0:
            os.close(self._replies)
            self._replies = -1
