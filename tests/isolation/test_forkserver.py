"""The fork server and its client (grader.forkserver), with a small echo server: this module run
as `python -m tests.isolation.test_forkserver`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from grader.forkserver import Client, Garbled, Server, ServerGone

REPO = Path(__file__).resolve().parents[2]


def serve() -> None:
    """The test's fork server: {"echo": x} answers x; {"fork": code} forks a child that exits
    with CODE; {"say": text} writes TEXT raw on the reply channel (a garbled reply)."""
    server = Server()
    print("what a library prints")  # goes to stderr, never into the protocol
    server.ready({"pid": os.getpid()})
    for request in server.requests():
        server.reap()
        if "echo" in request:
            server.send({"echo": request["echo"]})
        elif "fork" in request:
            server.send({"forked": server.fork(lambda code=int(request["fork"]): code)})
        elif "say" in request:
            server._reply.write(request["say"])
            server._reply.flush()
        else:
            server.error(KeyError(sorted(request)))


@pytest.fixture
def server() -> Iterator[tuple[Client, subprocess.Popen[bytes]]]:
    client = Client("the echo server")
    process = subprocess.Popen([sys.executable, "-m", "tests.isolation.test_forkserver"], cwd=REPO,
                               stdin=client.stdin, stdout=client.stdout, stderr=subprocess.PIPE)
    client.started()
    try:
        yield client, process
    finally:
        client.close()
        process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()


def zombie_or_gone(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_the_handshake_says_ready_and_a_request_is_answered(server):
    client, process = server
    assert client.ready(60) == {"pid": process.pid}
    client.send({"echo": [1, "two"]})
    assert client.receive(10) == {"echo": [1, "two"]}


def test_a_forked_child_exits_with_its_code_and_is_reaped(server):
    client, process = server
    client.ready(60)
    client.send({"fork": 7})
    child = client.receive(10)["forked"]
    assert child != process.pid
    deadline = time.monotonic() + 10
    while zombie_or_gone(child) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert zombie_or_gone(child) == "Z"  # ended, not reaped yet
    client.send({"echo": 1})  # the server reaps before each request
    assert client.receive(10) == {"echo": 1}
    assert zombie_or_gone(child) == "gone"


def test_a_dead_server_is_detected_with_a_clear_error(server):
    client, process = server
    client.ready(60)
    process.send_signal(signal.SIGKILL)
    process.wait()
    with pytest.raises(ServerGone, match="the echo server exited"):
        client.receive(10)
    with pytest.raises(ServerGone, match="the echo server exited"):
        client.send({"echo": 1})


def test_no_answer_in_time_is_a_timeout(server):
    client, _ = server
    client.ready(60)
    began = time.monotonic()
    with pytest.raises(TimeoutError, match="did not answer within 0.2 s"):
        client.receive(0.2)
    assert time.monotonic() - began < 5


def test_a_garbled_request_gets_an_error_and_a_garbled_reply_is_passed_over(server):
    client, _ = server
    client.ready(60)
    os.write(client._requests, b"{not json\n")
    assert "garbled request" in client.receive(10)["error"]
    client.send({"say": "[1, 2]\nnot json either\n"})
    with pytest.raises(Garbled):
        client.receive(10)
    with pytest.raises(Garbled):
        client.receive(10)
    client.send({"echo": "still here"})
    assert client.receive(10) == {"echo": "still here"}


def test_a_server_that_fails_before_ready_says_why():
    client = Client("the failing server")
    process = subprocess.Popen([sys.executable, "-c", "print('{\"error\": \"no numpy\"}')"],
                               stdin=client.stdin, stdout=client.stdout)
    client.started()
    try:
        with pytest.raises(ServerGone, match="the failing server did not start: no numpy"):
            client.ready(60)
    finally:
        client.close()
        process.wait()


def test_the_async_client_is_answered_and_a_close_ends_its_wait(server):
    client, _ = server

    async def talk() -> None:
        async with asyncio.timeout(60):
            assert "ready" in await client.areceive()
        await client.asend({"echo": "x" * 200_000})  # more than a pipe holds at once
        async with asyncio.timeout(10):
            assert await client.areceive() == {"echo": "x" * 200_000}
        waiting = asyncio.ensure_future(client.areceive())
        await asyncio.sleep(0.05)
        client.close()
        with pytest.raises(ServerGone, match="was stopped"):
            await waiting

    asyncio.run(talk())


if __name__ == "__main__":
    serve()
