"""Small synthetic datasets, a registry describing them, and a loopback HTTP server for tests."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from grader.data.digest import tree_digest

TINY = b"tiny dataset\n" * 1000
MEMBERS = {"data/a.txt": b"alpha\n", "data/b.txt": b"beta\n" * 50, "data/sub/c.txt": b"gamma\n"}
# Files in the archives that the registry does not keep (and one that tries to escape).
JUNK = {"README.md": b"not kept\n", "data/skip.bin": b"\0\1"}


def tiny_zip(members: dict[str, bytes] = MEMBERS) -> bytes:
    """A zip with root folder tiny/ holding MEMBERS and JUNK, plus an escaping entry."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for rel, data in {**members, **JUNK}.items():
            archive.writestr(f"tiny/{rel}", data)
        archive.writestr("../evil.txt", b"outside")
    return buffer.getvalue()


def tiny_tar(members: dict[str, bytes] = MEMBERS) -> bytes:
    """A tar.gz of the same files in another order, with a symlink among them."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for rel, data in reversed([*members.items(), *JUNK.items()]):
            info = tarfile.TarInfo(f"tiny/{rel}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("tiny/data/link.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    return buffer.getvalue()


def registry_text(base_url: str = "http://127.0.0.1:9") -> str:
    """A registry describing TINY (file), tiny.zip and tiny.tar.gz (archives) and a generated set."""
    digest = tree_digest({rel: hashlib.sha256(data).hexdigest() for rel, data in MEMBERS.items()})
    archive = f"""kind = "archive"
root = "tiny"
members = ["data/*.txt", "data/sub/*.txt"]
content_files = {len(MEMBERS)}
content_sha256 = "{digest}"
terms = "test data"
citation = "none"
"""
    return f"""[tiny]
title = "a small file"
kind = "file"
url = "{base_url}/tiny.bin"
file = "tiny.bin"
bytes = {len(TINY)}
sha256 = "{hashlib.sha256(TINY).hexdigest()}"
md5 = "{hashlib.md5(TINY).hexdigest()}"
local = ["tiny/tiny.bin"]
terms = "test data"
citation = "none"

[tinyzip]
title = "a small zip"
url = "{base_url}/tiny.zip"
file = "tiny.zip"
local = ["zips/tiny.zip"]
{archive}
[tinytar]
title = "the same files as a tar.gz"
url = "{base_url}/tiny.tar.gz"
file = "tiny.tar.gz"
{archive}
[made]
title = "generated"
kind = "generated"
recipe = "made"
terms = "test data"
citation = "none"
"""


def write_sources(folder: Path) -> Path:
    """Lay the three datasets out in FOLDER as `grader data import` expects; return FOLDER."""
    (folder / "tiny").mkdir(parents=True)
    (folder / "tiny" / "tiny.bin").write_bytes(TINY)
    (folder / "zips").mkdir()
    (folder / "zips" / "tiny.zip").write_bytes(tiny_zip())
    (folder / "tiny.tar.gz").write_bytes(tiny_tar())
    return folder


@dataclass
class Server:
    """What the loopback server serves: path -> bytes, and how each mode misbehaves."""

    files: dict[str, bytes]
    url: str = ""
    hits: dict[str, int] = field(default_factory=dict)
    flaky_failures: int = 1  # /flaky/ answers 500 this many times, then the file
    slow_seconds: float = 1.0


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    """A request handler whose first path part picks a behaviour: good, corrupt, truncated,
    error, flaky, slow, cut-once."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            _, mode, name = self.path.split("/", 2)
            server.hits[self.path] = count = server.hits.get(self.path, 0) + 1
            data = server.files.get(name)
            if data is None:
                self.send_error(404)
                return
            if mode == "error" or (mode == "flaky" and count <= server.flaky_failures):
                self.send_error(500)
                return
            if mode == "slow":
                time.sleep(server.slow_seconds)
            if mode == "corrupt":
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if mode == "truncated" or (mode == "cut-once" and count == 1):
                self.wfile.write(data[: len(data) // 2])
                self.close_connection = True
                return
            self.wfile.write(data)

    return Handler


class QuietServer(ThreadingHTTPServer):
    """A threaded server that ignores clients hanging up (the slow case's client gives up)."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


@contextmanager
def loopback(files: dict[str, bytes]) -> Iterator[Server]:
    """Serve FILES on 127.0.0.1 from a thread; yield the Server with its base URL."""
    server = Server(files)
    httpd = QuietServer(("127.0.0.1", 0), _handler(server))
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
