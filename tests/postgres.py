"""A throwaway PostgreSQL server for the tests: initdb and pg_ctl in a temporary folder, reached
on a Unix socket in that folder only (no TCP port), one database per test, stopped at the end."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

INSTALL = "apt-get install postgresql (the README's test command installs it)"


def binaries(debian: Path = Path("/usr/lib/postgresql")) -> Path:
    """The folder of initdb and pg_ctl: Debian's newest DEBIAN/N/bin, or PATH's. Fails the test
    (never skips) where PostgreSQL is not installed."""
    found = sorted(debian.glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    initdb = found[-1] if found else shutil.which("initdb")
    if initdb is None:
        pytest.fail(f"the PostgreSQL tests need a PostgreSQL server, and initdb was not found: {INSTALL}",
                    pytrace=False)
    return Path(initdb).parent


def _as_server_user() -> list[str]:
    """What runs a command as the server's user: initdb refuses root, so root runs the server
    as postgres (made by Debian's package), else nobody."""
    if os.geteuid() != 0:
        return []
    user = "postgres" if shutil.which("id") and subprocess.run(
        ["id", "postgres"], capture_output=True).returncode == 0 else "nobody"
    return ["runuser", "-u", user, "--"]


@dataclass
class Server:
    """A running server: its folder (data, socket and log) and the databases made on it."""

    folder: Path
    bin: Path
    user: str = "grader"
    _names: itertools.count = field(default_factory=itertools.count)

    def url(self, database: str) -> str:
        """The URL of DATABASE, as a user would type it (the grader picks psycopg)."""
        return f"postgresql://{self.user}@/{database}?host={self.folder}"

    def create_database(self) -> str:
        """A new empty database's URL."""
        import psycopg

        name = f"test_{next(self._names)}"
        with psycopg.connect(host=str(self.folder), user=self.user, dbname="postgres",
                             autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


def start() -> Server:
    """Make a cluster in a new temporary folder and start its server."""
    bin_dir = binaries()
    folder = Path(tempfile.mkdtemp(prefix="grader-pg-"))  # short: a socket path has 107 bytes
    prefix = _as_server_user()
    if prefix:
        shutil.chown(folder, user=prefix[2])
    server = Server(folder, bin_dir)
    data = folder / "data"
    run = [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", server.user, "-A", "trust",
           "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"]
    made = subprocess.run(run, capture_output=True, text=True, cwd=folder)
    if made.returncode != 0:
        stop(server)
        pytest.fail(f"initdb failed: {made.stderr[-2000:]}", pytrace=False)
    options = f"-k {folder} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
    started = subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-l",
                              str(folder / "server.log"), "-o", options, "-w", "-t", "60", "start"],
                             capture_output=True, text=True, cwd=folder)
    if started.returncode != 0:
        log = server.log()
        stop(server)
        pytest.fail(f"the PostgreSQL server did not start: {started.stderr[-1000:]} {log}", pytrace=False)
    return server


def stop(server: Server) -> None:
    """Stop the server (if it runs) and remove its folder."""
    data = server.folder / "data"
    if (data / "postmaster.pid").exists():
        subprocess.run([*_as_server_user(), str(server.bin / "pg_ctl"), "-D", str(data), "-m",
                        "immediate", "-w", "stop"], capture_output=True, cwd=server.folder)
    shutil.rmtree(server.folder, ignore_errors=True)
