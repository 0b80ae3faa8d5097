"""The warm checker: one trusted process per worker slot that imports the check libraries once,
then forks a fresh child to run each submission's checks (grader.grading.warmcheck.CheckerSlot
drives it).

Nothing of one student reaches the next: each child starts from the state the server had right
after its imports (it never imports a check file, creates a Keras object or runs a TensorFlow op
itself), and is gone when its checks end, with its modules, globals, monkeypatches and temporary
files. It imports only what checks use, never the gradebook, nbclient or Jinja2. It is started
by exec as an interpreter of its own, never forked from the kernels' zygote
(grader.isolation.zygote): its memory layout is not the one every student's kernel shares.

A fork server (grader.forkserver). The protocol, one JSON object a line. The grader writes on stdin:
  {"begin": {"args": [...pytest's...], "cwd": ..., "log": ...}}  fork the child; it waits for
  {"go": {"connection": ..., "why_no_kernel": ...}}              what the plugin reads (--grader-wait)
  {"kill": true}                                                 kill the child
and closing stdin stops the server. The server writes on stdout {"ready": [modules imported]}
once, {"begun": pid} after each fork, {"exit": code} when the child ends (-N: killed by signal N).
Everything else anything prints goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import shutil
import signal
import sys
import tempfile
from typing import Any

from grader.forkserver import Server

ALWAYS = ("numpy", "pytest", "zmq", "jupyter_client", "grader.checker.plugin", "grader.checker.checks",
          "grader.checks")
# What a check may import on top, warmed where the assignment's checks use it (see
# grader.grading.warmcheck.warm_imports); a child imports anything else it needs by itself.
OPTIONAL = ("matplotlib.pyplot", "keras", "tensorflow")
# What each child would import again on its way, modules only: pytest's own plugins (a Config
# made once imports them), and those that a saved figure and a Keras predict import on first use.
_ON_THE_WAY = {
    "matplotlib.pyplot": ("matplotlib.backends.backend_agg", "PIL.PngImagePlugin"),
    "keras": tuple(f"tensorflow.python.data.ops.{op}" for op in (
        "concatenate_op", "flat_map_op", "from_tensors_op", "range_op", "zip_op")),
}


def warm_up(names: list[str]) -> list[str]:
    """Import ALWAYS and NAMES (those installed), and what a child would import on its way with
    them; return what was imported. Only modules: no Keras object, no TensorFlow op."""
    done = []
    for name in (*ALWAYS, *names):
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        done.append(name)
        for module in _ON_THE_WAY.get(name, ()):
            with contextlib.suppress(ImportError):
                importlib.import_module(module)
    with contextlib.suppress(Exception):  # a Config imports pytest's plugins and entry points
        from _pytest.config import get_config

        get_config()
    return done


class _Checker:
    """The warm checker's state: its fork server and the child now running, if any."""

    def __init__(self, server: Server):
        self.server = server
        self.child = 0
        self.pidfd = -1
        self.go = -1  # the write end of the child's stdin
        self.tmp = ""  # the child's temporary folder, removed after it

    def handle(self, message: dict[str, Any]) -> None:
        if "begin" in message:
            self.begin(message["begin"])
        elif "go" in message and self.go >= 0:
            with contextlib.suppress(OSError):
                os.write(self.go, json.dumps(message["go"]).encode() + b"\n")
            os.close(self.go)
            self.go = -1
        elif "kill" in message:
            self.kill()

    def begin(self, job: dict[str, Any]) -> None:
        """Fork the child that runs pytest with JOB's arguments once it is told to go."""
        if self.child:
            self.kill()
            self.reap()
        self.tmp = tempfile.mkdtemp(prefix="checks-")
        read, write = os.pipe()

        def child() -> int:
            os.close(write)
            return _child(read, job, self.tmp)

        pid = self.server.fork(child, failed=3)
        os.close(read)
        self.child, self.go = pid, write
        self.pidfd = os.pidfd_open(pid)
        self.server.send({"begun": pid})

    def kill(self) -> None:
        """Kill the child and whatever it started (its own process group)."""
        if self.child:
            with contextlib.suppress(OSError):
                os.killpg(self.child, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.kill(self.child, signal.SIGKILL)

    def reap(self) -> None:
        """Wait for the child, report how it ended, remove what it left."""
        _, status = os.waitpid(self.child, 0)
        with contextlib.suppress(OSError):
            os.killpg(self.child, signal.SIGKILL)  # anything it started and left running
        os.close(self.pidfd)
        if self.go >= 0:
            os.close(self.go)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.child, self.pidfd, self.go = 0, -1, -1
        self.server.send({"exit": os.waitstatus_to_exitcode(status)})

    def serve(self) -> None:
        """Answer the grader's lines until it closes stdin."""
        while True:
            got = self.server.next([self.pidfd] if self.child else [])
            if got is None:
                self.kill()
                if self.child:
                    self.reap()
                return
            if isinstance(got, int):  # the child ended
                self.reap()
            else:
                self.handle(got)


def _child(go: int, job: dict[str, Any], tmp: str) -> int:
    """Run pytest as `python -m pytest` would, in this fresh fork; its exit code."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # die with the server
    gc.enable()  # what the checks make is collected; the server's imports stay frozen
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.dup2(go, 0)
    os.close(go)
    log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # the go line
    os.environ["TMPDIR"] = tempfile.tempdir = tmp  # removed with the child
    os.chdir(job["cwd"])
    import pytest

    sys.argv = ["pytest", *job["args"]]
    return int(pytest.main(job["args"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grader.checker.server", description=__doc__)
    parser.add_argument("--import", dest="imports", action="append", default=[],
                        help="a library to import once, on top of those every check needs")
    options = parser.parse_args(argv)
    # The imports are made with the collector off, then frozen (Server.ready): no child scans
    # (and so copies) the pages of millions of objects that TensorFlow's import makes, nor
    # spends a fraction of a second of its checks doing so.
    server = Server()
    server.ready(warm_up(options.imports))
    _Checker(server).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
