"""The warm renderer: one trusted process that imports nbconvert (and compiles its templates)
once, then forks a child to render each student's executed notebook as a page
(grader.reports.renderer.Renderer drives it).

A notebook is student data that nbconvert may take minutes or gigabytes over: each child limits
its own address space and CPU time before it reads the notebook, and is killed when its wall
time is up; a page that fails ends only its own child. The server runs no student code.

A fork server (grader.forkserver). The protocol, one JSON object a line. The grader writes on stdin
  {"page": path, "notebook": the notebook's JSON text, "memory_mb": N, "seconds": N}
and the server answers on stdout {"returncode": code, "stderr": the child's last words,
"timed_out": bool} (code -N: killed by signal N), or {"error": why} where it could not take the
request. It writes {"ready": true} once warm; closing stdin stops it.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import sys
import time
from pathlib import Path
from typing import Any

from grader.forkserver import Server

_STDERR_KEPT = 64 * 1024


def warm_up() -> None:
    """Import nbconvert and render a small notebook once, so that its templates are compiled."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    from grader.reports.renderer import notebook_html

    cell = new_code_cell("print(1)\n1", outputs=[
        new_output("stream", name="stdout", text="1\n"),
        new_output("execute_result", data={"text/plain": "1"}, execution_count=1)])
    notebook_html(nbformat.writes(new_notebook(cells=[new_markdown_cell("# A *page*"), cell])))


def render(server: Server, request: dict[str, Any]) -> dict[str, Any]:
    """Render REQUEST's notebook to its page in a child of its own, within its limits."""
    seconds = max(1, int(request["seconds"]))
    memory_mb = int(request["memory_mb"])
    read, write = os.pipe()

    def child() -> int:  # nothing of it reaches the server but its exit status and stderr
        gc.enable()  # the server's imports stay frozen (see Server.ready)
        os.close(read)
        os.dup2(write, 2)
        from grader.reports.renderer import limit_renderer, notebook_html, write_whole

        limit_renderer(memory_mb, seconds)
        write_whole(Path(request["page"]), notebook_html(request["notebook"]))
        return 0

    pid = server.fork(child, failed=1)
    os.close(write)
    said, timed_out = _said_until_exit(read, time.monotonic() + seconds)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return {"returncode": code, "stderr": said.decode("utf-8", "replace"), "timed_out": timed_out}


def _said_until_exit(fd: int, deadline: float) -> tuple[bytes, bool]:
    """What the child writes on FD until it exits (the last of it), and whether DEADLINE came
    first."""
    said = b""
    try:
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return said, False
            said = (said + chunk)[-_STDERR_KEPT:]
        return said, True
    finally:
        os.close(fd)


def main() -> int:
    """Warm up, then render each request read on stdin until it closes."""
    server = Server()
    warm_up()
    server.ready(True)
    for request in server.requests():
        try:
            answer = render(server, request)
        except Exception as exc:  # noqa: BLE001 - a request it cannot read; the grader renders cold
            server.error(exc)
        else:
            server.send(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
